"""Hostile images: bombs, huge or rotated files, non-finite float pixels, images too small to use.

Each group is a parametrised test over a list of cases (``REDUCED_MODES``, ``ORIENTATIONS``,
``NON_FINITE``, ``TOO_SMALL``, ``PLUGIN_FAILURES``, ``FUZZ_CRASHES``), so a new hostile image is one line in a list;
a seeded fuzz over every format this Pillow writes checks that only `ImageError` ever escapes the reader.
"""

from __future__ import annotations

import io
import logging
import random
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from core import images
from core.catalog import DATASETS, DatasetError
from core.checkpoints import CheckpointMeta
from core.data import load_dataset, materialize
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


@pytest.mark.parametrize("mode", Image.MODES)
def test_every_pillow_mode_becomes_rgb(mode):
    assert to_rgb(Image.new(mode, (8, 8))).mode == "RGB"


# --------------------------------------------------------------------------- decoder failures

# What a Pillow plugin has been seen to raise on a corrupt file besides OSError: AVIF's decoder a RuntimeError, DDS
# NotImplementedError, TIFF and IM TypeError, SPIDER AttributeError; the rest are what any Python parser may raise.
PLUGIN_FAILURES = [RuntimeError, NotImplementedError, TypeError, AttributeError, ZeroDivisionError, IndexError,
                   KeyError, EOFError, struct.error, OverflowError, RecursionError]
# Never an unreadable file: out of memory and Ctrl-C reach the caller as they are.
PASSED_THROUGH = [MemoryError, KeyboardInterrupt]
FAULTY_MAGIC = b"KDFAULTY"


class FaultyImageFile(ImageFile.ImageFile):
    """A Pillow plugin that fails as its file says: ``KDFAULTY <open|load> <exception name>``."""

    format = "KDFAULTY"

    def _open(self):
        stage, name = self.fp.read(64).split()[1:3]
        self.failure = (stage.decode(), EXCEPTIONS[name.decode()])
        self._mode, self._size = "L", (16, 16)
        if self.failure[0] == "open":
            raise self.failure[1]("the plugin failed while opening")
        self.tile = []

    def load(self):
        raise self.failure[1]("the plugin failed while decoding")


EXCEPTIONS = {cls.__name__: cls for cls in PLUGIN_FAILURES + PASSED_THROUGH}


def faulty_file(stage: str, exception: type[BaseException]) -> bytes:
    return FAULTY_MAGIC + f" {stage} {exception.__name__} ".encode()


@pytest.fixture
def faulty_plugin(monkeypatch):
    """Register `FaultyImageFile` first in Pillow's plugin list for this test only."""
    Image.init()
    monkeypatch.setattr(Image, "ID", ["KDFAULTY", *Image.ID])
    monkeypatch.setitem(Image.OPEN, "KDFAULTY", (FaultyImageFile, lambda prefix: prefix.startswith(FAULTY_MAGIC)))


@pytest.mark.parametrize("stage", ["open", "load"])
@pytest.mark.parametrize("exception", PLUGIN_FAILURES, ids=lambda e: e.__name__)
def test_any_plugin_failure_is_an_unreadable_image(faulty_plugin, stage, exception):
    with pytest.raises(ImageError, match=r"scan\.png: (the image is truncated or corrupt|not an image file)"):
        open_image(faulty_file(stage, exception), name="scan.png")


@pytest.mark.parametrize("stage", ["open", "load"])
@pytest.mark.parametrize("exception", PASSED_THROUGH, ids=lambda e: e.__name__)
def test_out_of_memory_and_interrupts_are_not_disguised(faulty_plugin, stage, exception):
    with pytest.raises(exception):
        open_image(faulty_file(stage, exception))


def corrupt_avif() -> bytes:
    """An AVIF whose coded pixels are zeroed: Pillow's AVIF decoder raises RuntimeError on it."""
    data = encode(Image.new("RGB", (32, 32), (200, 30, 90)), "AVIF")
    start = data.index(b"mdat") + 4
    return data[:start] + bytes(len(data) - start)


# Corrupt files under the extensions a data folder takes (Pillow reads a file by its content, whatever its name);
# the corrupt AVIF where this Pillow reads AVIF at all (the faulty plugin stands for it everywhere).
CORRUPT_FILES = [("faulty_decode.png", lambda: faulty_file("load", RuntimeError)),
                 ("faulty_open.jpg", lambda: faulty_file("open", NotImplementedError))]
if features.check("avif"):
    CORRUPT_FILES += [("corrupt_avif.png", corrupt_avif), ("corrupt_avif.tif", corrupt_avif),
                      ("corrupt_avif.jpg", corrupt_avif)]


