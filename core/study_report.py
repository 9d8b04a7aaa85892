"""The faithfulness study (`core.faithfulness_study`) as docs/results.md gives it: each dataset's tables and the answer
across datasets to "does the student's explanation explain the teacher?". Rendered by `core.results`."""

from __future__ import annotations

import json
from pathlib import Path

from core.explainers import EXPLAINERS
from core.layout import REPO_ROOT, checkpoint_file
from core.metadata import file_sha256
from core.metrics import mcnemar_test
from core.results_record import ShippedResults
from core.roles import DISTILLED, STUDIED, TEACHER, Role
from core.study_answer import answer, evidence_versus_grad_cam, map_verdict
from core.study_record import FaithfulnessStudy
from core.study_scores import CurveScores, matched_side
from core.teacher_evidence import HEAD_FILE

BASELINE_NAMES = {"random": "Random map per pixel", "centre": "Centre prior", "mask_prior": "Mean training mask"}


def method_name(key: str) -> str:
    """A method's readable name (its explainer's title; the baselines and the bare forward pass by name)."""
    if key in EXPLAINERS:
        return EXPLAINERS[key].title
    if (side := matched_side(key)) is not None:  # drawn at a map's own side (`core.study_scoring`)
        return f"Random map at {side} x {side}"
    return {"forward": "Forward pass (prediction only)", **BASELINE_NAMES}.get(key, key)


def method_label(key: str) -> str:
    """`method_name`, with "(baseline)" after a map made without a model (the README's tables and the app's)."""
    baseline = key in BASELINE_NAMES or matched_side(key) is not None
    return f"{method_name(key)} (baseline)" if baseline else method_name(key)


