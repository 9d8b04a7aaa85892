"""The loss comparison: paired differences over seeds, the validation-only choice, and a quick run end to end."""

import json

import numpy as np
import pytest

from benchmarks import kd_losses
from core.distill import LOSSES


def row(seed, val_bal, test_bal=0.5):
    return {"seed": seed, **{split: {"accuracy": 0.7, "balanced_accuracy": bal, "recall": [bal, 1 - bal]}
                             for split, bal in (("val", val_bal), ("test", test_bal))}}


def test_the_difference_from_kd_is_paired_by_seed():
    # seeds differ a lot from each other, the loss adds 0.02 on every seed: paired, the interval excludes zero
    base = [row(s, v) for s, v in enumerate((0.4, 0.6, 0.5, 0.7, 0.45))]
    better = [row(r["seed"], r["val"]["balanced_accuracy"] + 0.02 + 0.001 * r["seed"]) for r in base]
    summary = kd_losses.summarise({"kd": base, "dkd": better}, [0, 1, 2, 3, 4])
    diff = summary["dkd"]["val"]["minus_kd"]["balanced_accuracy"]
    assert diff["mean"] == pytest.approx(0.022) and diff["ci"][0] > 0
    assert "minus_kd" not in summary["kd"]["val"]
    assert summary["dkd"]["val"]["recall"]["mean"][0] == pytest.approx(np.mean([r["val"]["recall"][0] for r in better]))
    assert kd_losses.preferred(summary) == "dkd"


def test_validation_chooses_and_test_never_does():
    base = [row(s, 0.5, test_bal=0.5) for s in range(5)]
    noisy = [row(s, 0.5 + d, test_bal=0.9) for s, d in enumerate((0.05, -0.04, 0.03, -0.05, 0.02))]
    summary = kd_losses.summarise({"kd": base, "dist": noisy}, list(range(5)))
    assert summary["dist"]["test"]["minus_kd"]["balanced_accuracy"]["ci"][0] > 0  # far better on test...
    assert kd_losses.preferred(summary) == "kd"  # ...but validation's interval spans zero: kd stays


def test_registry_defaults_are_the_constructors_keywords():
    assert LOSSES.defaults("dkd") == {"ce_weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0}
    assert LOSSES.defaults("label_only") == {}
    with pytest.raises(ValueError, match="unknown loss"):
        LOSSES.defaults("nope")


def test_a_quick_run_trains_each_loss_per_seed_and_writes_the_table(tmp_path):
    out = tmp_path / "kd_losses.json"
    kd_losses.main(["--dataset", "phantom", "--losses", "kd", "dkd", "--seeds", "0", "1", "--epochs", "1",
                    "--max-per-class", "4", "--threads", "1", "--runs", str(tmp_path / "runs"), "--out", str(out)])
    result = json.loads(out.read_text())
    assert [r["seed"] for r in result["per_seed"]["dkd"]] == [0, 1]
    assert result["loss_args"]["dkd"]["beta"] == 8.0 and "alpha" in result["loss_args"]["kd"]
    assert result["images"] == {"val": 16, "test": 16}
    assert (tmp_path / "runs" / "dkd_s1").is_dir()
    table = out.with_suffix(".md").read_text()
    assert "Decoupled KD" in table and "recall no_lesion" in table and "Validation prefers" in table


def test_an_unknown_loss_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="unknown loss"):
        kd_losses.main(["--dataset", "phantom", "--losses", "kd", "dkdx", "--runs", str(tmp_path)])
    assert not any(tmp_path.iterdir())