@pytest.mark.parametrize("name, build", CORRUPT_FILES, ids=[name for name, _ in CORRUPT_FILES])
def test_a_corrupt_file_is_skipped_and_counted_by_the_dataset(faulty_plugin, tmp_path, caplog, name, build):
    dataset = "alzheimer"
    for split in ("train", "test"):
        for i, cls in enumerate(DATASETS[dataset].classes):
            folder = tmp_path / dataset / split / cls
            folder.mkdir(parents=True)
            for j in range(2):
                Image.new("L", (20, 20), 40 * i + j).save(folder / f"{j}.png")
    (tmp_path / dataset / "test" / DATASETS[dataset].classes[0] / name).write_bytes(build())
    ds = load_dataset(dataset, "test", tmp_path, input_size=16)
    bad = next(i for i, (rel, _) in enumerate(ds.samples) if rel.endswith(name))
    with pytest.raises(DatasetError, match=f"{name}: the image is truncated or corrupt"):
        ds[bad]
    with caplog.at_level(logging.WARNING, logger="core.data"):
        mem = materialize(ds, progress=False)
    assert len(mem) == len(ds) - 1 and [p for p, _ in mem.skipped] == [ds.samples[bad][0]]
    assert "skipped 1 unreadable file" in caplog.text


# --------------------------------------------------------------------------- fuzz

FUZZ_BASE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8))
FUZZ_MODES = ("RGB", "L", "P", "1")
FUZZ_PER_FILE = 8  # seeded mutants of each (format, mode): about 570 files in all, read in about a second


def readable_encodings() -> dict[str, dict[str, bytes]]:
    """``{format: {mode: bytes}}`` for every format this Pillow writes and `open_image` reads back."""
    Image.init()
    found: dict[str, dict[str, bytes]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fmt in sorted(Image.SAVE):
            for mode in FUZZ_MODES:
                try:
                    data = encode(FUZZ_BASE.convert(mode), fmt)
                    to_rgb(open_image(data))
                except Exception:  # a format this Pillow cannot write in this mode, or cannot read back
                    continue
                found.setdefault(fmt, {})[mode] = data
    return found


ENCODINGS = readable_encodings()


def mutants(data: bytes, seed: str, count: int) -> list[bytes]:
    """``count`` seeded corruptions of ``data``: bytes overwritten (mostly in the header) or the file cut short."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        if rng.random() < 0.3:
            out.append(data[:rng.randrange(1, len(data))])
            continue
        spoiled = bytearray(data)
        span = len(data) if rng.random() < 0.5 else min(len(data), 256)
        for _ in range(rng.randint(1, 8)):
            spoiled[rng.randrange(span)] = rng.randrange(256)
        out.append(bytes(spoiled))
    return out


def only_image_errors(data: bytes) -> str | None:
    """None when reading ``data`` succeeds or raises `ImageError`; else what escaped."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about the corrupt metadata it skips
            to_rgb(open_image(data))
    except ImageError:
        return None
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


def test_the_fuzz_covers_the_common_formats():
    assert {"PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF"} <= set(ENCODINGS)
    assert sum(len(modes) for modes in ENCODINGS.values()) * FUZZ_PER_FILE >= 300


@pytest.mark.parametrize("fmt", sorted(ENCODINGS))
def test_fuzzed_files_raise_only_image_errors(fmt):
    escaped = [(mode, i, what) for mode, data in ENCODINGS[fmt].items()
               for i, spoiled in enumerate(mutants(data, f"{fmt}/{mode}", FUZZ_PER_FILE))
               if (what := only_image_errors(spoiled)) is not None]
    assert escaped == []


# Single-byte corruptions of `FUZZ_BASE` that a longer fuzz found to escape as something else than OSError:
# (format, mode, ((offset, new byte), ...)).
FUZZ_CRASHES = [("AVIF", "RGB", ((218, 197),)), ("DDS", "L", ((82, 133),)), ("SPIDER", "RGB", ((107, 113),)),
                ("TIFF", "RGB", ((72, 12),)), ("IM", "L", ((50, 46),))]


@pytest.mark.parametrize("fmt, mode, flips", [case for case in FUZZ_CRASHES if case[0] in ENCODINGS],
                         ids=lambda v: str(v) if isinstance(v, str) else None)
def test_fuzz_crashes_found_before_raise_only_image_errors(fmt, mode, flips):
    spoiled = bytearray(ENCODINGS[fmt][mode])
    for offset, value in flips:
        spoiled[offset] = value
    assert only_image_errors(bytes(spoiled)) is None
