"""The teacher trained on from the shipped one: every weight is the start, validation chooses, a rerun reads back."""

import json

import pytest
import torch

from benchmarks import teacher_continuation
from core.layout import checkpoint_file, dataset_folder
from core.roles import TEACHER


def test_a_quick_run_starts_from_every_shipped_weight_and_reads_a_finished_arm_back(tmp_path):
    out, runs = tmp_path / "continued.json", tmp_path / "runs"
    args = ["--dataset", "phantom", "--sizes", "32", "--epochs", "1", "--max-per-class", "4", "--threads", "1",
            "--runs", str(runs), "--out", str(out)]
    assert teacher_continuation.main(args) == 0
    shipped = torch.load(checkpoint_file(dataset_folder("phantom"), TEACHER), weights_only=True)
    start = torch.load(runs / "phantom_teacher_fp32.pt", weights_only=True)
    assert set(start) == set(shipped)  # the classifier too: the same classes, trained on
    assert all(torch.equal(start[k], shipped[k].float() if shipped[k].is_floating_point() else shipped[k])
               for k in shipped)
    result = json.loads(out.read_text())
    assert list(result["arms"]) == ["shipped", "32 px, 1 more epochs"]
    arm = result["arms"]["32 px, 1 more epochs"]
    assert arm["best"]["epoch"] == 1 and 0 <= arm["test"]["balanced_accuracy"] <= 1
    assert result["preferred"] == min(result["arms"], key=lambda a: result["arms"][a]["best"]["val_loss"])
    best = runs / "32px_1e" / "teacher" / "best.pt"
    written = best.stat().st_mtime_ns
    assert teacher_continuation.main(args) == 0  # finished: read back, not trained again
    assert best.stat().st_mtime_ns == written
    assert "Validation prefers" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--lr", "inf"], ["--sizes", "8"], ["--max-per-class", "1"]])
def test_impossible_settings_are_refused_before_any_work(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as stopped:
        teacher_continuation.main(["--runs", str(tmp_path / "runs"), *bad])
    assert stopped.value.code == 2 and not (tmp_path / "runs").exists()
