"""Faithfulness page: the shipped study drawn with its baselines, stale studies flagged, images linked."""

from __future__ import annotations

import json
import shutil

import pytest

from core import checkpoints
from core.faithfulness_study import StudyConfig, read_study, run_study, write_study
from core.roles import DISTILLED, TEACHER
from explorer import faithfulness_view as fv
from tests.apptest_support import (ROOT, as_read, assert_ok, fresh_streamlit_caches, has_chart,  # noqa: F401
                                   open_page, texts)
from tests.support import single_thread


@pytest.fixture(scope="module")
def study_root(tmp_path_factory):
    """A checkpoint root holding the shipped phantom models and a small real study of them."""
    root = tmp_path_factory.mktemp("ckpt")
    shutil.copytree(ROOT / "checkpoints" / "phantom", root / "phantom", ignore=shutil.ignore_patterns("timing"))
    with single_thread():
        study = run_study(StudyConfig("phantom", checkpoints=str(root), images=8, slow_images=4, sanity_images=1,
                                      methods=("feature_maps", "cam", "occlusion"), steps=3, patches=4,
                                      road_fractions=(0.3, 0.7)))
    write_study(study, root, "phantom")
    return root


@pytest.fixture
def study(study_root):
    return read_study(study_root, "phantom")


def test_distributions_hold_every_method_and_baseline_for_each_scorer(study):
    own = fv.distributions(study, "deletion_auc", "own")
    assert set(own) == {"Teacher's map, teacher's score", "Student's map, student's score"}
    for values in own.values():
        # the random maps as coarse as each method's (CAM: the teacher's 4 x 4, the student's 16 x 16; occlusion's
        # 15 windows a side, scored on occlusion's images only) beside the per-pixel one and the priors
        assert set(values) == {"feature_maps", "cam", "occlusion", "random", "centre", "mask_prior", "random_4",
                               "random_16", "random_15"}
        assert len(values["cam"]) == 8 and len(values["occlusion"]) == 4 and len(values["random_15"]) == 4
    cross = fv.distributions(study, "deletion_auc", "cross")
    assert set(cross) == {"Student's map, teacher's score", "Teacher's map, student's score"}
    # a baseline's cross series is its score on the scoring model: the own series of that model
    assert cross["Student's map, teacher's score"]["random"] == own["Teacher's map, teacher's score"]["random"]
    agreement = fv.distributions(study, "agreement_spearman")
    assert set(agreement["Teacher vs student"]) == {"feature_maps", "cam", "occlusion"}
    assert "pointing" in fv.available_metrics(study)


def test_comparison_rows_state_the_interval_and_a_verdict(study):
    own = fv.comparison_rows(study, "deletion_auc", "own")
    assert {r["method"] for r in own} >= {"CAM (class activation map)", "Centre prior (baseline)"}
    rows = fv.comparison_rows(study, "deletion_auc", "cross")  # a baseline has no other model to cross to
    assert {r["method"] for r in rows} == {"Average feature maps (all layers)", "CAM (class activation map)",
                                           "Occlusion"}
    assert all(r["better than random"] in {"yes", "no: worse", "not shown"} for r in rows)
    versus = study.score("cam", DISTILLED, TEACHER).vs_random["deletion_auc"]
    cam = next(r for r in rows if r["method"] == "CAM (class activation map)"
               and r["scored"] == "Student's map, teacher's score")
    assert cam["95% interval"] == f"[{versus.ci[0]:.3f}, {versus.ci[1]:.3f}]" and cam["images"] == 8
    assert fv.comparison_rows(study, "agreement_iou") == []


def test_extremes_are_ordered_and_name_test_images(study):
    found = fv.extremes(study, "cam", "deletion_auc", fv.curve_series(TEACHER, TEACHER), k=2)
    best, worst = [c["value"] for c in found["best"]], [c["value"] for c in found["worst"]]
    assert best == sorted(best) and worst == sorted(worst, reverse=True) and best[0] <= worst[0]
    assert all(c["index"] in study.test_index for c in found["best"] + found["worst"])
    slow = fv.extremes(study, "occlusion", "insertion_auc", fv.curve_series(DISTILLED, DISTILLED), k=4)
    picked = {study.test_index.index(c["index"]) for c in slow["best"]}
    assert picked <= set(study.slow_subset)  # only images the slow method was run on
    hits = fv.extremes(study, "cam", "pointing", fv.LOCALISED[0], k=8)  # the teacher's maps, lesion images only
    assert len(hits["best"]) == sum(c != 0 for c in study.true_class)


