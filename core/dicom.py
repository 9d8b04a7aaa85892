"""DICOM files as images a model can read, decoded with pydicom (`core.images.open_image` calls `read_dicom`).

What a DICOM viewer does before it shows a slice, in order:
1. the stored values through the modality transform (rescale slope and intercept: CT in Hounsfield units);
2. the VOI transform: the window the file states (its first window centre and width, the DICOM linear function),
   else its VOI LUT, else the finite values' minimum to maximum;
3. MONOCHROME1 (0 is white) inverted so that bright is dense, as in every other image;
4. a multi-frame file at its middle frame.
The result is an 8-bit grey (or RGB) Pillow image whose ``info["dicom"]`` says in words which frame and window were
used (the app's upload note shows it). Compressed transfer syntaxes decode where pydicom's pure-Python handlers can
(RLE; JPEG and JPEG 2000 only with their plugins installed); otherwise one clear `DicomError` (which
`core.images` reports as its `ImageError`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

DICOM_MAGIC = b"DICM"  # at byte 128, after the preamble


class DicomError(ValueError):
    """A DICOM file that cannot be shown as an image, with a message that says why."""


def looks_like_dicom(data: bytes, name: str | None = None) -> bool:
    """A DICOM file: the ``DICM`` marker after the 128-byte preamble, or a ``.dcm`` name (files written without
    the preamble exist)."""
    return data[128:132] == DICOM_MAGIC or (name or "").lower().endswith((".dcm", ".dicom"))


def read_dicom(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """Decode one DICOM file's pixels as described in the module doc.

    Raises:
        DicomError: not a DICOM file, no pixel data, more than ``max_pixels`` pixels in all frames
            (refused before decoding), a transfer syntax nothing here decodes, or no finite pixel.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != DICOM_MAGIC)
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError, TypeError, AttributeError) as err:
        raise DicomError(f"{label}: not a DICOM file pydicom can read ({err or type(err).__name__})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomError(f"{label}: a DICOM file without pixel data (a report or a structure set, not an image)")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    rows, columns = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    if rows * columns * int(getattr(ds, "NumberOfFrames", 1) or 1) > max_pixels:
        raise DicomError(f"{label}: {columns}x{rows} pixels in {getattr(ds, 'NumberOfFrames', 1)} frame(s) is too "
                         f"large (limit {max_pixels:,} in all); export the slice you need first")
    try:
        pixels = ds.pixel_array
    except MemoryError:
        raise
    except Exception as err:  # a handler missing for the syntax, or pixel data shorter than its header says
        name = getattr(syntax, "name", None) or "its transfer syntax"
        raise DicomError(f"{label}: the DICOM pixels ({name}) cannot be decoded here ({err or type(err).__name__}); "
                         "save it uncompressed or as PNG first") from None
    notes = []
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        middle = frames // 2
        pixels = pixels[middle]
        notes.append(f"frame {middle + 1} of {frames} (the middle one)")
    if samples == 3:  # colour (secondary captures, photographs): shown as stored, scaled to 8 bits
        values = np.asarray(pixels, dtype=np.float64)
        return _tagged(Image.fromarray(_to_uint8(values, label), "RGB"), notes + ["colour"])
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    center, width = _window(ds)
    if center is not None:
        # DICOM's linear window: values below c - 0.5 - (w - 1) / 2 black, above c - 0.5 + (w - 1) / 2 white
        low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
        scaled = np.clip((values - low) / max(high - low, 1e-12), 0.0, 1.0) * 255.0
        grey = np.where(np.isfinite(scaled), scaled, 0.0).round().astype(np.uint8)
        notes.append(f"window centre {center:g}, width {width:g} (from the file)")
    else:
        if "VOILUTSequence" in ds:
            values = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
            notes.append("the file's VOI LUT, then its minimum to maximum")
        else:
            notes.append("no window in the file: its minimum to maximum")
        grey = _to_uint8(values, label)
    if str(getattr(ds, "PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        grey = 255 - grey
        notes.append("MONOCHROME1 shown inverted")
    return _tagged(Image.fromarray(grey, "L"), notes)


def _window(ds) -> tuple[float | None, float | None]:
    """The file's first window centre and width (either may be multi-valued); None where absent or unusable."""
    def first(value) -> float | None:
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            value = value[0] if len(value) else None
        try:
            return None if value is None else float(value)
        except (TypeError, ValueError):
            return None
    center, width = first(getattr(ds, "WindowCenter", None)), first(getattr(ds, "WindowWidth", None))
    if center is None or width is None or not np.isfinite(center) or not np.isfinite(width) or width < 1:
        return None, None
    return center, width


def _to_uint8(values: np.ndarray, label: str) -> np.ndarray:
    """The finite values' minimum to maximum onto 0..255 (non-finite pixels 0)."""

    finite = np.isfinite(values)
    if not finite.any():
        raise DicomError(f"{label}: the DICOM pixels have no finite value")
    lo, hi = float(values[finite].min()), float(values[finite].max())
    scaled = np.zeros_like(values) if hi <= lo else (np.where(finite, values, lo) - lo) / (hi - lo) * 255.0
    return scaled.round().astype(np.uint8)


def _tagged(image: Image.Image, notes: list[str]) -> Image.Image:
    image.info["dicom"] = "DICOM: " + "; ".join(notes)
    return image
