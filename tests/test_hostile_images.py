"""Hostile images: bombs, huge or rotated files, non-finite float pixels, images too small to use.

Each group is a parametrised test over a list of cases (``REDUCED_MODES``, ``ORIENTATIONS``,
``NON_FINITE``, ``TOO_SMALL``), so a new hostile image is one line in a list.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from core import images
from core.checkpoints import CheckpointMeta
from core.images import ImageError, open_image, to_rgb
from core.inference import preprocess

NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------- images

def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in a few dozen bytes (its pixel data is empty)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height, match", [(8000, 8000, "too large"), (100_000, 100_000, "decompression bomb|too large")])
def test_bomb_headers_are_refused_before_decoding(width, height, match):
    with pytest.raises(ImageError, match=match):
        open_image(png_header(width, height))


def test_large_sixteen_bit_png_is_reduced_while_decoding(monkeypatch):
    arr = np.zeros((7000, 7000), dtype=np.uint16)
    arr[:, 3500:] = 4000
    data = encode(Image.fromarray(arr))
    del arr
    converted = []
    original_convert = Image.Image.convert
    monkeypatch.setattr(Image.Image, "convert", lambda self, *a, **k: (converted.append(self.size),
                                                                       original_convert(self, *a, **k))[1])
    img = open_image(data)
    assert max(img.size) <= images.MAX_SIDE and img.size[0] == img.size[1]
    assert img.mode.startswith("I")
    rgb = np.asarray(to_rgb(img))
    assert rgb.min() == 0 and rgb.max() == 255
    assert all(max(size) <= images.MAX_SIDE for size in converted), converted


# (mode, format) pairs reduced below MAX_SIDE (patched to 64) without changing mode.
REDUCED_MODES = [("L", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("1", "PNG"),
                 ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF"), ("CMYK", "TIFF"), ("RGB", "JPEG"), ("L", "JPEG"),
                 ("CMYK", "JPEG"), ("RGB", "WEBP"), ("RGB", "BMP")]


@pytest.mark.parametrize("mode, fmt", REDUCED_MODES, ids=lambda v: str(v))
def test_large_images_are_reduced_in_their_own_mode(monkeypatch, mode, fmt):
    monkeypatch.setattr(images, "MAX_SIDE", 64)
    arr = (np.add.outer(np.arange(200), np.arange(300)) % 256).astype(np.uint8)
    img = Image.fromarray(arr, "L").convert(mode)
    out = open_image(encode(img, fmt))
    assert max(out.size) <= 64 and out.size[0] > out.size[1]
    assert out.mode == img.mode or fmt == "JPEG"
    assert to_rgb(out).mode == "RGB"


def test_jpeg_is_reduced_during_decoding_not_after(monkeypatch):
    monkeypatch.setattr(images, "MAX_SIDE", 256)
    monkeypatch.setattr(images, "MAX_DECODED_BYTES", 2**20)  # a full 1024x1024 RGB decode needs 4 MiB
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8))
    assert max(open_image(encode(img, "JPEG")).size) <= 256  # draft mode decodes at 1/4
    with pytest.raises(ImageError, match="MiB"):
        open_image(encode(img, "PNG"))  # PNG has no reduced decode: refused


# EXIF orientation -> whether width and height swap.
ORIENTATIONS = [(1, False), (3, False), (6, True), (8, True), (5, True)]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation, swapped", ORIENTATIONS)
def test_exif_orientation_is_applied(fmt, orientation, swapped):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = open_image(encode(img, fmt, exif=exif.tobytes()))
    assert out.size == ((20, 40) if swapped else (40, 20))
    assert out.getexif().get(0x0112, 1) == 1
    if orientation == 3:  # rotated 180 degrees: the white half is now on the right
        assert np.asarray(out.convert("L"))[10, 35] > 200 and np.asarray(out.convert("L"))[10, 5] < 50


def test_exif_orientation_survives_reduction(monkeypatch):
    monkeypatch.setattr(images, "MAX_SIDE", 64)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = open_image(encode(Image.new("RGB", (400, 200), (9, 9, 9)), "JPEG", exif=exif.tobytes()))
    assert out.size[0] < out.size[1] <= 64


# A float image with one bad pixel at (3, 5).
NON_FINITE = [NAN, INF, -INF]


@pytest.mark.parametrize("bad", NON_FINITE, ids=str)
def test_float_image_with_a_non_finite_pixel_is_not_black(bad):
    arr = np.linspace(0.0, 1000.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    arr[3, 5] = bad
    img = open_image(encode(Image.fromarray(arr, "F"), "TIFF"))
    rgb = np.asarray(to_rgb(img))[..., 0]
    finite = np.isfinite(arr)
    assert rgb[finite].min() == 0 and rgb[finite].max() == 255
    assert rgb[3, 5] == 0
    assert rgb[31, 31] == 255


@pytest.mark.parametrize("fill", [NAN, INF, -INF])
def test_float_image_without_a_finite_pixel_is_refused(fill):
    img = Image.fromarray(np.full((16, 16), fill, dtype=np.float32), "F")
    with pytest.raises(ImageError, match="finite"):
        to_rgb(img)


# (width, height) below the one minimum side.
TOO_SMALL = [(1, 1), (7, 7), (7, 100), (100, 7), (0, 0)]


@pytest.mark.parametrize("size", TOO_SMALL, ids=str)
def test_tiny_images_are_refused_by_predict_and_upload_alike(size):
    meta = CheckpointMeta(arch="student", num_classes=4, classes=list("abcd"), input_size=32, mean=[0.5] * 3,
                          std=[0.25] * 3)
    img = Image.new("L", size, 50)
    with pytest.raises(ImageError, match="too small"):
        preprocess(meta, [img])
    if min(size) > 0:  # PNG cannot hold an empty image
        with pytest.raises(ImageError, match="too small"):
            open_image(encode(img))


def test_one_minimum_side_constant(monkeypatch):
    meta = CheckpointMeta(arch="student", num_classes=4, classes=list("abcd"), input_size=32, mean=[0.5] * 3,
                          std=[0.25] * 3)
    img = Image.new("L", (16, 16), 50)
    assert preprocess(meta, [img]).shape == (1, 3, 32, 32) and open_image(encode(img)).size == (16, 16)
    monkeypatch.setattr(images, "MIN_SIDE", 20)
    with pytest.raises(ImageError, match="too small"):
        preprocess(meta, [img])
    with pytest.raises(ImageError, match="too small"):
        open_image(encode(img))


def test_preprocess_refuses_what_is_not_an_image():
    meta = CheckpointMeta(arch="student", num_classes=4, classes=list("abcd"), input_size=32, mean=[0.5] * 3,
                          std=[0.25] * 3)
    with pytest.raises(ImageError, match="PIL image"):
        preprocess(meta, [np.zeros((32, 32, 3))])