def test_stale_when_a_checkpoint_changed(study):
    same = dict(study.checkpoints)
    assert not study.is_stale(same)
    assert study.is_stale({**same, DISTILLED: "0" * 64})
    assert study.is_stale({**same, TEACHER: None})
    shipped = {"teacher": same[TEACHER], "student": same[DISTILLED], "student_label_only": "0" * 64}
    assert not fv.scored_other_checkpoints(study, shipped)  # the label-only student is not studied
    assert fv.scored_other_checkpoints(study, {**shipped, "teacher": None})
    # the evidence head the study read its maps off, against the one shipped now
    from dataclasses import replace
    with_head = replace(study, evidence_head="a" * 64)
    assert not fv.scored_other_checkpoints(with_head, shipped, "a" * 64)
    assert fv.scored_other_checkpoints(with_head, shipped, "b" * 64) and fv.scored_other_checkpoints(with_head, shipped)


def test_page_draws_the_study_and_links_an_image_to_explanations(study_root, monkeypatch, study):
    monkeypatch.setenv("KD_CHECKPOINTS", str(study_root))
    at = open_page("faithfulness")
    assert_ok(at)
    assert has_chart(at, "faith_boxes") and has_chart(at, "faith_cascade_chart")
    assert "8 test images (4 for the slow methods)" in texts(at)
    # the answer first, in the words the study's numbers give (the same sentence as the README's)
    from core.study_answer import answer as study_answer

    assert study_answer(study) in as_read(texts(at)).replace("**", "")
    assert "Does the student's map explain the teacher's prediction? On 8 phantom test images" in as_read(texts(at))
    assert not any("other checkpoints" in w.value for w in at.warning)  # it scored exactly these
    at.selectbox(key="faith_metric").set_value("pointing").run()
    assert_ok(at) and has_chart(at, "faith_boxes")
    assert at.query_params["metric"] == "pointing"
    at.selectbox(key="faith_metric").set_value("deletion_auc").run()
    at.radio(key="faith_scoring").set_value("cross").run()
    assert_ok(at)
    assert at.dataframe[0].value["scored"].str.contains("teacher's score").any()
    worst = fv.extremes(study, "feature_maps", "deletion_auc", fv.curve_series(DISTILLED, TEACHER))["worst"][0]["index"]
    at.button(key=f"faith_open_worst_{worst}").click().run()
    assert_ok(at)
    assert at.session_state["image"] == worst and at.session_state["method"] == ["feature_maps"]
    assert "Explanations side by side" in texts(at)


def open_with_results(source, dest, monkeypatch, edit):
    """The Faithfulness page over a copy of ``source`` (a phantom checkpoint folder) whose results.json ``edit``
    changed in place."""
    shutil.copytree(source, dest / "phantom", ignore=shutil.ignore_patterns("timing"))
    path = dest / "phantom" / "results.json"
    results = json.loads(path.read_text())
    edit(results)
    path.write_text(json.dumps(results))
    monkeypatch.setenv("KD_CHECKPOINTS", str(dest))
    at = open_page("faithfulness")
    assert_ok(at)
    return at


def test_page_flags_a_study_of_other_checkpoints(study_root, tmp_path, monkeypatch):
    at = open_with_results(study_root / "phantom", tmp_path, monkeypatch,
                           lambda r: r["faithfulness"]["checkpoints"].update(teacher="f" * 64))
    assert any("other checkpoints" in w.value for w in at.warning)


def test_page_without_a_study_says_how_to_make_one(tmp_path, monkeypatch):
    at = open_with_results(ROOT / "checkpoints" / "phantom", tmp_path, monkeypatch,
                           lambda r: r.pop("faithfulness", None))
    assert any("core.faithfulness_study phantom" in i.value for i in at.info)


def test_page_says_plainly_when_a_study_cannot_be_read(study_root, tmp_path, monkeypatch):
    at = open_with_results(study_root / "phantom", tmp_path, monkeypatch,
                           lambda r: r["faithfulness"].update(version=3))
    notice = as_read(" ".join(w.value for w in at.warning))  # the reason quotes the file, shown as text
    assert "cannot be read" in notice and "phantom/results.json: faithfulness: version 3" in notice
    assert not at.exception and not has_chart(at, "faith_boxes")


