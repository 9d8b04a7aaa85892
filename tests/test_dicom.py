"""DICOM files read as a viewer shows them: rescaled, windowed, MONOCHROME1 inverted, the middle frame of many; every
file here is written by the test with pydicom (no patient data)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless, generate_uid

from core.images import ImageError, open_image, to_rgb


def dicom_bytes(pixels: np.ndarray, syntax=ExplicitVRLittleEndian, preamble: bool = True, **tags) -> bytes:
    """A minimal CT file of ``pixels`` (rows x columns, or frames x rows x columns; int16), with ``tags`` set."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = pixels.astype("<i2").tobytes()
    for name, value in tags.items():
        setattr(ds, name, value)
    if syntax == RLELossless:
        ds.compress(RLELossless)
    elif syntax != ExplicitVRLittleEndian:  # a compressed syntax over a frame that is not in it
        from pydicom.encaps import encapsulate
        ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG frame"])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=preamble)
    return buffer.getvalue()


def ramp(values: list[int], side: int = 16) -> np.ndarray:
    """Columns of the given stored values, repeated to a ``side`` x ``side`` image."""
    row = np.repeat(np.array(values), side // len(values))
    return np.tile(row, (side, 1))


def grey(data: bytes, name: str = "scan.dcm") -> np.ndarray:
    image = open_image(data, name=name)
    assert image.mode == "L"
    return np.asarray(image)


def test_stored_values_are_rescaled_and_windowed_as_the_file_says():
    # stored v -> HU = 2 v - 1024; window centre 40, width 400: HU -160 and below black, 239 and above white
    hu = np.array([-1000, -160, 40, 240, 1000])
    stored = (hu + 1024) // 2
    image = open_image(dicom_bytes(ramp(list(stored), 20), RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40,
                                   WindowWidth=400), name="ct.dcm")
    columns = np.asarray(image)[0, ::4]
    # worked by hand with the DICOM linear window: (HU - (-160)) / (239 - (-160)) x 255, clipped
    assert columns.tolist() == [0, 0, round(200 / 399 * 255), 255, 255]
    assert "window centre 40, width 400 (from the file)" in image.info["dicom"]
    assert image.info["original_size"] == (20, 20)


def test_a_file_without_a_window_spans_its_own_range_and_monochrome1_is_inverted():
    plain = grey(dicom_bytes(ramp([0, 100, 200, 400])))
    assert plain[0, ::4].tolist() == [0, round(100 / 400 * 255), round(200 / 400 * 255), 255]
    inverted = grey(dicom_bytes(ramp([0, 100, 200, 400]), PhotometricInterpretation="MONOCHROME1"))
    assert (inverted == 255 - plain).all()
    assert "inverted" in open_image(dicom_bytes(ramp([0, 400]), PhotometricInterpretation="MONOCHROME1"),
                                    name="m1.dcm").info["dicom"]


def test_a_multi_frame_file_shows_its_middle_frame_and_says_so():
    frames = np.stack([ramp([0, 10]) * 0, ramp([0, 10]), ramp([10, 0])])  # only the middle one rises left to right
    image = open_image(dicom_bytes(frames), name="cine.dcm")
    assert np.asarray(image)[0, 0] == 0 and np.asarray(image)[0, -1] == 255
    assert "frame 2 of 3 (the middle one)" in image.info["dicom"]


def test_an_rle_compressed_file_decodes_as_the_uncompressed_one():
    pixels = ramp([3, 70, 900, 20])
    assert (grey(dicom_bytes(pixels, RLELossless)) == grey(dicom_bytes(pixels))).all()


def test_a_file_without_the_preamble_is_read_by_its_name_and_as_rgb_for_the_models():
    data = dicom_bytes(ramp([0, 50]), preamble=False)
    assert data[128:132] != b"DICM"
    assert to_rgb(open_image(data, name="no_preamble.dcm")).mode == "RGB"


@pytest.mark.parametrize("make, says", [
    (lambda: dicom_bytes(ramp([0, 50]), JPEGBaseline8Bit), "cannot be decoded here"),
    (lambda: dicom_bytes(ramp([0, 50]))[:-100], "cannot be decoded here"),
    (lambda: b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage", "not a DICOM file|without pixel data"),
    (lambda: _without_pixels(), "without pixel data"),
    (lambda: dicom_bytes(np.zeros((2, 3000, 3000), np.int16)[:, :4, :4], Rows=6000, Columns=6000),
     "too large")])
def test_a_dicom_file_that_cannot_be_shown_gets_one_clear_error(make, says):
    with pytest.raises(ImageError, match=says):
        open_image(make(), name="bad.dcm")


def _without_pixels() -> bytes:
    data = dicom_bytes(ramp([0, 1]))
    from pydicom import dcmread
    ds = dcmread(io.BytesIO(data))
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_an_uploaded_dicom_file_is_predicted_and_its_note_names_the_window():
    from tests.apptest_support import assert_ok, open_page, texts

    at = open_page("dataset")
    at.radio(key="image_source").set_value("Upload").run()
    data = dicom_bytes(ramp([-500, 0, 80, 400], 64), WindowCenter=40, WindowWidth=80)
    at.file_uploader(key="image_upload").set_value(("slice.dcm", data, "application/dicom")).run()
    assert_ok(at)
    assert "DICOM: window centre 40, width 80 (from the file)" in texts(at)


def test_a_dicom_file_in_a_data_folder_is_an_image_file_read_by_its_path(tmp_path):
    from core.catalog import IMAGE_EXTENSIONS

    path = tmp_path / "slice.dcm"
    path.write_bytes(dicom_bytes(ramp([0, 100])))
    assert path.suffix in IMAGE_EXTENSIONS  # a class folder may hold it (core.catalog)
    assert grey(path.read_bytes()).tolist() == np.asarray(open_image(path)).tolist()
