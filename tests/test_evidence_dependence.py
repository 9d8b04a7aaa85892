"""Does the teacher's evidence depend on the teacher: a quick run of the benchmark end to end."""

import json

import pytest

from benchmarks import evidence_dependence
from core.teacher_evidence import HEAD_DESIGN
from tests.support import student_as_teacher


def test_heads_from_the_trained_and_a_reinitialised_teacher_are_compared_as_shipped_heads_are_trained(tmp_path):
    folder = student_as_teacher(tmp_path / "checkpoints")
    out = tmp_path / "dependence.json"
    assert evidence_dependence.main(["--checkpoints", str(folder.parent), "--epochs", "2", "--images", "4",
                                     "--sanity-images", "1", "--occlusion-images", "2", "--threads", "1",
                                     "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["images"], result["epochs"], result["design"]) == (4, 2, HEAD_DESIGN)
    assert 0 <= result["median_abs_spearman_between_heads"] <= 1
    assert result["met"] == (result["median_abs_spearman_between_heads"] <= result["limit"])
    assert set(result["median_spearman_with_teacher_grad_cam"]) == {"trained", "re-initialised"}
    assert result["cascade_student_with_head"] and result["occlusion"]["images"] == 2
    assert "the epoch with the lowest validation loss kept" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--images", "0"], ["--threads", "x"]])
def test_nonsense_settings_are_refused(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as stopped:
        evidence_dependence.main([*bad, "--out", str(tmp_path / "d.json")])
    assert stopped.value.code == 2 and not any(tmp_path.iterdir())
    assert bad[0] in capsys.readouterr().err
