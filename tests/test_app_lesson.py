"""The Lesson page as a lecturer uses it: six steps walked with Next and Prev, each a picture and two sentences from
the dataset shown; a deep link per step; the examples chosen from the shipped predictions; a step's button to the
page with the evidence in full; and what it says where the images are not here."""

from pathlib import Path

import numpy as np
import pytest

from core import predictions
from core.catalog import DATASETS
from core.data import load_dataset
from core.roles import DISTILLED, TEACHER
from explorer import lesson_view
from tests.apptest_support import as_read, assert_ok, fresh_streamlit_caches, has_chart, open_page, texts  # noqa: F401

CKPT = Path(__file__).resolve().parents[1] / "checkpoints"
CHARTS = {1: None, 2: "lesson_layers", 3: "lesson_maps", 4: "lesson_evidence", 5: "lesson_speed",
          6: "lesson_distrust"}


def lesson_text(at) -> list[str]:
    """The sentences of the step shown (the projector-size container)."""
    return [m.value for m in at.get("markdown") if m.value and "<style" not in m.value][-2:]


def step_title(at) -> str:
    return at.subheader[0].value


@pytest.mark.parametrize("dataset", ["phantom", "brain_tumor"])
def test_next_walks_all_six_steps_and_prev_walks_back(dataset):
    at = open_page("lesson", {"dataset": dataset})
    assert_ok(at)
    assert step_title(at).startswith("Step 1 of 6") and at.button(key="lesson_prev").disabled
    seen = []
    for number in range(1, 7):
        assert_ok(at)
        assert step_title(at) == f"Step {number} of 6: {lesson_view.STEPS[number - 1].title}"
        assert at.query_params["step"] == str(number)
        if CHARTS[number]:
            assert has_chart(at, CHARTS[number]), number
        seen.append(texts(at))
        if number < 6:
            at.button(key="lesson_next").click().run()
    assert at.button(key="lesson_next").disabled
    assert len(set(seen)) == 6  # every step says something of its own
    at.button(key="lesson_prev").click().run()
    assert step_title(at).startswith("Step 5 of 6")


def test_a_deep_link_opens_its_step_and_a_bad_one_the_first():
    at = open_page("lesson", {"dataset": "phantom", "step": "4"})
    assert_ok(at)
    assert step_title(at).startswith("Step 4 of 6") and has_chart(at, "lesson_evidence")
    at = open_page("lesson", {"dataset": "phantom", "step": "9"})
    assert step_title(at).startswith("Step 1 of 6")


def test_the_first_step_differs_between_datasets_and_gives_their_numbers():
    said = {}
    for dataset in ("brain_tumor", "eye_disease"):
        at = open_page("lesson", {"dataset": dataset})
        assert_ok(at)
        said[dataset] = as_read(" ".join(lesson_text(at)))  # class names are escaped: a user's may be Markdown
        n_test = len(load_dataset(dataset, "test", input_size=32))
        assert f"{n_test} test images" in said[dataset]
        assert all(c in said[dataset] for c in DATASETS[dataset].classes)
    assert said["brain_tumor"] != said["eye_disease"]


def test_the_layers_step_shows_the_surest_right_answer_and_opens_it_on_feature_maps():
    ds = load_dataset("brain_tumor", "test", input_size=32)
    shas = {r.shipped: predictions_sha(r.shipped) for r in (TEACHER, DISTILLED)}
    found = predictions.load(CKPT / "brain_tumor", shas, np.asarray(ds.targets), len(ds.classes))
    t, s, labels = found["probs"]["teacher"], found["probs"]["student"], found["labels"]
    right = (t.argmax(1) == labels) & (s.argmax(1) == labels)
    sure = np.minimum(t[np.arange(len(labels)), labels], s[np.arange(len(labels)), labels])
    expected = int(np.flatnonzero(right)[np.argmax(sure[right])])

    at = open_page("lesson", {"dataset": "brain_tumor", "step": "2"})
    assert_ok(at)
    assert f"Test image #{expected} is {ds.classes[labels[expected]]}" in lesson_text(at)[0]
    at.button(key="lesson_open_layers").click().run()
    assert_ok(at)
    assert at.number_input(key="image").value == expected and at.title[0].value.startswith("Feature maps")


def predictions_sha(role: str) -> str:
    from core.checkpoints import file_sha256
    return file_sha256(CKPT / "brain_tumor" / f"{role}.pt")


def test_without_the_images_the_steps_say_so_and_the_numbers_remain(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_DATA_ROOT", str(tmp_path / "no-data"))
    at = open_page("lesson", {"dataset": "brain_tumor", "step": "2"})
    assert_ok(at)
    assert any("test images, which are not on this machine" in i.value for i in at.info)
    at = open_page("lesson", {"dataset": "brain_tumor", "step": "5"})
    assert_ok(at)
    assert has_chart(at, "lesson_speed") and "faster" in " ".join(lesson_text(at))
