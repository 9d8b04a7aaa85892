"""The user's own dataset in the app: a folder of JPEGs in three classes, trained from the command line with a
ResNet-18 teacher, is in the picker and on Home, and every page opens on it without an error."""

import pytest

from core import catalog
from explorer import page_list
from tests.apptest_support import as_read, assert_ok, fresh_streamlit_caches, open_app, open_page, texts  # noqa: F401
from tests.test_folder_datasets import flat_folder

RUN = ["--teacher-arch", "resnet18", "--epochs", "1", "--student-epochs", "1", "--input-size", "32", "--batch-size",
       "8", "--seeds", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def own_models(tmp_path_factory):
    """A user's folder under the data root and its models in the checkpoint root, both temporary."""
    from core.train_cli import main
    tmp = tmp_path_factory.mktemp("own")
    patch = pytest.MonkeyPatch()
    patch.setenv("KD_DATA_ROOT", str(tmp / "data"))
    patch.setenv("KD_CHECKPOINTS", str(tmp / "models"))
    saved = dict(catalog.DATASETS)
    flat_folder(tmp / "data", "pets", classes=("cat", "dog", "red fox"), n=12)
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
