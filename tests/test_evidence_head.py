"""The evidence head designs compared on held-out images: a quick run end to end, and the rule that chooses one."""

import json

import numpy as np
import pytest

from benchmarks import evidence_head
from core.teacher_evidence import shipped_pairs
from core.evidence_model import HEAD_DESIGNS
from tests.support import student_as_teacher


def test_every_design_is_fitted_per_seed_and_scored_against_a_uniform_map(tmp_path):
    folder = student_as_teacher(tmp_path / "checkpoints")
    out, state = tmp_path / "heads.json", tmp_path / "state"
    argv = ["--datasets", "phantom", "--checkpoints", str(folder.parent), "--epochs", "2", "--seeds", "3",
            "--threads", "1", "--state", str(state), "--out", str(out)]
    assert evidence_head.main(argv) == 0
    result = json.loads(out.read_text())
    row, = result["datasets"]
    assert set(row["designs"]) == set(HEAD_DESIGNS) == set(result["head_over_forward_224"])
    assert all([r["seed"] for r in runs] == [3] and all(1 <= r["kept_epoch"] <= 2 for r in runs)
               for runs in row["designs"].values())
    # a uniform map's KL from each target distribution p over n cells is sum p log p + log n, averaged
    _, targets = shipped_pairs(folder).held_out
    p = targets.flatten(2).double().numpy()
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)
    expected = float(np.mean(plogp.sum(axis=2) + np.log(p.shape[2])))
    assert row["uniform_val_loss"] == pytest.approx(expected, rel=1e-4)
    assert all(r["val_loss"] < row["uniform_val_loss"] for runs in row["designs"].values() for r in runs)
    assert result["chosen"] in HEAD_DESIGNS
    assert "| phantom | 16x16 | uniform map |" in out.with_suffix(".md").read_text()
    # a second run reads the dataset's state instead of training again
    (state / "phantom.json").write_text(json.dumps({**row, "uniform_val_loss": 123.0}))
    assert evidence_head.main(argv) == 0
    assert json.loads(out.read_text())["datasets"][0]["uniform_val_loss"] == 123.0


def _row(losses: dict[str, list[float]]) -> dict:
    return {"designs": {d: [{"val_loss": v} for v in values] for d, values in losses.items()}}


def test_the_cheapest_design_within_the_tolerance_everywhere_is_chosen():
    cost = {"conv3x3": 0.06, "bottleneck": 0.02, "pointwise": 0.01}
    close = _row({"conv3x3": [1.00, 1.00], "bottleneck": [1.03, 1.05], "pointwise": [1.20, 1.20]})
    assert evidence_head.choose([close], cost, 0.05) == "bottleneck"
    far_once = _row({"conv3x3": [1.00], "bottleneck": [1.10], "pointwise": [1.20]})
    assert evidence_head.choose([close, far_once], cost, 0.05) == "conv3x3"
    assert evidence_head.choose([close], cost, 0.25) == "pointwise"


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--tolerance", "1.5"], ["--designs", "transformer"],
                                 ["--seeds", "-1"]])
def test_nonsense_settings_are_refused_before_any_work(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as stopped:
        evidence_head.main([*bad, "--state", str(tmp_path / "state"), "--out", str(tmp_path / "h.json")])
    assert stopped.value.code == 2 and not any(tmp_path.iterdir())
    assert bad[0] in capsys.readouterr().err
