"""Safe image decoding: every way an image can be odd ends in RGB or in one clear `ImageError`.

Shared by the dataset readers, inference and the app's upload box, so a truncated JPEG, a
decompression bomb, a 16-bit PNG or a CMYK TIFF is handled the same way everywhere.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from core.dicom import DicomError, looks_like_dicom, read_dicom

# Pillow warns at 89 Mpx and raises at twice that; medical images here are < 4 Mpx, so anything
# past this is refused before it is decoded (a crafted file cannot exhaust memory).
MAX_PIXELS = 50_000_000
MAX_BYTES = 64 * 1024 * 1024  # of the encoded file
# Of the decoded pixels, in Pillow's own mode, before any reduction: a 40 Mpx RGB photo fits. A JPEG is
# reduced while it is decoded (draft mode), so this counts its pixels at the reduced size.
MAX_DECODED_BYTES = 160 * 1024 * 1024
# Images are reduced while opening so that their longest side is at most this (the models see <= 96 px).
MAX_SIDE = 2048
# The smallest side an image may have, for uploads, dataset files and `core.inference.preprocess` alike.
MIN_SIDE = 8

# Decoding truncated files must fail loudly rather than return half a picture.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An input that cannot be used as an image, with a message that says why."""


def check_size(image: Image.Image, label: str = "image") -> None:
    """Refuse an image with a side shorter than `MIN_SIDE` (ImageError)."""
    if min(image.size) < MIN_SIDE:
        raise ImageError(f"{label}: {image.width}x{image.height} is too small to classify "
                         f"(each side needs at least {MIN_SIDE} pixels)")


def _bytes_per_pixel(mode: str) -> int:
    """How many bytes Pillow keeps per pixel of ``mode`` (multi-band modes are stored in 4)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _shrink(image: Image.Image, factor: int) -> Image.Image:
    """``image`` reduced by an integer ``factor`` (box average), in its own mode."""
    if factor <= 1:
        return image
    if image.mode not in ("1", "P"):
        try:
            return image.reduce(factor)
        except ValueError:  # a mode reduce does not take (I;16): box-filtered by resize below
            pass
    # Pillow resizes 1 and P by nearest neighbour, which keeps their mode (averaging palette
    # indices would invent colours).
    size = (max(1, math.ceil(image.width / factor)), max(1, math.ceil(image.height / factor)))
    return image.resize(size, Image.Resampling.BOX)


def _orient(image: Image.Image) -> None:
    """Apply the EXIF orientation tag in place; a malformed EXIF block is ignored (the pixels are fine)."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except MemoryError:
        raise
    except Exception:  # whatever Pillow's EXIF parser raises on a malformed block, as for the decoders below
        pass


def open_image(src: str | os.PathLike | bytes | BinaryIO, name: str | None = None) -> Image.Image:
    """Open and fully decode an image from a path, bytes or a binary file object.

    Args:
        src: file path, raw bytes, or an object with ``read()`` (e.g. a Streamlit upload).
        name: what to call the input in error messages (defaults to the path).

    Returns:
        The decoded PIL image in its own mode (see `to_rgb` to normalise it), turned upright by its
        EXIF orientation, and reduced (integer box average) so that its longest side is at most
        `MAX_SIDE`. A JPEG is reduced while it is decoded (Pillow's draft mode), so a large photo is
        never held at full size.

    Raises:
        ImageError: empty, too large (file, pixels or decoded bytes), not an image, truncated, corrupt (any
            exception a Pillow plugin raises while opening or decoding, except MemoryError), or a side shorter
            than `MIN_SIDE`.
    """
    label = name or (str(src) if isinstance(src, (str, os.PathLike)) else "upload")
    try:
        if isinstance(src, (str, os.PathLike)):
            path = Path(src)
            if not path.is_file():
                raise ImageError(f"{label}: no such file")
            if path.stat().st_size > MAX_BYTES:
                raise ImageError(f"{label}: file is larger than {MAX_BYTES // 2**20} MiB")
            data = path.read_bytes()
        elif isinstance(src, (bytes, bytearray)):
            data = bytes(src)
        else:
            data = src.read(MAX_BYTES + 1)
        if not data:
            raise ImageError(f"{label}: the file is empty")
        if len(data) > MAX_BYTES:
            raise ImageError(f"{label}: file is larger than {MAX_BYTES // 2**20} MiB")
        if looks_like_dicom(data, label):
            return _dicom_image(data, label)
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{label}: {width}x{height} pixels is too large (limit {MAX_PIXELS:,}); "
                    "downscale the image first"
                )
            factor = math.ceil(max(width, height) / MAX_SIDE)
            if factor > 1 and probe.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 of the size
                probe.draft(None, (math.ceil(width / factor), math.ceil(height / factor)))
            decoded = probe.width * probe.height * _bytes_per_pixel(probe.mode)
            if decoded > MAX_DECODED_BYTES:
                raise ImageError(
                    f"{label}: decoding {width}x{height} pixels ({probe.mode}) would take "
                    f"{decoded / 2**20:.0f} MiB (limit {MAX_DECODED_BYTES // 2**20} MiB); downscale the image first"
                )
            probe.load()
            _orient(probe)
            factor = math.ceil(max(probe.size) / MAX_SIDE)
            image = _shrink(probe, factor) if factor > 1 else probe.copy()
    except (ImageError, MemoryError):
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"{label}: refused as a possible decompression bomb ({err})") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{label}: not an image file Pillow can read") from err
    except Exception as err:
        # Pillow's plugins fail on a corrupt file in their own ways besides OSError: AVIF's decoder raises
        # RuntimeError, DDS NotImplementedError, TIFF and IM TypeError, SPIDER AttributeError. Any of them means
        # the file cannot be read; out of memory and interrupts are not file faults and pass through.
        raise ImageError(f"{label}: the image is truncated or corrupt ({err or type(err).__name__})") from err
    check_size(image, label)
    image.info["original_size"] = (width, height)  # as stored, before any reduction or rotation
    return image


def _dicom_image(data: bytes, label: str) -> Image.Image:
    """A DICOM file as `open_image` returns an image (`core.dicom.read_dicom`: windowed to 8 bits), reduced to
    `MAX_SIDE`, with ``info["dicom"]`` saying which frame and window were used."""
    try:
        image = read_dicom(data, label, MAX_PIXELS)
    except DicomError as err:
        raise ImageError(str(err)) from None
    note, size = image.info["dicom"], image.size
    image = _shrink(image, math.ceil(max(size) / MAX_SIDE))
    check_size(image, label)
    image.info.update(original_size=size, dicom=note)
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping or colour surprises.

    16-bit and float grey images are min-max scaled to 0..255 (a plain ``convert`` would clip them);
    for float images the minimum and maximum are those of the finite pixels, and NaN/inf pixels
    become 0 (one bad pixel must not turn the image black). Transparent pixels are composited on
    black, the background of MRI and fundus images.

    Raises:
        ImageError: a float image without a single finite pixel.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(image, dtype=np.float64)
        finite = np.isfinite(arr)
        if not finite.any():
            raise ImageError(f"a {image.width}x{image.height} image of mode {mode} has no finite pixel")
        lo, hi = float(arr[finite].min()), float(arr[finite].max())
        scaled = np.zeros_like(arr) if hi <= lo else (np.where(finite, arr, lo) - lo) / (hi - lo) * 255.0
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L").convert("RGB")
    if mode in ("P", "La"):  # Pillow converts premultiplied La only to LA
        image = image.convert("RGBA" if mode == "P" else "LA")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
