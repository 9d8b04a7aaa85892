"""The per-class recall table reads each arm's seeds from the shipped results, as the raw JSON has them."""

import json
from pathlib import Path

import pytest

from benchmarks import per_class_recall as pcr
from core.results_record import ShippedResults

RESULTS = Path(__file__).resolve().parents[1] / "checkpoints" / "alzheimer" / "results.json"


def test_the_students_recall_is_the_mean_and_spread_over_their_seeds():
    raw = json.loads(RESULTS.read_text())
    found = pcr.recalls(ShippedResults.read(RESULTS))
    models = raw["test"]["models"]
    assert found["classes"] == models["teacher"]["classes"]
    assert found["teacher"] == pytest.approx(models["teacher"]["per_class"]["recall"], abs=1e-4)
    for arm in ("student", "label_only"):
        seeds = [models[f"{arm}_s{seed}"]["per_class"]["recall"] for seed in raw["seeds"]]
        for k in range(len(found["classes"])):
            values = [s[k] for s in seeds]
            mean = sum(values) / len(values)
            std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
            assert found[arm]["mean"][k] == pytest.approx(mean, abs=1e-4)
            assert found[arm]["std"][k] == pytest.approx(std, abs=1e-4)
    support = models["teacher"]["per_class"]["support"]
    assert sum(found["share"]) == pytest.approx(1.0, abs=1e-3) and found["share"][0] == pytest.approx(
        support[0] / sum(support), abs=1e-4)
    assert found["class_balance"] is raw["recipe"]["class_balance"]


def test_the_table_has_a_row_per_class_and_a_column_per_arm(tmp_path, monkeypatch):
    monkeypatch.setattr(pcr, "RESULTS", tmp_path)
    pcr.main(["--datasets", "alzheimer"])
    table = (tmp_path / "per_class_recall.md").read_text()
    assert "| class | share of test | teacher | student (5 seeds) | label_only (5 seeds) |" in table
    assert table.count("| MildDemented |") == 1 and "class-balanced sampling for the teacher and every student: on" \
        in table
