"""The record of results.json (`core.results_record`): shipped files read as they are, refusals name file and field."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from core.budgets import Budget
from core.results_record import (ArmSummary, Evaluation, KdSetting, PairedDifference, ResultsFileError,
                                 ShippedResults, Spread)
from core.roles import DISTILLED, LABEL_ONLY, SMOOTHING, TEACHER
from core.study_scores import StudyFormatError

CKPT = Path(__file__).resolve().parents[1] / "checkpoints"
# every results file the README and docs are rendered from: official and pooled splits, and the earlier runs
SHIPPED = sorted([*CKPT.glob("*/results.json"), *CKPT.glob("*/pooled/results.json"), *CKPT.glob("*/earlier/*.json")])


def _record() -> ShippedResults:
    spread = Spread(mean=0.8, std=0.02, min=0.78, max=0.83, n=2)
    models = {"teacher": {"accuracy": 0.9}, "student_s0": {"accuracy": 0.81}, "student_s1": {"accuracy": 0.79},
              "label_only_s0": {"accuracy": 0.7}, "label_only_s1": {"accuracy": 0.74}}
    pairs = {"student_s0": {"agreement": 0.6}, "student_s1": {"agreement": 0.7}, "label_only_s0": {"agreement": 0.8},
             "label_only_s1": {"agreement": 0.9}}
    difference = PairedDifference(mean=0.08, std=0.03, ci=(0.01, 0.15), p_value=0.04, p_sign_flip=0.5, n=2,
                                  test="paired t-test over seeds, df = 1", differences=(0.11, 0.05))
    return ShippedResults(
        dataset="phantom", protocol="official", budget=Budget(input_size=32, teacher_epochs=1, grid_epochs=1,
                                                              student_epochs=1),
        chosen=KdSetting(alpha=0.5, temperature=4.0), grid=(), seeds=(0, 1), test=Evaluation(models, pairs, "test"),
        summary={"student": ArmSummary(spread, spread, spread, spread, balanced_accuracy=spread),
                 "label_only": ArmSummary(spread, spread, spread, replace(spread, mean=0.6))},
        paired={"label_only": {"accuracy": difference}}, versions={"machine": "x", "torch": "2.x"},
        created="2026-01-01T00:00:00", seconds=12.0, faithfulness={"images": 3})


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CKPT)))
def test_every_shipped_file_is_read_as_version_one_and_written_back_in_its_shape(path):
    data = json.loads(path.read_text())
    assert "version" not in data  # written before the record: read as version 1
    written = json.loads(ShippedResults.read(path).json_text())
    assert written.pop("version") == 1
    # the same content, except that an older budget names the settings it ran with by their defaults
    budget = written.pop("budget")
    assert budget | data.pop("budget") == budget
    assert written == data


def test_a_written_record_reads_back_equal_and_keeps_the_files_keys():
    record = _record()
    data = json.loads(record.json_text())
    assert ShippedResults.from_json(data) == record
    assert data["version"] == 1 and data["chosen"] == {"alpha": 0.5, "temperature": 4.0}
    assert set(data["paired"]) == {"student_minus_label_only"}  # the key readers of the file know
    assert data["paired"]["student_minus_label_only"]["accuracy"]["ci"] == [0.01, 0.15]
    assert data["summary"]["label_only"]["agreement"]["mean"] == 0.6 and "balanced_accuracy" not in \
        data["summary"]["label_only"]
    assert data["faithfulness"] == {"images": 3}
    assert "training_seconds" not in data and "test_without_near_duplicates" in data


def test_accessors_reach_each_model_by_role_and_seed():
    record = _record()
    assert record.test.report(TEACHER) == {"accuracy": 0.9}
    assert record.test.report(LABEL_ONLY, 1) == {"accuracy": 0.74}
    assert record.test.agreement(DISTILLED, 1) == 0.7
    assert record.arms == (DISTILLED, LABEL_ONLY)  # no label-smoothing control in this file
    assert record.arm_summary(SMOOTHING) is None
    assert record.accuracy(TEACHER) == 0.9 and record.accuracy(DISTILLED) == 0.8
    assert record.paired_difference(LABEL_ONLY).p_value == 0.04
    assert record.paired_difference(SMOOTHING) is None
    assert record.paired_difference(LABEL_ONLY, "balanced_accuracy") is None


def test_the_study_is_read_from_its_block_and_a_broken_one_is_refused_naming_the_file(tmp_path):
    shipped = CKPT / "phantom" / "results.json"
    block = json.loads(shipped.read_text())["faithfulness"]
    study = ShippedResults.read(shipped).study()
    assert study.config.dataset == "phantom" and study.images == block["images"]
    assert study.score("cam", DISTILLED, TEACHER).deletion_auc.mean == \
        block["methods"]["cam"]["student_on_teacher"]["deletion_auc"]["mean"]
    assert replace(_record(), faithfulness=None).study() is None
    path = tmp_path / "phantom" / "results.json"
    path.parent.mkdir()
    path.write_text(_record().json_text())  # a block of {"images": 3}: no study's fields
    record = ShippedResults.read(path)
    assert record.faithfulness == {"images": 3}  # the rest of the file is read as it is
    with pytest.raises(StudyFormatError) as refused:
        record.study()
    assert str(refused.value).startswith(f"{path}: faithfulness: no ")


def test_a_newer_version_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({**_record().to_json(), "version": 2}))
    with pytest.raises(ResultsFileError, match=r"results\.json: version 2 .*reads version 1"):
        ShippedResults.read(path)


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.pop("test"), "'test' is missing"),
    (lambda d: d.update(seeds="0, 1"), "'seeds' is str, not a list"),
    (lambda d: d.update(seconds=True), "'seconds' is bool"),
    (lambda d: d["summary"]["student"]["accuracy"].pop("std"), "'summary.student.accuracy' does not fit Spread"),
    (lambda d: d["summary"]["student"].pop("agreement"), "'summary.student' does not fit ArmSummary"),
    (lambda d: d["budget"].update(epochs=3), "'budget' does not fit Budget"),
    (lambda d: d["paired"].update(student_minus_teacher={}), "'paired.student_minus_teacher' is no comparison"),
    (lambda d: d["paired"]["student_minus_label_only"]["accuracy"].pop("ci"),
     "'paired.student_minus_label_only.accuracy' does not fit"),
    (lambda d: d["test"].update(models=[]), "'test.models' is list, not an object"),
])
def test_a_malformed_field_is_refused_naming_the_file_and_the_field(tmp_path, edit, field):
    data = _record().to_json()
    edit(data)
    path = tmp_path / "phantom" / "results.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsFileError) as refused:
        ShippedResults.read(path)
    assert str(refused.value).startswith(f"{path}: field ") and field in str(refused.value)


def test_a_file_that_is_not_a_results_object_is_refused(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("[1, 2]")
    with pytest.raises(ResultsFileError, match="not a results file"):
        ShippedResults.read(path)
    path.write_text("{not json")
    with pytest.raises(ResultsFileError, match="not JSON"):
        ShippedResults.read(path)
