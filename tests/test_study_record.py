"""The faithfulness study's record: the shipped studies read as they are, old files read, bad ones refused."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from core.roles import DISTILLED, TEACHER
from core.study_record import PAIRS, FaithfulnessStudy, pair
from core.study_scores import Comparison, Distribution, StudyFormatError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p for p in (ROOT / "checkpoints").glob("*/results.json")
                 if "faithfulness" in json.loads(p.read_text()))


def shipped_block(name: str = "phantom") -> dict:
    return json.loads((ROOT / "checkpoints" / name / "results.json").read_text())["faithfulness"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
def test_every_shipped_study_reads_and_writes_back_as_it_is_stored(path):
    block = json.loads(path.read_text())["faithfulness"]
    study = FaithfulnessStudy.from_json(block, str(path))
    written = study.to_json()
    # shipped before versions: read as version 1; a version 2 study says so
    assert written["version"] == block.get("version", 1) == study.version
    # every field as stored, in the same order; studies older than the student frontier gain its defaults
    for key, value in block.items():
        expected = {**value, "explained": ["teacher", "student"]} if key == "config" and study.version == 1 else value
        assert json.dumps(written[key]) == json.dumps(expected), key
    assert set(written) - set(block) <= {"version", "scores_from_earlier_study"}
    assert FaithfulnessStudy.from_json(written, str(path)) == study


def test_the_pair_names_are_a_table_of_the_four_pairs():
    assert [p.key for p in PAIRS] == ["teacher", "teacher_on_student", "student_on_teacher", "student"]
    assert pair(DISTILLED, TEACHER).key == "student_on_teacher" and pair(DISTILLED, TEACHER).cross
    assert not pair(TEACHER, TEACHER).cross
    study = FaithfulnessStudy.from_json(shipped_block())
    stored = shipped_block()["methods"]["cam"]["student_on_teacher"]["deletion_auc"]["mean"]
    assert study.score("cam", DISTILLED, TEACHER).deletion_auc.mean == stored


def test_a_distribution_keeps_every_value_and_summarises_the_finite_ones():
    d = Distribution.of([4.0, float("nan"), 1.0, 2.0, 3.0, 0.123456])
    assert d.values == (4.0, None, 1.0, 2.0, 3.0, 0.1235) and d.n == 5
    assert d.mean == pytest.approx(10.123456 / 5) and d.median == 2.0 and (d.q25, d.q75) == (1.0, 3.0)
    assert d.finite() == [4.0, 1.0, 2.0, 3.0, 0.1235]
    empty = Distribution.of([float("nan")])
    assert empty.n == 0 and empty.mean is None and empty.to_json() == {"n": 0, "values": [None]}


def test_a_comparison_shows_a_side_only_where_its_interval_excludes_zero():
    def interval(lo, hi):
        return Comparison(mean=(lo + hi) / 2, n=8, test="paired t-test over images, df = 7", std=0.1, ci=(lo, hi),
                          p_value=0.01, p_sign_flip=0.01)
    assert interval(-0.2, -0.1).verdict("lower") == "yes"
    assert interval(-0.2, -0.1).verdict("higher") == "no: worse"
    assert interval(-0.2, 0.1).verdict("higher") == "not shown"
    assert interval(math.nan, math.nan).verdict("lower") == "not shown"


def test_the_cascade_statistic_is_the_median_correlation_of_the_last_step():
    block = shipped_block()
    study = FaithfulnessStudy.from_json(block)
    end = study.cascade_end("grad_cam", TEACHER)
    assert end.layer == block["sanity"]["grad_cam"]["teacher"][-1]["layer"]
    assert end.median_correlation == block["sanity"]["grad_cam"]["teacher"][-1]["spearman"].get("median")
    assert study.cascade("lime", TEACHER) == () and study.cascade_end("lime", TEACHER) is None


def test_a_newer_version_is_refused_naming_the_file():
    block = {**shipped_block(), "version": 3}
    with pytest.raises(StudyFormatError, match=r"phantom/results.json: faithfulness: version 3"):
        FaithfulnessStudy.from_json(block, "phantom/results.json")


@pytest.mark.parametrize("edit, field", [
    (lambda b: b.pop("slow_subset"), "faithfulness: no 'slow_subset'"),
    (lambda b: b["methods"]["cam"].pop("images"), "faithfulness.methods.cam: no 'images'"),
    (lambda b: b["methods"]["cam"]["student_on_teacher"]["deletion_auc"].pop("values"),
     "faithfulness.methods.cam.student_on_teacher.deletion_auc: no 'values'"),
    (lambda b: b["methods"]["cam"].update(smoothing_on_teacher={}),
     "faithfulness.methods.cam: unknown field(s) smoothing_on_teacher"),
    (lambda b: b["checkpoints"].update(label_only="0" * 64), "faithfulness.checkpoints: 'label_only' is not"),
    (lambda b: b["sanity"]["cam"]["student"][2].update(spearman=[]),
     "faithfulness.sanity.cam.student[2].spearman: expected an object"),
    (lambda b: b.update(images="many"), "faithfulness.images: ValueError"),
    (lambda b: b.update(test_index=[1, "x"]), "faithfulness.test_index: ValueError"),
    (lambda b: b.update(evidence_head=12), "faithfulness.evidence_head: expected a sha256"),
    (lambda b: b.update(evidence_head="abc"), "faithfulness.evidence_head: expected a sha256"),
])
def test_a_malformed_block_is_refused_naming_its_field(edit, field):
    block = copy.deepcopy(shipped_block())
    edit(block)
    with pytest.raises(StudyFormatError) as refused:
        FaithfulnessStudy.from_json(block, "phantom/results.json")
    assert str(refused.value).startswith("phantom/results.json: ") and field in str(refused.value)
    with pytest.raises(StudyFormatError, match="expected an object"):
        FaithfulnessStudy.from_json(["not", "a", "study"], "phantom/results.json")


def test_a_study_of_the_teachers_evidence_is_stale_when_the_head_changed():
    block = {**copy.deepcopy(shipped_block()), "evidence_head": "a" * 64}
    study = FaithfulnessStudy.from_json(block, "phantom/results.json")
    assert study.evidence_head == "a" * 64 and study.to_json()["evidence_head"] == "a" * 64
    same = dict(study.checkpoints)
    assert not study.is_stale(same, head_digest="a" * 64)
    assert study.is_stale(same, head_digest="b" * 64) and study.is_stale(same, head_digest=None)
    assert not study.is_stale(same)  # a caller that does not look at the head
    made_before = {k: v for k, v in shipped_block().items() if k != "evidence_head"}  # before heads were recorded
    older = FaithfulnessStudy.from_json(made_before, "phantom/results.json")
    assert older.evidence_head is None and "evidence_head" not in older.to_json()
    assert not older.is_stale(same, head_digest="b" * 64)
