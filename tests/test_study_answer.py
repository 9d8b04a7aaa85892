"""The study's answer in words follows from its numbers: a verdict word only where the removals it counts agree."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from core.roles import DISTILLED, TEACHER
from core.study_answer import answer, map_verdict
from core.study_record import FaithfulnessStudy, MethodScores, pair
from core.study_scores import CURVE_METRICS, METRICS, Comparison, CurveScores, Distribution

ROOT = Path(__file__).resolve().parent.parent
COUNTED = [m for m, spec in METRICS.items() if spec.verdict]


def shipped(name: str = "phantom") -> FaithfulnessStudy:
    return FaithfulnessStudy.from_json(json.loads((ROOT / "checkpoints" / name / "results.json").read_text())
                                       ["faithfulness"])


def interval(lo: float, hi: float) -> Comparison:
    return Comparison((lo + hi) / 2, 20, "paired t-test over images, df = 19", 0.1, (lo, hi), 0.01, 0.01)


def scores(sides: dict[str, str]) -> CurveScores:
    """Scores whose comparison with the random map says ``sides[metric]`` ("better", "worse" or "neither")."""
    def side(metric: str) -> Comparison:
        good = (-0.2, -0.1) if METRICS[metric].better == "lower" else (0.1, 0.2)
        bad = (0.1, 0.2) if METRICS[metric].better == "lower" else (-0.2, -0.1)
        return interval(*{"better": good, "worse": bad, "neither": (-0.1, 0.1)}[sides.get(metric, "neither")])
    return CurveScores({m: Distribution.of([0.5]) for m in METRICS}, {m: side(m) for m in METRICS})


def study_with(**by_method: dict[str, str]) -> FaithfulnessStudy:
    """A version 2 study whose named methods' maps (the student's; Grad-CAM the teacher's) score as given on the
    teacher's probability."""
    base = shipped()
    methods = {}
    for name, sides in by_method.items():
        explainer = TEACHER if name == "grad_cam" else DISTILLED
        methods[name] = MethodScores(20, False, {pair(explainer, TEACHER): scores(sides)})
    return dataclasses.replace(base, methods=methods, version=2)


def as_version_1(study: FaithfulnessStudy) -> FaithfulnessStudy:
    """The study as version 1 held it: per-pixel deletion and insertion only, compared with the per-pixel random map."""
    def v1(scores: CurveScores) -> CurveScores:
        return CurveScores({m: scores.scores[m] for m in CURVE_METRICS},
                           {m: c for m, c in scores.vs_random.items() if m in CURVE_METRICS})
    methods = {name: dataclasses.replace(m, curves={p: v1(c) for p, c in m.curves.items()})
               for name, m in study.methods.items()}
    return dataclasses.replace(study, methods=methods, version=1)


def test_a_version_1_study_gives_no_verdict_and_says_how_to_get_one():
    old = as_version_1(shipped())
    said = answer(old)
    assert "gives no verdict" in said and "python -m core.faithfulness_study phantom" in said
    assert map_verdict(old, "cam", DISTILLED, TEACHER) is None


def test_the_verdict_word_needs_every_counted_removal_to_agree():
    every = {m: "better" for m in COUNTED}
    study = study_with(feature_maps=every, cam={**every, COUNTED[0]: "worse"},
                       grad_cam={**every, COUNTED[1]: "neither"})
    maps = map_verdict(study, "feature_maps", DISTILLED, TEACHER)
    assert (maps.word, maps.better, maps.worse, maps.counted) == ("better", len(COUNTED), 0, len(COUNTED))
    assert map_verdict(study, "cam", DISTILLED, TEACHER).word == "depends on how pixels are removed"
    assert map_verdict(study, "grad_cam", TEACHER, TEACHER).word == "not shown"
    said = answer(study)
    counted = len(COUNTED)
    assert f"the student's average feature maps better than a random map as coarse as itself in all {counted} " \
           "ways of removing pixels" in said
    assert f"the student's CAM better than a random map as coarse as itself in {counted - 1} and worse in 1 of " \
           f"{counted} ways of removing pixels: it depends on how pixels are removed" in said
    assert f"the teacher's own Grad-CAM against a random map as coarse as itself, better in {counted - 1}, worse in " \
           f"0 and neither in 1 of {counted} ways of removing pixels: no verdict" in said


def test_per_pixel_deletion_alone_never_decides_the_verdict():
    """Per-pixel deletion to the mean colour rewards scattered maps: it is shown, not counted."""
    study = study_with(feature_maps={"deletion_auc": "worse", "insertion_auc": "worse",
                                     **{m: "better" for m in COUNTED}})
    assert map_verdict(study, "feature_maps", DISTILLED, TEACHER).word == "better"
    assert not METRICS["deletion_auc"].verdict and METRICS["road_morf"].verdict


