"""The out-of-distribution check: scores, the shipped phantom detector, malformed files, and the app's warning."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core import checkpoints, ood
from core.data import load_dataset, materialize
from core.inference import preprocess
from core.metrics import MetricsError
from core.ood import auroc
from tests.apptest_support import assert_ok, fresh_streamlit_caches, open_page, png_bytes, texts  # noqa: F401

SHIPPED = checkpoints.Path(__file__).resolve().parents[1] / "checkpoints" / "phantom"


def screenshot() -> Image.Image:
    """An app screenshot: white page, a sidebar, a blue button, lines of dark text."""
    img = Image.new("RGB", (640, 400), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, 150, 400], fill=(240, 242, 246))
    draw.rectangle([200, 40, 320, 70], fill=(255, 75, 75))
    for y in range(110, 380, 22):
        draw.rectangle([200, y, 200 + (y * 7) % 380, y + 9], fill=(49, 51, 63))
    return img


def test_auroc_counts_pairs_and_ties():
    assert auroc([3, 4], [1, 2]) == 1.0 and auroc([1, 2], [3, 4]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    # pairs (2>1), (2<3), (4>1), (4>3): 3 of 4
    assert auroc([2, 4], [1, 3]) == 0.75
    with pytest.raises(MetricsError):
        auroc([], [1.0])
    with pytest.raises(MetricsError):
        auroc([np.nan], [1.0])


def test_mahalanobis_distance_is_the_textbook_one():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 6)) * np.array([1, 2, 3, 0.5, 1, 4])
    targets = np.arange(300) % 3
    stats = ood.fit_stats(feats, targets, 3)
    means = np.stack([feats[targets == c].mean(0) for c in range(3)])
    cov = sum((feats[targets == c] - means[c]).T @ (feats[targets == c] - means[c]) for c in range(3)) / (300 - 3)
    cov += ood.SHRINK * np.trace(cov) / 6 * np.eye(6)
    precision = np.linalg.inv(cov)
    x = rng.normal(size=(5, 6))
    expected = np.min([[(v - m) @ precision @ (v - m) for m in means] for v in x], 1)
    assert np.allclose(stats.distance(x), expected, rtol=1e-4)


@pytest.fixture(scope="module")
def phantom_teacher():
    model, meta = checkpoints.load(SHIPPED / "teacher.pt")
    found = ood.load(SHIPPED, checkpoints.file_sha256(SHIPPED / "teacher.pt"), 1024)
    assert found is not None, "the phantom ships its out-of-distribution check"
    return model, meta, found


def test_shipped_detector_flags_a_screenshot_and_few_test_images(phantom_teacher):
    model, meta, found = phantom_teacher
    assert ood.assess(model, meta, preprocess(meta, [screenshot()]), found)["unusual"]
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8))
    assert ood.assess(model, meta, preprocess(meta, [noise]), found)["unusual"]
    test = materialize(load_dataset("phantom", "test", input_size=meta.input_size), progress=False,
                       max_per_class=10)
    flagged = [ood.assess(model, meta, preprocess(meta, [Image.fromarray(img.permute(1, 2, 0).numpy())]),
                          found)["unusual"] for img in test.images]
    assert sum(flagged) <= 0.2 * len(flagged), "the threshold lets 95% of validation images through"


def _folder_with(tmp_path, **changes):
    folder = tmp_path / "phantom"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(SHIPPED / ood.STATS_FILE, folder / ood.STATS_FILE)
    data = json.loads((SHIPPED / ood.FILE).read_text())
    data.update(changes)
    (folder / ood.FILE).write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("changes, message", [
    ({"score": "vibes"}, "score must be one of"),
    ({"threshold": "high"}, "threshold must be a finite number"),
    ({"threshold": None}, "threshold must be a finite number"),
    ({"quantile": 1.5}, "quantile must be"),
    ({"model_sha256": "0" * 64}, "fitted for another checkpoint"),
])
def test_malformed_or_stale_files_are_refused_with_the_field(tmp_path, changes, message):
    sha = json.loads((SHIPPED / ood.FILE).read_text())["model_sha256"]
    with pytest.raises(ood.OodError, match=message):
        ood.load(_folder_with(tmp_path, **changes), sha, 1024)


def test_broken_statistics_and_json_are_refused(tmp_path):
    sha = json.loads((SHIPPED / ood.FILE).read_text())["model_sha256"]
    folder = _folder_with(tmp_path)
    with pytest.raises(ood.OodError, match="do not fit a model with 512"):
        ood.load(folder, sha, 512)
    (folder / ood.STATS_FILE).write_bytes(b"not a zip")
    with pytest.raises(ood.OodError, match="cannot be read"):
        ood.load(folder, sha, 1024)
    (folder / ood.FILE).write_text("{not json")
    with pytest.raises(ood.OodError, match="cannot be read"):
        ood.load(folder, sha, 1024)
    assert ood.load(tmp_path / "nothing", sha, 1024) is None


def test_fit_writes_a_detector_that_loads_back(tmp_path):
    # the small student keeps this quick; the shipped files are the teacher's
    folder = tmp_path / "phantom"
    folder.mkdir()
    for suffix in (".pt", ".json"):
        shutil.copyfile((SHIPPED / "student").with_suffix(suffix), (folder / "student").with_suffix(suffix))
    result, stats = ood.fit(folder / "student.pt", other_per_class=3)
    assert result.score in ood.SCORES and result.model == "student" and result.quantile == ood.QUANTILE
    val = load_dataset("phantom", "val", input_size=64)
    assert result.val_images == len(val)
    assert 0 <= result.test_flagged <= 0.2
    test = load_dataset("phantom", "test", input_size=64)
    split = result.test_accuracy
    assert split["flagged"]["images"] + split["not_flagged"]["images"] == len(test)
    assert split["flagged"]["images"] == round(result.test_flagged * len(test))
    assert all(side["accuracy"] is None or 0 <= side["accuracy"] <= 1 for side in split.values())
    ood.write(result, stats, folder)
    back = ood.load(folder, checkpoints.file_sha256(folder / "student.pt"), stats.means.shape[1])
    assert back[0] == result and np.allclose(back[1].eigvecs, stats.eigvecs, atol=1e-3)


def test_dataset_page_warns_on_a_screenshot_and_not_on_a_test_image():
    at = open_page("dataset", {"image": "0"})
    assert_ok(at)
    assert not any("unlike" in w.value for w in at.warning) and "Like the training images" in texts(at)
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="image_upload").set_value(("screen.png", png_bytes(screenshot()), "image/png")).run()
    assert_ok(at)
    assert any("unlike the phantom training images" in w.value for w in at.warning)


def test_an_unfamiliar_upload_is_warned_of_in_words_that_hold_and_its_prediction_drawn_small():
    at = open_page("dataset", {"source": "Upload"})
    at.file_uploader(key="image_upload").set_value(("screen.png", png_bytes(screenshot()), "image/png")).run()
    assert_ok(at)
    [warning] = [w.value for w in at.warning if "unlike the phantom training images" in w.value]
    assert "below" not in warning.split(")", 1)[1]  # it is drawn above the predictions: it says "on this page"
    assert not at.metric, "an unfamiliar image's prediction is not drawn in large type"
    assert "on an image unlike the training images" in texts(at)


@pytest.mark.parametrize("page", ["feature_maps", "explanations"])
def test_a_test_image_the_check_flags_is_flagged_on_every_page_that_shows_it(page, monkeypatch):
    flagged = {"score": "energy", "value": 9.0, "threshold": 1.0, "unusual": True}
    monkeypatch.setattr(ood, "assess", lambda *args, **kwargs: flagged)
    at = open_page(page, {"image": "0"})
    assert_ok(at)
    assert any("unlike the phantom training images" in w.value for w in at.warning)


def test_explanations_page_warns_on_an_unusual_upload():
    at = open_page("explanations", {"source": "Upload"})
    at.file_uploader(key="image_upload").set_value(("screen.png", png_bytes(screenshot()), "image/png")).run()
    assert_ok(at)
    assert any("unlike the phantom training images" in w.value for w in at.warning)


def test_accuracy_either_side_of_the_threshold():
    correct = np.array([True, False, False, True, True, True])
    flagged = np.array([True, True, False, False, False, False])
    assert ood.accuracy_by_flag(correct, flagged) == {"flagged": {"images": 2, "accuracy": 0.5},
                                                      "not_flagged": {"images": 4, "accuracy": 0.75}}
    none = ood.accuracy_by_flag(correct, np.zeros(6, bool))
    assert none["flagged"] == {"images": 0, "accuracy": None} and none["not_flagged"]["accuracy"] == 4 / 6


@pytest.mark.parametrize("bad", ["high", {"flagged": {"images": 3, "accuracy": 1.5}, "not_flagged": {"images": 1}},
                                 {"flagged": {"images": True, "accuracy": 0.5}, "not_flagged": {"images": 1}},
                                 {"flagged": {"images": 3, "accuracy": 0.5}}])
def test_a_malformed_accuracy_split_is_refused_with_its_name(tmp_path, bad):
    folder = _folder_with(tmp_path)
    data = json.loads((folder / ood.FILE).read_text())
    (folder / ood.FILE).write_text(json.dumps({**data, "test_accuracy": bad}))
    with pytest.raises(ood.OodError, match="test_accuracy"):
        ood.load(folder, data["model_sha256"], 1024)
