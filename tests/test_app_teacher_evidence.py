"""Explanations with the teacher's evidence: offered where the student's evidence head is shipped, left out with
its reason where the head cannot be used."""

from explorer import names
from tests.apptest_support import (as_read, assert_ok, fresh_streamlit_caches, has_chart, open_page,  # noqa: F401
                                   texts)


def link_shipped_with_head(tmp_path, monkeypatch):
    """The shipped phantom models under a checkpoint root in ``tmp_path``, the student with a seeded evidence head."""
    from tests.apptest_support import link_shipped
    from tests.support import ship_seeded_head

    folder = tmp_path / "phantom"
    if not folder.is_dir():
        link_shipped(tmp_path)
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    return ship_seeded_head(folder)


def test_the_teachers_evidence_is_offered_and_shown_on_the_student_where_its_head_is_shipped(tmp_path, monkeypatch):
    from tests.apptest_support import link_shipped

    link_shipped(tmp_path)
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    link = {"image": "1", "method": "grad_cam,teacher_evidence"}
    at = open_page("explanations", link)
    assert_ok(at)
    assert "teacher_evidence" not in at.multiselect(key="method").value  # no head: not offered
    link_shipped_with_head(tmp_path, monkeypatch)
    at = open_page("explanations", link)
    assert_ok(at)
    assert at.multiselect(key="method").value == ["grad_cam", "teacher_evidence"]
    costs = next(d.value for d in at.dataframe if "method" in d.value.columns)
    row = costs[costs["method"] == names.method_label("teacher_evidence")].iloc[0]
    assert row["Student (distilled) passes (F/B)"] == "1/0"  # one forward gives the logits and the map
    at.button(key="exp_run").click().run()
    assert_ok(at)
    assert has_chart(at, "exp_map_teacher_evidence_student") and has_chart(at, "exp_map_grad_cam_teacher")
    assert not has_chart(at, "exp_map_teacher_evidence_teacher")
    assert "read off the student" in texts(at)


def test_a_corrupt_evidence_head_leaves_the_method_out_and_says_why(tmp_path, monkeypatch):
    from core.teacher_evidence import HEAD_FILE

    folder = link_shipped_with_head(tmp_path, monkeypatch)
    (folder / HEAD_FILE).write_bytes(b"not a head")
    at = open_page("explanations", {"image": "1", "method": "grad_cam,teacher_evidence"})
    assert_ok(at)
    assert "teacher_evidence" not in at.multiselect(key="method").value
    shown = as_read(texts(at))
    assert "The teacher's evidence is not offered" in shown and "--force" in shown
