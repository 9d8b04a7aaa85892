"""The slice-scan benchmark on a folder of slices made here: four scans, their end slices held out as the test split
(as alzheimer's test split turns out to be), so what it must find is known."""

import json

import numpy as np
import pytest

from benchmarks import slice_scans
from tests.support import write_slice_folder

DEPTH, ENDS = 20, (0, 1, 18, 19)


pytestmark = pytest.mark.usefixtures("registry_restored")  # the folder the run registers is undone


@pytest.fixture
def slices(tmp_path):
    return write_slice_folder(tmp_path / "slices", test_slices=ENDS).parent


def test_the_end_slices_are_found_in_training_scans_at_their_ends(slices, tmp_path):
    out = tmp_path / "out" / "scans.json"
    slice_scans.main(["--dataset", "slices", "--root", str(slices), "--out", str(out), "--per-end", "1"])
    found = json.loads(out.read_text())
    assert found["scans"] == 4 and found["scans_with_two_classes"] == 0
    assert found["train_images"] == 4 * (DEPTH - len(ENDS)) and found["test_images"] == 4 * len(ENDS)
    assert found["test_in_training_scans"][str(found["threshold"])] == found["test_images"]
    assert found["accuracy"] == {}  # no shipped predictions for this folder
    test, random_carve, outer = found["held_out"]
    assert test["name"] == "test split" and test["images"] == 16
    assert outer["images"] == 4 * 2  # one slice at each end of each of the four training scans
    # the test slices sit at their scans' ends (a fifth of each scan: distance at most 0.1), the random carve's
    # anywhere; the outer carve's are the training scans' own ends
    assert test["end_distance_quantiles"][2] <= 0.11 and outer["end_distance_quantiles"][2] == 0
    assert random_carve["end_distance_quantiles"][1] > test["end_distance_quantiles"][1]
    assert sum(test["histogram"]) == 16
    table = out.with_suffix(".md").read_text()
    assert "**4 scans**" in table and "**16 of the 16 test images lie in a scan" in table
    assert table.count("\n| ") == 5  # the header, its rule and three held-out rows
    assert "| the outermost 1 slice at each end of every training scan | 8 |" in table


@pytest.mark.parametrize("bad", [["--threshold", "1"], ["--per-end", "0"]])
def test_impossible_settings_are_refused(bad, capsys):
    with pytest.raises(SystemExit) as stop:
        slice_scans.main(["--dataset", "slices", *bad])
    assert stop.value.code == 2 and "must" in capsys.readouterr().err


def test_accuracy_is_split_by_nearness_from_the_shipped_predictions_rows(tmp_path):
    labels = np.array([0, 1, 1, 0, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.1, 0.9]], dtype=np.float32)
    np.savez(tmp_path / "predictions.npz", labels=labels, probs_teacher=probs)
    adjacent = np.array([True, True, False, False, False])  # right, right | wrong, wrong, right
    found = slice_scans.accuracy_by_nearness(tmp_path, labels, adjacent)
    assert found == {"teacher": {"adjacent": 1.0, "further": pytest.approx(1 / 3, abs=1e-4), "all": 0.6}}
    assert slice_scans.accuracy_by_nearness(tmp_path, labels[::-1], adjacent) == {}  # rows of another split
