"""The roles table and the on-disk layout: every name a model goes by, from one row."""

import pytest

from core import layout
from core.recipe import TrainConfig, default_stages
from core.roles import DISTILLED, LABEL_ONLY, ROLES, SHIPPED, SMOOTHING, TEACHER, role


def test_a_results_key_or_a_shipped_file_finds_its_role():
    assert role("label_only") is LABEL_ONLY
    assert role("student_label_only") is LABEL_ONLY
    assert role("student") is DISTILLED
    assert role("smoothing") is SMOOTHING
    assert role("teacher") is TEACHER


@pytest.mark.parametrize("name", ["label_only_s3", "teacher_s0", "grid_a0.5_t4", "", "Teacher"])
def test_a_name_of_no_role_is_refused(name):
    with pytest.raises(KeyError, match="no model role"):
        role(name)


def test_names_are_unique_across_roles():
    for field in ("key", "stage_prefix", "label", "short", "noun"):
        values = [getattr(r, field) for r in ROLES]
        assert len(set(values)) == len(values), field
    shipped = [r.shipped for r in SHIPPED]
    assert shipped == ["teacher", "student", "student_label_only"]


def test_recipe_stages_are_named_by_the_table():
    cfg = TrainConfig(dataset="phantom", seeds=(0, 2), smoothing_control=0.1)
    names = [s.name for s in default_stages(cfg)]
    assert names == ["teacher", "student_s0", "label_only_s0", "smoothing_s0", "student_s2", "label_only_s2",
                     "smoothing_s2"]
    assert [s.model for s in default_stages(cfg)] == ["teacher", "student", "label_only", "smoothing", "student",
                                                       "label_only", "smoothing"]
    assert all(role(s.model).kind == s.role for s in default_stages(cfg))


def test_layout_follows_the_checkpoint_root(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    folder = layout.dataset_folder("phantom")
    assert folder == tmp_path / "phantom"
    assert layout.dataset_folder("alzheimer", "pooled") == tmp_path / "alzheimer" / "pooled"
    assert layout.checkpoint_file(folder, LABEL_ONLY) == tmp_path / "phantom" / "student_label_only.pt"
    assert layout.shipped_checkpoints(folder) == {}
    folder.mkdir()
    (folder / "student.pt").write_bytes(b"x")
    assert layout.shipped_checkpoints(folder) == {DISTILLED: folder / "student.pt"}
    with pytest.raises(ValueError, match="not shipped"):
        layout.checkpoint_file(folder, SMOOTHING)