def _mean(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _versus(scores: CurveScores | None, metric: str, better: str) -> str:
    """``mean`` plus a mark when its paired 95% interval against the random map excludes 0 the right way."""
    if scores is None:
        return "–"
    c = scores.vs_random.get(metric)
    mark = {"yes": " ✓", "no: worse": " ✗"}.get(c.verdict(better), "") if c else ""
    return _mean(getattr(scores, metric).mean) + mark


def faithfulness_lines(study: FaithfulnessStudy | None, meta_dir: Path) -> list[str]:
    """The faithfulness study of this dataset's checkpoints (`core.faithfulness_study`), if shipped (``study``: the
    one stored in the results.json in ``meta_dir``, `ShippedResults.study`); flagged when those checkpoints have
    changed since."""
    if study is None:
        return []
    shipped = {r: checkpoint_file(meta_dir, r) for r in study.checkpoints}
    head = meta_dir / HEAD_FILE
    stale = study.is_stale({r: file_sha256(path) if path.is_file() else None for r, path in shipped.items()},
                           head_digest=file_sha256(head) if head.is_file() else None)
    cfg = study.config
    lines = ["", f"Faithfulness (`python -m core.faithfulness_study {cfg.dataset}`; {study.images} test "
             f"images, {len(study.slow_subset)} for the slow methods, {cfg.steps} steps, seed {cfg.seed}"
             + ("; **computed for earlier checkpoints**" if stale else "") + "). Deletion AUC (lower is better) "
             "and insertion AUC (higher is better) of the predicted class's probability; 'student → teacher': "
             "the student's map perturbing the teacher's score. ✓ / ✗: better / worse than the random map on the "
             "same images (paired 95% t interval over images excludes 0). Agreement: of the two models' maps (the "
             "teacher's evidence read off the student: with the teacher's Grad-CAM it learnt).", "",
             "| map | deletion: teacher | student | student → teacher | insertion: teacher | student "
             "| student → teacher | agreement (Spearman, median) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, out in study.methods.items():
        agree = out.agreement.spearman.median if out.agreement else None
        series = (out.score(TEACHER, TEACHER), out.score(DISTILLED, DISTILLED), out.score(DISTILLED, TEACHER))
        cells = [_versus(scores, metric, better) for metric, better in (("deletion_auc", "lower"),
                                                                         ("insertion_auc", "higher"))
                 for scores in series]
        lines.append(f"| {method_label(name)} | " + " | ".join(cells) + f" | {'–' if agree is None else f'{agree:.2f}'} |")
    lines += _verdict_lines(study)
    loc = [(name, out.localisation) for name, out in study.methods.items() if out.localisation is not None]
    if loc:
        lines += ["", f"Lesion masks (pointing game within {study.tolerance_px} px, energy in the lesion, top-5% "
                  "IoU; means over lesion images):", "", "| map | teacher hit | energy | IoU | student hit | energy "
                  "| IoU |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, by_role in loc:
            cells = [_mean(getattr(by_role[role], key).mean) if role in by_role else "–" for role in STUDIED
                     for key in ("hit", "energy", "iou")]  # the teacher's evidence: the student's maps only
            lines.append(f"| {method_name(name)} | " + " | ".join(cells) + " |")
    return lines


def _verdict_cell(study: FaithfulnessStudy, name: str, explainer: Role, scorer: Role) -> str:
    scores, verdict = study.score(name, explainer, scorer), map_verdict(study, name, explainer, scorer)
    if scores is None or verdict is None:
        return "–"
    road = scores.scores["road_combined"].mean
    return f"{verdict.word} ({verdict.better}✓ {verdict.worse}✗ of {verdict.counted}); ROAD {_mean(road)}"


def _verdict_lines(study: FaithfulnessStudy) -> list[str]:
    """Version 2: each map against the random map as coarse as itself, over the removals the verdict counts (whole
    patches to and from the mean colour and a blurred image, ROAD in both orders), with ROAD's combined score."""
    if not any(map_verdict(study, name, r, r) for name in study.methods for r in STUDIED):
        return []
    lines = ["", f"Against a random map as coarse as the map (drawn at the map's own side and upsampled as the maps "
             f"are): ✓ / ✗ count the removals whose paired 95% interval says better / worse (patches of a "
             f"{study.config.patches} x {study.config.patches} grid deleted to and inserted from the mean colour and "
             f"a blurred image, ROAD most- and least-relevant first at {_fractions(study)}); the word only where "
             "they agree. ROAD: the combined score ((LeRF - MoRF) / 2, higher is better). "
             + answer(study), "",
             "| map | teacher's map, teacher's score | student's map, student's score | student's map, teacher's "
             "score |", "| --- | --- | --- | --- |"]
    for name, out in study.methods.items():
        if out.baseline:
            continue
        cells = [_verdict_cell(study, name, e, s) for e, s in ((TEACHER, TEACHER), (DISTILLED, DISTILLED),
                                                                (DISTILLED, TEACHER))]
        lines.append(f"| {method_name(name)} | " + " | ".join(cells) + " |")
    road = study.environment.get("road_seconds_per_image")
    if road is not None:
        env = study.environment
        lines += ["", f"ROAD took {road:.2f} s per image and map set (both orders, imputation included); the whole "
                  f"study {env.get('study_seconds', 0) / 60:.0f} minutes on {env.get('cpu', 'this machine')} with "
                  f"{env.get('threads', '?')} threads (torch {env.get('torch', '?')})."]
    return lines


def _fractions(study: FaithfulnessStudy) -> str:
    return ", ".join(f"{f:.0%}" for f in study.config.road_fractions or ())


def readme_answer_lines(found: list[ShippedResults]) -> str:
    """The README's faithfulness answer: the study's sentence (`core.study_answer.answer`, the words the Faithfulness
    page gives) for each dataset in ``found`` that ships one."""
    lines = [f"- **{r.dataset}**: {answer(study)}" for r in found if (study := r.study()) is not None]
    if not lines:
        return "No faithfulness study yet: run `python -m core.faithfulness_study phantom`.\n"
    evidence = evidence_lines(found)
    return "\n".join(lines) + "\n" + ("\nThe teacher's evidence read off the student, against its targets:\n\n"
                                      + "\n".join(evidence) + "\n" if evidence else "")


BENCH_RESULTS = REPO_ROOT / "benchmarks" / "results"
# The targets the teacher's evidence is held to: ROAD within this of the teacher's Grad-CAM (or better), this
# median Spearman with the teacher's Grad-CAM, this cost in student forwards, and at most this median |Spearman|
# between heads learnt from the trained and from a re-initialised teacher; where lesions are known (the phantom), a
# pointing-game hit rate at least this and above the teacher's Grad-CAM's.
EVIDENCE_TARGETS = {"road_gap": 0.01, "spearman": 0.7, "cost": 1.15, "dependence": 0.2, "pointing": 0.9}
POINTING_PX = 2  # the pointing-game target's tolerance


def evidence_lines(found: list[ShippedResults], bench: Path = BENCH_RESULTS) -> list[str]:
    """Markdown bullets: each study with the student's evidence head (ROAD against the teacher's Grad-CAM, agreement
    with it), the datasets whose study has none yet, its cost (benchmarks/explainer_speed.py) and whether it depends
    on the teacher (benchmarks/evidence_dependence.py), its agreement with the teacher's occlusion
    (benchmarks/evidence_agreement.py). Empty when none of these is measured."""
    met = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    lines, waiting = [], []
    for r in found:
        study = r.study()
        matched = evidence_versus_grad_cam(study) if study is not None else None
        if matched is None:
            waiting.append(r.dataset)
            continue
        d, agree = matched.difference, study.methods["teacher_evidence"].agreement
        line = (f"- **{r.dataset}** ({d.n} test images): ROAD {matched.evidence:.3f} against the teacher's Grad-CAM's "
                f"{matched.grad_cam:.3f}, paired difference {d.mean:+.3f} (95% interval {d.ci[0]:+.3f} to "
                f"{d.ci[1]:+.3f}; target: within {EVIDENCE_TARGETS['road_gap']} or better, "
                f"{met(d.mean >= -EVIDENCE_TARGETS['road_gap'])})")
        if agree is not None:
            line += (f"; median Spearman with the teacher's Grad-CAM {agree.spearman.median:.2f} (target "
                     f"{EVIDENCE_TARGETS['spearman']}, {met(agree.spearman.median >= EVIDENCE_TARGETS['spearman'])})")
        ours = (study.methods["teacher_evidence"].localisation or {}).get(DISTILLED)
        theirs = (study.methods["grad_cam"].localisation or {}).get(TEACHER) if "grad_cam" in study.methods else None
        if ours is not None and theirs is not None:
            hit, grad_cam_hit = ours.hit.mean, theirs.hit.mean
            within = study.tolerance_px
            ok = hit >= EVIDENCE_TARGETS["pointing"] and hit > grad_cam_hit
            # the target is at POINTING_PX; a looser tolerance can show it missed, never that it is met
            verdict = met(ok) if within <= POINTING_PX else (
                f"**not met** even within {within} px" if not ok else f"not judged: measured within {within} px")
            line += (f"; pointing game within {within} px {hit:.2f} against the teacher's Grad-CAM's "
                     f"{grad_cam_hit:.2f} (target at {POINTING_PX} px: at least {EVIDENCE_TARGETS['pointing']} and "
                     f"above it; {verdict})")
        lines.append(line + ".")
    if lines and waiting:
        lines.append(f"- {', '.join(waiting)}: no study with the student's evidence head yet "
                     "(`python -m core.faithfulness_study DATASET` studies it where the head is shipped).")
    speed = _read_json(bench / "explainer_speed.json")
    costs = [c for c in (speed or {}).get("checks", [])
             if c.get("target", "").startswith("5. student teacher's evidence / student forward")]
    if costs:
        cost, limit = costs[0]["measured"], EVIDENCE_TARGETS["cost"]
        line = (f"- Cost: {cost:.2f} student forward passes at {speed.get('threads', '?')} threads (target at most "
                f"{limit}, {met(cost <= limit)})")
        for other in costs[1:]:  # the same measure at the app's own threads
            at = other["target"].rpartition(", at ")[2]
            line += f", {other['measured']:.2f} at {at} ({met(other['measured'] <= limit)})"
        lines.append(line + "; `benchmarks/explainer_speed.py`, random weights at 224 px.")
    dependence = _read_json(bench / "evidence_dependence_phantom.json")
    if dependence:
        x = dependence["median_abs_spearman_between_heads"]
        lines.append(f"- Depends on the teacher ({dependence['dataset']}, {dependence['images']} test images): the "
                     f"maps of heads learnt from the shipped and from a re-initialised teacher differ at median "
                     f"|Spearman| {x:.3f} (target at most {EVIDENCE_TARGETS['dependence']}, "
                     f"{met(x <= EVIDENCE_TARGETS['dependence'])}; `benchmarks/evidence_dependence.py`).")
    agreement = _read_json(bench / "evidence_agreement.json")
    if agreement and agreement.get("datasets"):
        each = [f"{name} {d['with_teacher_occlusion']['teacher_evidence']:.2f} (the teacher's own Grad-CAM "
                f"{d['with_teacher_occlusion']['grad_cam']:.2f}, {d['images']} images)"
                for name, d in agreement["datasets"].items()]
        lines.append("- Agreement with a map of the teacher it never learnt from, the teacher's occlusion (median "
                     f"Spearman, test images): {'; '.join(each)} (`benchmarks/evidence_agreement.py`).")
    return lines


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _pair(scores: CurveScores | None) -> str:
    if scores is None:
        return "–"
    return f"{_versus(scores, 'deletion_auc', 'lower')} / {_versus(scores, 'insertion_auc', 'higher')}"


def _hits(study: FaithfulnessStudy, name: str, role: Role) -> tuple[float | None, ...]:
    return study.methods[name].localisation[role].hit.values


def hit_versus_prior(study: FaithfulnessStudy, name: str, role: Role) -> str:
    """A map's pointing-game hit rate against the mean training mask's on the same lesion images, with McNemar's
    exact test on the images where exactly one of the two hits."""
    pairs = [(a, b) for a, b in zip(_hits(study, name, role), _hits(study, "mask_prior", role))
             if a is not None and b is not None]
    hit, prior = ([int(a) for a, _ in pairs], [int(b) for _, b in pairs])
    test = mcnemar_test([1] * len(pairs), hit, prior)
    side = "not distinguishable from"
    if test["p_value"] < 0.05 and sum(hit) != sum(prior):
        side = "above" if sum(hit) > sum(prior) else "below"
    n = max(len(pairs), 1)
    return (f"{sum(hit) / n:.2f} against {sum(prior) / n:.2f} "
            f"(McNemar p = {test['p_value']:.2g}, {test['n_discordant']} discordant of {len(pairs)}: {side} the prior)")


def _cascade_end(study: FaithfulnessStudy, name: str, role: Role) -> str:
    """The cascade's statistic at its last step (every layer re-initialised), with its n."""
    end = study.cascade_end(name, role)
    if end is None or end.median_correlation is None:
        return "–"
    return f"{end.median_correlation:.2f} ({end.spearman.n})"


def faithfulness_answer_lines(found: list[ShippedResults]) -> list[str]:
    """The study's answer across datasets: the student's cheap maps perturbing the *teacher's* score (``found``:
    each dataset's results; a row for each official split that holds a study)."""
    studied = [(r.dataset, study) for r in found if r.protocol == "official" and (study := r.study()) is not None]
    if not studied:
        return []
    lines = ["", "Does the student's explanation explain the teacher? The student's one-pass maps used to delete "
             "and insert on the teacher's score (`python -m core.faithfulness_study DATASET`), beside the teacher's "
             "own Grad-CAM and the random map on the same images (deletion AUC lower, insertion AUC higher is "
             "better; ✓ / ✗: better / worse than the random map, paired 95% t interval over images):", "",
             "| dataset | images | student's feature maps → teacher | student's CAM → teacher | teacher's Grad-CAM "
             "| random map |", "| --- | --- | --- | --- | --- | --- |"]
    for dataset, study in studied:
        cells = [_pair(study.score(name, explainer, TEACHER)) for name, explainer in
                 (("feature_maps", DISTILLED), ("cam", DISTILLED), ("grad_cam", TEACHER), ("random", TEACHER))]
        lines.append(f"| {dataset} | {study.images} | " + " | ".join(cells) + " |")
    said = [f"- **{dataset}**: {answer(study)}" for dataset, study in studied if study.version >= 2]
    if said:
        lines += ["", "In words, from the removals that treat a coarse map fairly (whole patches with two substrates "
                  "and ROAD, against a random map as coarse as the map; per-pixel deletion to the mean colour, the "
                  "table above, rewards scattered maps and decides nothing):", "", *said]
    lines += ["", "Does the map depend on what the model learnt? The model-randomisation cascade (every layer "
              "re-initialised, top layer first; the Faithfulness page shows each step): the median rank correlation "
              "of the map with the trained model's map at the last step, over the images where it is finite (their "
              "number in brackets; a map that turns constant, as Grad-CAM often does on a random DenseNet, has none, "
              "and – means no image kept a non-constant map). Near 1, the map looks the same without the learnt "
              "weights: it shows the image more than the model's evidence.", "",
              "| dataset | student's feature maps | student's CAM | teacher's feature maps | teacher's Grad-CAM |",
              "| --- | --- | --- | --- | --- |"]
    for dataset, study in studied:
        cells = [_cascade_end(study, name, role) for name, role in
                 (("feature_maps", DISTILLED), ("cam", DISTILLED), ("feature_maps", TEACHER), ("grad_cam", TEACHER))]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    for dataset, study in studied:
        prior = study.methods.get("mask_prior")
        if prior is None or prior.localisation is None:
            continue
        named = [("the teacher's Grad-CAM", "grad_cam", TEACHER), ("the student's CAM", "cam", DISTILLED),
                 ("the student's average feature maps", "feature_maps", DISTILLED)]
        parts = [f"{label} {hit_versus_prior(study, name, role)}" for label, name, role in named
                 if name in study.methods]
        lines += ["", f"On the {dataset}'s lesion images, pointing game within {study.tolerance_px} px "
                  f"against the mean training mask: " + "; ".join(parts) + "."]
    return lines + [""]  # the dataset sections' headings follow
