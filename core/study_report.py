"""The README's text of the faithfulness study (`core.faithfulness_study`): each dataset's tables and the answer
across datasets to "does the student's explanation explain the teacher?". Rendered by `core.results`."""

from __future__ import annotations

from pathlib import Path

from core.explainers import EXPLAINERS
from core.faithfulness_study import is_stale, verdict
from core.metadata import file_sha256
from core.metrics import mcnemar_test

BASELINE_NAMES = {"random": "Random map", "centre": "Centre prior", "mask_prior": "Mean training mask"}


def method_name(key: str) -> str:
    """A method's readable name (its explainer's title; the baselines and the bare forward pass by name)."""
    if key in EXPLAINERS:
        return EXPLAINERS[key].title
    return {"forward": "Forward pass (prediction only)", **BASELINE_NAMES}.get(key, key)


def _mean(scores: dict, key: str) -> str:
    value = scores.get(key, {}).get("mean")
    return "–" if value is None else f"{value:.3f}"


def _versus(scores: dict, key: str, better: str) -> str:
    """``mean`` plus a mark when its paired 95% interval against the random map excludes 0 the right way."""
    c = scores.get("vs_random", {}).get(key)
    mark = {"yes": " ✓", "no: worse": " ✗"}.get(verdict(c, better), "") if c else ""
    return _mean(scores, key) + mark


def faithfulness_lines(study: dict | None, meta_dir: Path) -> list[str]:
    """The faithfulness study of this dataset's checkpoints (`core.faithfulness_study`), if shipped."""
    if not study:
        return []
    stale = is_stale(study, {role: file_sha256(meta_dir / f"{role}.pt") if (meta_dir / f"{role}.pt").is_file()
                             else None for role in study["checkpoints"]})
    cfg = study["config"]
    lines = ["", f"Faithfulness (`python -m core.faithfulness_study {cfg['dataset']}`; {study['images']} test "
             f"images, {len(study['slow_subset'])} for the slow methods, {cfg['steps']} steps, seed {cfg['seed']}"
             + ("; **computed for earlier checkpoints**" if stale else "") + "). Deletion AUC (lower is better) "
             "and insertion AUC (higher is better) of the predicted class's probability; 'student → teacher': "
             "the student's map perturbing the teacher's score. ✓ / ✗: better / worse than the random map on the "
             "same images (paired 95% t interval over images excludes 0).", "",
             "| map | deletion: teacher | student | student → teacher | insertion: teacher | student "
             "| student → teacher | agreement (Spearman, median) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, out in study["methods"].items():
        cross = out.get("student_on_teacher", out["teacher"])
        agree = out.get("agreement", {}).get("spearman", {}).get("median")
        series = (out["teacher"], out["student"], cross)
        cells = [_versus(scores, metric, better) for metric, better in (("deletion_auc", "lower"),
                                                                         ("insertion_auc", "higher"))
                 for scores in series]
        label = f"{method_name(name)} (baseline)" if out.get("baseline") else method_name(name)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'–' if agree is None else f'{agree:.2f}'} |")
    loc = [(name, out["localisation"]) for name, out in study["methods"].items() if "localisation" in out]
    if loc:
        lines += ["", f"Lesion masks (pointing game within {study['tolerance_px']} px, energy in the lesion, top-5% "
                  "IoU; means over lesion images):", "", "| map | teacher hit | energy | IoU | student hit | energy "
                  "| IoU |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, by_role in loc:
            cells = [_mean(by_role[role], key) for role in ("teacher", "student") for key in ("hit", "energy", "iou")]
            lines.append(f"| {method_name(name)} | " + " | ".join(cells) + " |")
    return lines


def _pair(scores: dict) -> str:
    return f"{_versus(scores, 'deletion_auc', 'lower')} / {_versus(scores, 'insertion_auc', 'higher')}"


def _hits(study: dict, name: str, role: str) -> list[float]:
    return study["methods"][name]["localisation"][role]["hit"]["values"]


def hit_versus_prior(study: dict, name: str, role: str) -> str:
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


def _cascade_end(sanity: dict, name: str, role: str) -> str:
    """The median rank correlation at a sanity cascade's last step (every layer re-initialised), with its n."""
    steps = sanity.get(name, {}).get(role) or []
    last = steps[-1].get("spearman", {}) if steps else {}
    return "–" if last.get("median") is None else f"{last['median']:.2f} ({last['n']})"


def faithfulness_answer_lines(found: list[dict]) -> list[str]:
    """The study's answer across datasets: the student's cheap maps perturbing the *teacher's* score."""
    studied = [r for r in found if r.get("faithfulness") and r.get("protocol", "official") == "official"]
    if not studied:
        return []
    lines = ["", "Does the student's explanation explain the teacher? The student's one-pass maps used to delete "
             "and insert on the teacher's score (`python -m core.faithfulness_study DATASET`), beside the teacher's "
             "own Grad-CAM and the random map on the same images (deletion AUC lower, insertion AUC higher is "
             "better; ✓ / ✗: better / worse than the random map, paired 95% t interval over images):", "",
             "| dataset | images | student's feature maps → teacher | student's CAM → teacher | teacher's Grad-CAM "
             "| random map |", "| --- | --- | --- | --- | --- | --- |"]
    for r in studied:
        methods = r["faithfulness"]["methods"]
        cells = [_pair(methods[name]["student_on_teacher"]) if name in methods else "–"
                 for name in ("feature_maps", "cam")]
        cells += [_pair(methods["grad_cam"]["teacher"]) if "grad_cam" in methods else "–",
                  _pair(methods["random"]["teacher"])]
        lines.append(f"| {r['dataset']} | {r['faithfulness']['images']} | " + " | ".join(cells) + " |")
    lines += ["", "Does the map depend on what the model learnt? The model-randomisation cascade (every layer "
              "re-initialised, top layer first; the Faithfulness page shows each step): the median rank correlation "
              "of the map with the trained model's map at the last step, over the images where it is finite (their "
              "number in brackets; a map that turns constant, as Grad-CAM often does on a random DenseNet, has none, "
              "and – means no image kept a non-constant map). Near 1, the map looks the same without the learnt "
              "weights: it shows the image more than the model's evidence.", "",
              "| dataset | student's feature maps | student's CAM | teacher's feature maps | teacher's Grad-CAM |",
              "| --- | --- | --- | --- | --- |"]
    for r in studied:
        cells = [_cascade_end(r["faithfulness"].get("sanity", {}), name, role) for name, role in
                 (("feature_maps", "student"), ("cam", "student"), ("feature_maps", "teacher"), ("grad_cam", "teacher"))]
        lines.append(f"| {r['dataset']} | " + " | ".join(cells) + " |")
    for r in studied:
        study, methods = r["faithfulness"], r["faithfulness"]["methods"]
        if "mask_prior" not in methods or "localisation" not in methods["mask_prior"]:
            continue
        named = [("the teacher's Grad-CAM", "grad_cam", "teacher"), ("the student's CAM", "cam", "student"),
                 ("the student's average feature maps", "feature_maps", "student")]
        parts = [f"{label} {hit_versus_prior(study, name, role)}" for label, name, role in named if name in methods]
        lines += ["", f"On the {r['dataset']}'s lesion images, pointing game within {study['tolerance_px']} px "
                  f"against the mean training mask: " + "; ".join(parts) + "."]
    return lines + [""]  # the dataset sections' headings follow