def test_page_draws_a_study_written_where_no_reproduce_ran(study_root, tmp_path, monkeypatch):
    # core.faithfulness_study writes a results.json of the study alone then: the page reads it all the same
    at = open_with_results(study_root / "phantom", tmp_path, monkeypatch,
                           lambda r: [r.pop(k) for k in list(r) if k not in ("dataset", "faithfulness")])
    assert set(json.loads((tmp_path / "phantom" / "results.json").read_text())) == {"dataset", "faithfulness"}
    assert has_chart(at, "faith_boxes") and "8 test images (4 for the slow methods)" in texts(at)
    assert not any("cannot be read" in w.value or "other checkpoints" in w.value for w in at.warning)


def test_readme_renders_the_study_with_its_baselines_and_flags_a_stale_one(study_root, tmp_path):
    from core.results import faithfulness_lines
    from core.results_record import ShippedResults

    folder = study_root / "phantom"
    block = json.loads((folder / "results.json").read_text())["faithfulness"]
    study = ShippedResults.read(folder / "results.json").study()
    lines = faithfulness_lines(study, folder)
    text = "\n".join(lines)
    assert "8 test images, 4 for the slow methods" in text and "earlier checkpoints" not in text
    rows = [line for line in lines if line.startswith("| ")]
    assert any(r.startswith("| CAM (class activation map) |") for r in rows)
    assert any(r.startswith("| Random map per pixel (baseline) |") for r in rows)
    assert any(r.startswith("| Mean training mask (baseline) |") for r in rows)  # the phantom's lesion-prior baseline
    size = checkpoints.load_meta(folder / "teacher.pt").input_size
    assert f"pointing game within {round(15 * size / 224)} px" in text  # 15 px at 224 px, scaled to the input
    # the cross column of CAM is the student's map on the teacher's score, as stored
    cam = next(r for r in rows if r.startswith("| CAM (class activation map) |")).split(" | ")
    assert cam[3].split(" ")[0] == f"{block['methods']['cam']['student_on_teacher']['deletion_auc']['mean']:.3f}"
    shutil.copytree(folder, tmp_path / "phantom")
    (tmp_path / "phantom" / "student.pt").write_bytes(b"another checkpoint")
    assert "computed for earlier checkpoints" in "\n".join(faithfulness_lines(study, tmp_path / "phantom"))


def with_teacher_evidence(results: dict) -> None:
    """A study whose student had its evidence head: its maps the student's alone (here the CAM's numbers)."""
    block = results["faithfulness"]
    cam = block["methods"]["cam"]
    block["methods"]["teacher_evidence"] = {
        **{k: v for k, v in cam.items() if k not in ("teacher", "teacher_on_student")},
        **{k: {"student": cam[k]["student"]} for k in ("seconds", "localisation", "versus", "map_side")}}
    for part in ("sanity", "unrelated"):
        block[part]["teacher_evidence"] = {"student": block[part]["cam"]["student"]}
    block["config"]["methods"].append("teacher_evidence")


def test_page_draws_the_teachers_evidence_which_has_the_students_maps_only(study_root, tmp_path, monkeypatch):
    at = open_with_results(study_root / "phantom", tmp_path, monkeypatch, with_teacher_evidence)
    assert "teacher's evidence read off the student" in as_read(texts(at))  # in the answer
    for scoring in ("own", "cross"):
        at.radio(key="faith_scoring").set_value(scoring).run()
        assert_ok(at)
        assert fv.method_label("teacher_evidence") in set(at.dataframe[0].value["method"])
    at.selectbox(key="faith_metric").set_value("pointing").run()
    assert_ok(at)
    at.selectbox(key="faith_cascade").set_value("teacher_evidence").run()
    assert_ok(at) and has_chart(at, "faith_cascade_chart")
    at.selectbox(key="faith_extreme_method").set_value("teacher_evidence").run()
    assert_ok(at)
    for series in at.selectbox(key="faith_extreme_series").options:  # the teacher's series holds no map of it
        at.selectbox(key="faith_extreme_series").set_value(series).run()
        assert_ok(at)