def test_the_teachers_evidence_is_set_against_the_teachers_grad_cam_image_by_image_on_road():
    from core.study_answer import evidence_versus_grad_cam

    def road(values: list[float]) -> CurveScores:
        return CurveScores({m: Distribution.of(values) for m in METRICS}, {})

    base = study_with(grad_cam={}, cam={})
    assert evidence_versus_grad_cam(base) is None and "evidence" not in answer(base)  # no head shipped
    evidence, grad_cam = [0.30, 0.20, 0.25, 0.40], [0.28, 0.21, 0.20, 0.35]
    methods = {**base.methods,
               "teacher_evidence": MethodScores(4, False, {pair(DISTILLED, TEACHER): road(evidence)}),
               "grad_cam": MethodScores(4, False, {pair(TEACHER, TEACHER): road(grad_cam)})}
    matched = evidence_versus_grad_cam(dataclasses.replace(base, methods=methods))
    differences = [0.02, -0.01, 0.05, 0.05]  # worked by hand: evidence - grad_cam, image by image
    assert matched.evidence == sum(evidence) / 4 and matched.grad_cam == sum(grad_cam) / 4
    assert abs(matched.difference.mean - sum(differences) / 4) < 1e-12 and matched.difference.n == 4
    said = answer(dataclasses.replace(base, methods=methods))
    assert "the teacher's evidence read off the student scores 0.287 and the teacher's Grad-CAM 0.260" in said
    assert "paired difference of +0.028" in said and "4 images" in said


def test_the_readme_holds_the_teachers_evidence_to_its_targets(tmp_path):
    import numpy as np

    from core.results_record import ShippedResults
    from core.study_report import evidence_lines

    found = [ShippedResults.read(ROOT / "checkpoints" / name / "results.json") for name in ("phantom", "brain_tumor")]
    studied = [r for r in found if r.study() and "teacher_evidence" in r.study().methods]
    (tmp_path / "explainer_speed.json").write_text(json.dumps({"threads": 2, "checks": [
        {"target": "5. student teacher's evidence / student forward", "measured": 1.08},
        {"target": "5. student teacher's evidence / student forward, at the app's 1 thread(s)", "measured": 1.21},
        {"target": "5. teacher Grad-CAM / student teacher's evidence", "measured": 11.0}]}))
    (tmp_path / "evidence_dependence_phantom.json").write_text(json.dumps(
        {"dataset": "phantom", "images": 200, "median_abs_spearman_between_heads": 0.25}))
    lines = evidence_lines(found, tmp_path)
    assert ("- Cost: 1.08 student forward passes at 2 threads (target at most 1.15, met), 1.21 at the app's 1 "
            "thread(s) (**not met**)") in "\n".join(lines)
    assert "median |Spearman| 0.250 (target at most 0.2, **not met**" in "\n".join(lines)
    for r in studied:  # the mean ROAD of each map set on the teacher's score, as stored image by image
        study = r.study()
        road = [np.nanmean([np.nan if v is None else v for v in study.score(m, e, TEACHER).scores[
            "road_combined"].values]) for m, e in (("teacher_evidence", DISTILLED), ("grad_cam", TEACHER))]
        line = next(x for x in lines if x.startswith(f"- **{r.dataset}**"))
        assert f"ROAD {road[0]:.3f} against the teacher's Grad-CAM's {road[1]:.3f}" in line
    assert evidence_lines([], tmp_path / "nothing") == []


def test_where_lesions_are_known_the_readme_holds_the_teachers_evidence_to_the_pointing_game(tmp_path):
    from core.results_record import ShippedResults
    from core.study_report import EVIDENCE_TARGETS, evidence_lines

    phantom = ShippedResults.read(ROOT / "checkpoints" / "phantom" / "results.json")
    methods = phantom.study().methods
    ours = methods["teacher_evidence"].localisation[DISTILLED].hit.mean
    theirs = methods["grad_cam"].localisation[TEACHER].hit.mean
    [line] = [x for x in evidence_lines([phantom], tmp_path) if x.startswith("- **phantom**")]
    ok = ours >= EVIDENCE_TARGETS["pointing"] and ours > theirs
    # the study points within 9 px at 128 px (15 at 224); the target is at 2 px, so 9 px can only fail it
    verdict = "**not met** even within 9 px" if not ok else "not judged: measured within 9 px"
    assert (f"pointing game within 9 px {ours:.2f} against the teacher's Grad-CAM's {theirs:.2f} (target at 2 px: "
            f"at least {EVIDENCE_TARGETS['pointing']} and above it; {verdict})") in line
    brain = ShippedResults.read(ROOT / "checkpoints" / "brain_tumor" / "results.json")
    assert not any("pointing game" in x for x in evidence_lines([brain], tmp_path))  # no lesion masks there


def test_the_readme_reports_agreement_with_the_teachers_occlusion_beside_its_own_grad_cams(tmp_path):
    from core.study_report import evidence_lines

    (tmp_path / "evidence_agreement.json").write_text(json.dumps({"datasets": {
        "brain_tumor": {"images": 40, "with_teacher_occlusion": {"teacher_evidence": 0.412, "grad_cam": 0.538,
                                                                  "cam": 0.3, "feature_maps": 0.1},
                        "head_with_teacher_grad_cam": 0.8},
        "alzheimer": {"images": 38, "with_teacher_occlusion": {"teacher_evidence": -0.05, "grad_cam": 0.2,
                                                                "cam": 0.3, "feature_maps": 0.1},
                      "head_with_teacher_grad_cam": 0.6}}}))
    [line] = [x for x in evidence_lines([], tmp_path) if "occlusion" in x]
    assert "brain_tumor 0.41 (the teacher's own Grad-CAM 0.54, 40 images)" in line
    assert "alzheimer -0.05 (the teacher's own Grad-CAM 0.20, 38 images)" in line
    (tmp_path / "evidence_agreement.json").write_text("{not json")
    assert evidence_lines([], tmp_path) == []
