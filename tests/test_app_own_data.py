"""The user's own dataset in the app: a folder of JPEGs in three classes, trained from the command line with a
ResNet-18 teacher, is in the picker and on Home, and every page opens on it without an error."""

import pytest

from core import catalog
from explorer import page_list
from tests.apptest_support import (as_read, assert_ok, fresh_streamlit_caches, notices, open_app,  # noqa: F401
                                   open_page, texts)
from tests.test_folder_datasets import flat_folder

pytestmark = pytest.mark.usefixtures("registry_restored")  # each test's registrations are undone

RUN = ["--teacher-arch", "resnet18", "--epochs", "1", "--student-epochs", "1", "--input-size", "32", "--batch-size",
       "8", "--seeds", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def own_models(tmp_path_factory):
    """A user's folder under the data root and its models in the checkpoint root, both temporary."""
    from core.train.cli import main
    tmp = tmp_path_factory.mktemp("own")
    patch = pytest.MonkeyPatch()
    patch.setenv("KD_DATA_ROOT", str(tmp / "data"))
    patch.setenv("KD_CHECKPOINTS", str(tmp / "models"))
    saved = dict(catalog.DATASETS)
    # a class folder's name is the user's text: one holds Markdown, which every page must show as text
    flat_folder(tmp / "data", "pets", classes=("cat", "dog [stray](x) **big**", "red fox"), n=12)
    (tmp / "data" / "pets" / "dataset.toml").write_text('modality = "photographs of pets"\n')
    main(["--data", str(tmp / "data" / "pets"), "--out", str(tmp / "run"), *RUN])
    yield tmp
    patch.undo()
    catalog.DATASETS.clear()
    catalog.DATASETS.update(saved)


def test_the_users_dataset_is_in_the_picker_and_has_a_card_on_home(own_models):
    at = open_app()
    assert_ok(at)
    assert "pets (images here, models shipped)" in at.sidebar.selectbox(key="dataset").options
    page = as_read(texts(at))
    assert "**pets**" in page and "photographs of pets" in page and "red fox" in page
    assert "your folder" in page and "carved at random" in page


@pytest.mark.parametrize("page", [p.name for p in page_list.PAGES])
def test_every_page_opens_on_the_users_dataset(own_models, page):
    at = open_page(page, {"dataset": "pets"})
    assert_ok(at)
    assert at.session_state["dataset"] == "pets"
    live = [text for text in notices(at) if "](x)" in text or "**big" in text]
    assert not live, live


def test_the_train_page_keeps_a_new_user_datasets_models_and_never_replaces_them(tmp_path, monkeypatch,
                                                                                 registry_restored):
    from core.checkpoints import file_sha256
    from tests.apptest_support import finish_training
    from tests.test_app_train import small_settings
    monkeypatch.setenv("KD_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path / "models"))
    flat_folder(tmp_path / "data", "fresh", classes=("a", "b"), n=12)
    at = open_page("train", {"dataset": "fresh"})
    assert_ok(at)
    small_settings(at)
    at.button(key="train_run").click().run()
    finish_training(at)
    assert_ok(at)
    assert any("Kept: these are now fresh's models" in as_read(s.value) for s in at.success)
    teacher = tmp_path / "models" / "fresh" / "teacher.pt"
    assert teacher.is_file() and (tmp_path / "models" / "fresh" / "student.pt").is_file()
    before = file_sha256(teacher)
    # another visitor trains again: the models kept above stay (a new session: the picker's label of the dataset now
    # says its models are here, which the test harness, sending the choice by its label, cannot follow in one session)
    at = open_page("train", {"dataset": "fresh"})
    small_settings(at)
    at.slider(key="train_epochs").set_value(1)
    at.button(key="train_run").click().run()
    finish_training(at)
    assert any("already had models; they were kept" in as_read(s.value) for s in at.success)
    assert file_sha256(teacher) == before
