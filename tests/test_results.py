"""The README results renderer: summary rows, target verdicts, the pooled split beside the official one."""

import json
import shutil
from pathlib import Path

from core import results

PHANTOM = Path(__file__).resolve().parents[1] / "checkpoints" / "phantom"


def _results_tree(tmp_path: Path, teacher_acc: float) -> Path:
    base = json.loads((PHANTOM / "results.json").read_text())
    for protocol, folder in (("official", tmp_path / "brain_tumor"), ("pooled", tmp_path / "brain_tumor" / "pooled")):
        folder.mkdir(parents=True)
        res = json.loads(json.dumps(base))
        res.update(dataset="brain_tumor", protocol=protocol)
        res["test"]["models"]["teacher"]["accuracy"] = teacher_acc if protocol == "official" else 0.999
        (folder / "results.json").write_text(json.dumps(res))
        shutil.copyfile(PHANTOM / "teacher.json", folder / "teacher.json")
    return tmp_path


def test_summary_states_whether_the_teacher_target_is_met(tmp_path):
    text = results.render(_results_tree(tmp_path, 0.95))
    rows = [line for line in text.splitlines() if line.startswith("| brain_tumor |")]
    assert len(rows) == 2, "one summary row per split"
    assert "| official | 64 px, 15 | 0.9500 |" in rows[0] and "0.975 (not met)" in rows[0]
    assert "| pooled | 64 px, 15 | 0.9990 |" in rows[1] and "(met)" not in rows[1], "targets are for the official split only"
    assert "### brain_tumor (pooled split)" in text and "Teacher curve: validation accuracy by epoch" in text


def test_summary_says_met_when_it_is(tmp_path):
    text = results.render(_results_tree(tmp_path, 0.98))
    assert "0.975 (met)" in text


def test_no_results_gives_the_command(tmp_path):
    assert "python -m core.reproduce phantom" in results.render(tmp_path)


def test_splice_replaces_only_between_markers():
    readme = f"head\n{results.START}\nold\n{results.END}\ntail\n"
    assert results.splice(readme, "new\n") == f"head\n{results.START}\nnew\n{results.END}\ntail\n"


def test_pooled_gain_is_stated_and_earlier_runs_are_summarised(tmp_path):
    root = _results_tree(tmp_path, 0.95)
    (root / "brain_tumor" / "earlier").mkdir()
    old = json.loads((root / "brain_tumor" / "results.json").read_text())
    old["budget"]["teacher_epochs"] = 8
    (root / "brain_tumor" / "earlier" / "teacher_8_epochs.json").write_text(json.dumps(old))
    text = results.render(root)
    assert "adds +4.9 points of test accuracy to the teacher" in text  # 0.999 pooled vs 0.95 official
    assert "| brain_tumor | official (earlier run) | 64 px, 8 |" in text
    assert text.count("### brain_tumor") == 2, "earlier runs get a summary row, not a section"


def test_reproduce_command_names_protocol_and_overrides():
    base = json.loads((PHANTOM / "results.json").read_text())
    assert results.reproduce_command(base) == "python -m core.reproduce phantom"
    real = {**base, "dataset": "alzheimer", "protocol": "pooled",
            "budget": {"input_size": 96, "teacher_epochs": 16, "grid_epochs": 5, "student_epochs": 10}}
    assert results.reproduce_command(real) == "python -m core.reproduce alzheimer --protocol pooled --teacher-epochs 16"
