"""Dataset page on phantom: balance chart, sample grid, one image with predictions, and uploads good and bad."""

import pytest

from tests.apptest_support import (as_read, assert_ok, bad_uploads, fresh_streamlit_caches,  # noqa: F401
                                   has_chart, odd_uploads, open_page, texts)


def test_dataset_page_shows_balance_grid_and_predictions():
    at = open_page("dataset")
    assert_ok(at)
    assert at.title[0].value == "Dataset: phantom"
    assert has_chart(at, "balance_chart") and has_chart(at, "prediction_chart")
    assert {m.label for m in at.metric} >= {"Teacher", "Student (distilled)"}
    classes = ["no_lesion", "infiltrative", "extra_axial", "midline"]
    assert all(m.value in classes for m in at.metric)
    grid = [b for b in at.button if b.key and b.key.startswith("grid_open_")]
    assert len(grid) == 4 * at.slider(key="grid_per_class").value


def test_grid_button_opens_that_image_and_puts_it_in_the_url():
    at = open_page("dataset")
    at.button(key="grid_open_5").click().run()
    assert_ok(at)
    assert at.number_input(key="image").value == 5
    assert at.query_params["image"] == "5"
    assert "test #5, true class: infiltrative" in as_read(texts(at))


def test_bad_uploads_show_an_error_and_the_page_keeps_working():
    at = open_page("dataset")
    at.radio(key="image_source").set_value("Upload").run()
    for name, upload in bad_uploads().items():
        if not upload[1]:
            continue  # an empty file never reaches the app: the browser sends nothing
        at.file_uploader(key="image_upload").set_value(upload).run()
        assert not at.exception, (name, [e.value for e in at.exception])
        assert len(at.error) == 1 and "Cannot use this upload" in at.error[0].value, name
    at.radio(key="image_source").set_value("Test image").run()
    assert_ok(at)
    assert has_chart(at, "prediction_chart")


@pytest.mark.parametrize("kind", ["16-bit grey", "CMYK", "RGBA", "palette", "grey", "huge"])
def test_odd_uploads_are_converted_and_predicted(kind):
    at = open_page("dataset")
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="image_upload").set_value(odd_uploads()[kind]).run()
    assert_ok(at)
    assert has_chart(at, "prediction_chart"), kind
    page = texts(at)
    # each model's prediction: in large type, or small and marked where the image is unlike the training images
    assert len(at.metric) + page.count("on an image unlike the training images") >= 2, kind
    if kind != "huge":
        assert "converted from Pillow mode" in page, kind
    else:
        assert "4000x3000 px" in page


def test_upload_names_are_escaped_before_markdown_renders_them():
    from explorer.text import plain

    hostile = "**bold** [link](http://x) `code` $x$ :red[text]\nline"
    escaped = plain(hostile)
    assert "\n" not in escaped and "\\*\\*bold\\*\\*" in escaped and "\\[link\\]\\(http" in escaped
    assert "\\`code\\`" in escaped and "\\$x\\$" in escaped and "\\:red\\[text\\]" in escaped
    assert plain("scan_01.png") == "scan\\_01\\.png"


def test_pages_open_on_the_first_test_image_every_model_classifies_right(tmp_path, monkeypatch):
    import numpy as np

    from core.checkpoints import file_sha256
    from core.data import load_dataset
    from tests.apptest_support import link_shipped

    folder = link_shipped(tmp_path)
    labels = np.asarray(load_dataset("phantom", "test", input_size=32).targets)
    right = np.eye(4, dtype=np.float32)[labels]
    teacher = right.copy()
    teacher[:2] = np.roll(teacher[:2], 1, axis=1)  # the teacher misclassifies the first two test images
    roles = [p.stem for p in folder.glob("*.pt")]
    np.savez(folder / "predictions.npz", labels=labels,
             **{f"sha256_{role}": file_sha256(folder / f"{role}.pt") for role in roles},
             **{f"probs_{role}": teacher if role == "teacher" else right for role in roles})
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    for page in ("dataset", "explanations"):
        at = open_page(page)
        assert_ok(at)
        assert at.number_input(key="image").value == 2, page
    at = open_page("explanations", {"image": "0"})  # a link still opens the image it names
    assert at.number_input(key="image").value == 0


def test_alzheimer_says_what_its_test_split_measures_where_its_accuracy_is_read():
    note = "outer slices of the very scans its training images come from"
    for page in ("dataset", "compare"):
        at = open_page(page, {"dataset": "alzheimer"})
        assert_ok(at)
        assert note in as_read(texts(at)), page
    assert note not in as_read(texts(open_page("dataset")))  # the phantom's test split is what it says
