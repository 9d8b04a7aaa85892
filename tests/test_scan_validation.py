"""Teachers validated on the outer slices of each training scan: a quick run on a folder of slices made here."""

import json
import re

import pytest

from benchmarks import scan_validation
from core import checkpoints
from tests.support import write_slice_folder

pytestmark = pytest.mark.usefixtures("registry_restored")


def test_a_quick_arm_is_validated_on_the_scan_ends_and_read_back(tmp_path):
    root = write_slice_folder(tmp_path / "data" / "slices", classes=("a", "a", "b", "b"), test_slices=(0, 19)).parent
    out, runs = tmp_path / "out" / "scan_validation.json", tmp_path / "runs"
    args = ["--dataset", "slices", "--root", str(root), "--arms", "scratch", "--epochs", "1", "--input-size", "32",
            "--threads", "1", "--runs", str(runs), "--checkpoints", str(tmp_path / "none"), "--out", str(out)]
    assert scan_validation.main(args) == 0
    result = json.loads(out.read_text())
    assert list(result["arms"]) == ["from scratch"]  # no shipped teacher under --checkpoints: no reference row
    # each training scan holds slices 1..18: 15% of 18 over two ends rounds to one slice at each end, four scans
    assert result["val_images"] == 8
    kept = checkpoints.load_meta(runs / "scratch" / "teacher" / "best.pt")
    assert kept.train["val_carve"] == "scan_ends" and kept.train["val_images"] == 8
    arm = result["arms"]["from scratch"]
    assert arm["best"]["epoch"] == 1 and 0 <= arm["test"]["balanced_accuracy"] <= 1
    assert result["preferred"] == "from scratch"
    best = runs / "scratch" / "teacher" / "best.pt"
    written = best.stat().st_mtime_ns
    assert scan_validation.main(args) == 0  # finished: read back, not trained again
    assert best.stat().st_mtime_ns == written
    table = out.with_suffix(".md").read_text()
    assert re.search(r"\| from scratch \| 1 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \(", table)
    assert "Validation prefers: **from scratch**" in table


def test_a_missing_source_teacher_is_refused_before_any_arm_trains(tmp_path, capsys):
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as stopped:
        scan_validation.main(["--arms", "scratch", "transfer", "--checkpoints", str(tmp_path / "none"),
                              "--runs", str(runs)])
    assert stopped.value.code == 2 and "no shipped teacher" in capsys.readouterr().err and not runs.exists()


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--input-size", "8"], ["--max-per-class", "1"],
                                 ["--arms", "pooled"]])
def test_impossible_settings_are_refused(tmp_path, bad):
    with pytest.raises(SystemExit) as stopped:
        scan_validation.main(["--runs", str(tmp_path / "runs"), *bad])
    assert stopped.value.code == 2 and not (tmp_path / "runs").exists()
