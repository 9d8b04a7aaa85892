"""Each shipped real-dataset model pair works in the app from an upload alone, as on Streamlit Cloud where
the images are not present: the Dataset page predicts it and the Explanations page explains it."""

import json
from pathlib import Path

import pytest

from tests.apptest_support import (as_read, assert_ok, fresh_streamlit_caches, has_chart, odd_uploads,  # noqa: F401
                                   open_page)

CKPT = Path(__file__).resolve().parents[1] / "checkpoints"
REAL = sorted(d.name for d in CKPT.iterdir() if d.name != "phantom" and (d / "teacher.pt").is_file()
              and (d / "student.pt").is_file())


def test_real_datasets_are_shipped():
    assert {"brain_tumor", "eye_disease", "alzheimer"} <= set(REAL)


@pytest.fixture
def no_images(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_DATA_ROOT", str(tmp_path / "no-data"))


@pytest.mark.parametrize("dataset", REAL)
def test_upload_is_predicted_and_explained_without_the_images(dataset, no_images):
    at = open_page("dataset", {"dataset": dataset})
    assert at.selectbox(key="dataset").value == dataset
    at.file_uploader(key="image_upload").set_value(odd_uploads()["grey"]).run()
    assert_ok(at)
    assert has_chart(at, "prediction_chart")
    classes = json.loads((CKPT / dataset / "teacher.json").read_text())["classes"]
    # in large type, or small and marked for an image unlike the training images ("Teacher: glioma (83%), on ...")
    predicted = {m.label: m.value for m in at.metric}
    predicted.update(as_read(c.value).rsplit(" (", 1)[0].split(": ", 1) for c in at.caption
                     if c.value.endswith("on an image unlike the training images"))
    assert predicted["Teacher"] in classes and predicted["Student (distilled)"] in classes

    at = open_page("explanations", {"dataset": dataset, "method": "feature_maps,grad_cam"})
    at.file_uploader(key="image_upload").set_value(odd_uploads()["grey"]).run()
    at.button(key="exp_run").click().run()
    assert_ok(at)
    for method in ("feature_maps", "grad_cam"):
        assert has_chart(at, f"exp_map_{method}_teacher") and has_chart(at, f"exp_map_{method}_student"), method
    assert at.radio(key="image_source").options == ["Upload"]  # no test images offered: they are not here
