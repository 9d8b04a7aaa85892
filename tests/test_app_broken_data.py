"""A real-layout dataset with an unreadable test file and a tiny test split: every page keeps working."""

import pytest

from tests.apptest_support import assert_ok, fresh_streamlit_caches, grey_image_tree, open_page, texts  # noqa: F401

NAME = "alzheimer"  # its checkpoints are shipped; only the images here are made up
BROKEN = 2  # test index of the unreadable file (files are read in sorted order within a class)


@pytest.fixture
def broken_root(tmp_path, monkeypatch):
    """Five grey images per class and split; the third test image of the first class is not an image."""
    first = grey_image_tree(tmp_path, NAME)
    (first / "2.png").write_bytes(b"this is not a png")
    monkeypatch.setenv("KD_DATA_ROOT", str(tmp_path))
    return tmp_path


def test_dataset_page_skips_the_unreadable_image_with_a_notice(broken_root):
    at = open_page("dataset", {"dataset": NAME})
    assert_ok(at)
    assert f"#{BROKEN} cannot be read" in texts(at)
    at.number_input(key="image").set_value(BROKEN).run()
    assert not at.exception
    assert any(f"Test image #{BROKEN} cannot be read" in w.value for w in at.warning)


def test_compare_page_on_a_tiny_split_with_an_unreadable_file(broken_root):
    at = open_page("compare", {"dataset": NAME})  # 20 test images: too few for the image-count slider
    assert_ok(at)
    assert not [s for s in at.slider if s.key == "cmp_limit"]
    assert any("1 test image(s) cannot be read" in w.value for w in at.warning)


def test_feature_maps_page_computes_cka_without_the_unreadable_file(broken_root):
    at = open_page("feature_maps", {"dataset": NAME, "image": "0"})
    assert_ok(at)
    assert "Linear CKA" in texts(at) and "over 19 test images" in texts(at)
    assert any(f"1 test image(s) cannot be read and are left out of the CKA: #{BROKEN}." in w.value
               for w in at.warning), [w.value for w in at.warning]
