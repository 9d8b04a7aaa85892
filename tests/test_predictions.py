"""Test-split predictions made with the checkpoints (`core.predictions`) and the Compare page reading them."""

import numpy as np
import pytest

import explorer.compare_view
from core import checkpoints, predictions
from core.data import load_dataset
from core.layout import PREDICTIONS_FILE
from tests.apptest_support import ROOT, fresh_streamlit_caches, link_shipped  # noqa: F401
from tests.test_app_compare import check_gallery

SHIPPED = ROOT / "checkpoints" / "phantom"
ROLES = ("teacher", "student", "student_label_only")  # the shipped files' stems, which key the predictions


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A checkpoint root linking the shipped phantom models, with their predictions written beside them."""
    root = tmp_path_factory.mktemp("ckpt")
    folder = link_shipped(root)
    predictions.write(folder)
    labels = np.asarray(load_dataset("phantom", "test").targets)
    shas = {role: checkpoints.file_sha256(folder / f"{role}.pt") for role in ROLES}
    return root, folder, labels, shas


def test_every_test_image_is_predicted_by_every_shipped_model(written):
    _, folder, labels, shas = written
    loaded = predictions.load(folder, shas, labels, 4)
    assert set(loaded["probs"]) == set(ROLES) and np.array_equal(loaded["labels"], labels)
    for role, probs in loaded["probs"].items():
        assert probs.shape == (len(labels), 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
        shipped = checkpoints.load_meta(folder / f"{role}.pt").metrics["test"]["accuracy"]
        assert (probs.argmax(1) == labels).mean() == pytest.approx(shipped), role  # as evaluated when shipped


def test_rows_of_another_checkpoint_or_another_split_are_not_used(written, tmp_path):
    _, folder, labels, shas = written
    other = {**shas, "student": "0" * 64}
    assert set(predictions.load(folder, other, labels, 4)["probs"]) == {"teacher", "student_label_only"}
    assert predictions.load(folder, {"student": "0" * 64}, labels, 4) is None
    assert predictions.load(tmp_path, shas, labels, 4) is None  # no file
    with pytest.raises(predictions.PredictionsError, match="another test split"):
        predictions.load(folder, shas, labels[::-1].copy(), 4)
    with pytest.raises(predictions.PredictionsError, match="do not fit"):
        predictions.load(folder, shas, labels, 5)
    (tmp_path / PREDICTIONS_FILE).write_bytes(b"not an npz file")
    with pytest.raises(predictions.PredictionsError, match="cannot be read"):
        predictions.load(tmp_path, shas, labels, 4)


def test_compare_page_takes_the_gallery_from_the_predictions_without_running_a_model(written, monkeypatch):
    root, _, _, _ = written
    monkeypatch.setenv("KD_CHECKPOINTS", str(root))

    def refuse(*args, **kwargs):
        raise AssertionError("a model ran although its predictions were shipped")

    monkeypatch.setattr(explorer.compare_view, "predict_tensor", refuse)
    check_gallery(root)


def test_a_broken_predictions_file_falls_back_to_running_the_models(tmp_path, monkeypatch):
    folder = link_shipped(tmp_path)
    (folder / PREDICTIONS_FILE).write_bytes(b"broken")
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    check_gallery(tmp_path)
