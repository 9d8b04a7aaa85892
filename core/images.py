"""Safe image decoding: every way an image can be odd ends in RGB or in one clear `ImageError`.

Shared by the dataset readers, inference and the app's upload box, so a truncated JPEG, a
decompression bomb, a 16-bit PNG or a CMYK TIFF is handled the same way everywhere.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# Pillow warns at 89 Mpx and raises at twice that; medical images here are < 4 Mpx, so anything
# past this is refused before it is decoded (a crafted file cannot exhaust memory).
MAX_PIXELS = 50_000_000
MAX_BYTES = 64 * 1024 * 1024

# Decoding truncated files must fail loudly rather than return half a picture.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An input that cannot be used as an image, with a message that says why."""


def open_image(src: str | os.PathLike | bytes | BinaryIO, name: str | None = None) -> Image.Image:
    """Open and fully decode an image from a path, bytes or a binary file object.

    Args:
        src: file path, raw bytes, or an object with ``read()`` (e.g. a Streamlit upload).
        name: what to call the input in error messages (defaults to the path).

    Returns:
        The decoded PIL image in its own mode (see `to_rgb` to normalise it).

    Raises:
        ImageError: empty, too large, not an image, truncated or corrupt.
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
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{label}: {width}x{height} pixels is too large (limit {MAX_PIXELS:,}); "
                    "downscale the image first"
                )
            probe.load()
            image = probe.copy()
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"{label}: refused as a possible decompression bomb ({err})") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{label}: not an image file Pillow can read") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{label}: the image is truncated or corrupt ({err})") from err
    if image.width < 8 or image.height < 8:
        raise ImageError(f"{label}: {image.width}x{image.height} is too small to classify")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping or colour surprises.

    16-bit and float grey images are min-max scaled to 0..255 (a plain ``convert`` would clip them);
    transparent pixels are composited on black, the background of MRI and fundus images.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
