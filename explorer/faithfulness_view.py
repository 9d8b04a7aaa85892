"""What the Faithfulness page shows: the study `core.faithfulness_study` wrote into a dataset's results.json.

No Streamlit here: the page draws what these functions return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.explainers import EXPLAINERS
from core.faithfulness_study import verdict
from explorer.roles import ROLE_LABELS

BASELINE_LABELS = {"random": "Random map (baseline)", "centre": "Centre prior (baseline)",
                   "mask_prior": "Mask prior (baseline)"}
# Which models a score is about: the map's model, then the model whose score is perturbed.
SCORERS = {"own": {"teacher": "Teacher's map, teacher's score", "student": "Student's map, student's score"},
           "cross": {"student_on_teacher": "Student's map, teacher's score",
                     "teacher_on_student": "Teacher's map, student's score"}}


@dataclass(frozen=True)
class Metric:
    label: str
    better: str  # "lower" or "higher"
    group: str  # "curve" (per scorer), "agreement" (teacher vs student), "localisation" (per model)
    key: str


METRICS = {
    "deletion_auc": Metric("Deletion AUC", "lower", "curve", "deletion_auc"),
    "insertion_auc": Metric("Insertion AUC", "higher", "curve", "insertion_auc"),
    "agreement_spearman": Metric("Teacher-student agreement (Spearman)", "higher", "agreement", "spearman"),
    "agreement_iou": Metric("Teacher-student agreement (top-10% IoU)", "higher", "agreement", "iou"),
    "pointing": Metric("Pointing game hit", "higher", "localisation", "hit"),
    "energy": Metric("Energy inside the lesion", "higher", "localisation", "energy"),
    "mask_iou": Metric("Top-5% IoU with the lesion", "higher", "localisation", "iou"),
}


def method_label(name: str) -> str:
    """Friendly name of a method or a baseline."""
    if name in BASELINE_LABELS:
        return BASELINE_LABELS[name]
    return EXPLAINERS[name].title if name in EXPLAINERS else name


def series_label(key: str) -> str:
    if key == "agreement":
        return "Teacher vs student"
    for group in SCORERS.values():
        if key in group:
            return group[key]
    return ROLE_LABELS.get(key, key)


def available_metrics(study: dict) -> list[str]:
    """Metrics the study has (localisation only where the dataset has lesion masks)."""
    methods = study.get("methods", {}).values()
    return [k for k, m in METRICS.items()
            if m.group != "localisation" or any("localisation" in out for out in methods)]


def distributions(study: dict, metric: str, scoring: str = "own") -> dict[str, dict[str, list]]:
    """``{series label: {method: per-image values}}`` for a box plot (baselines included, NaN-free)."""
    m = METRICS[metric]
    out: dict[str, dict[str, list]] = {}
    for name, result in study["methods"].items():
        if m.group == "curve":
            # a baseline has one map for both models: its cross series is its own score on the scoring model
            for key in SCORERS[scoring]:
                source = key if key in result else key.split("_on_")[-1]
                if source in result:
                    out.setdefault(series_label(key), {})[name] = result[source][m.key]["values"]
        elif m.group == "agreement" and "agreement" in result:
            out.setdefault("Teacher vs student", {})[name] = result["agreement"][m.key]["values"]
        elif m.group == "localisation" and "localisation" in result:
            for role, scores in result["localisation"].items():
                out.setdefault(series_label(role), {})[name] = scores[m.key]["values"]
    return {series: {name: [v for v in values if v is not None] for name, values in by_method.items()}
            for series, by_method in out.items()}


def comparison_rows(study: dict, metric: str, scoring: str = "own") -> list[dict]:
    """Each method against the random map on the same images: mean difference, 95% interval, p-value."""
    m = METRICS[metric]
    if m.group != "curve":
        return []
    rows = []
    for name, result in study["methods"].items():
        for key in SCORERS[scoring]:
            if key not in result or "vs_random" not in result[key]:
                continue
            c = result[key]["vs_random"][m.key]
            mean = result[key][m.key].get("mean", math.nan)
            rows.append({"method": method_label(name), "scored": series_label(key), "images": c["n"],
                         "mean": round(mean, 3), "minus random": round(c["mean"], 3),
                         "95% interval": f"[{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]",
                         "p (paired t)": f"{c['p_value']:.2g}", "p (sign flips)": f"{c['p_sign_flip']:.2g}",
                         "better than random": verdict(c, m.better)})
    return rows


def cascades(study: dict, method: str) -> dict[str, tuple[list[str], list[float]]]:
    """``{role: (layers randomised so far, median rank correlation per step)}`` for one method (the statistic the
    README's cascade table gives for the last step)."""
    return {role: ([s["layer"] for s in steps], [s["spearman"].get("median", math.nan) for s in steps])
            for role, steps in study.get("sanity", {}).get(method, {}).items()}


def extreme_series(study: dict, metric: str, scoring: str = "own") -> list[str]:
    """The series a best/worst list can be drawn from for this metric."""
    group = METRICS[metric].group
    if group == "curve":
        return list(SCORERS[scoring])
    return ["agreement"] if group == "agreement" else ["teacher", "student"]


def extremes(study: dict, method: str, metric: str, series: str, k: int = 3) -> dict[str, list[dict]]:
    """The ``k`` best and worst images of one method and scorer: test index, value, true class position."""
    m = METRICS[metric]
    result = study["methods"][method]
    if m.group == "curve":
        values = result[series][m.key]["values"]
    elif m.group == "agreement":
        values = result["agreement"][m.key]["values"]
    else:
        values = result["localisation"][series][m.key]["values"]
    positions = list(range(study["images"]))
    if len(values) != len(positions):  # a slow method: its seeded subset of the images
        positions = study["slow_subset"]
    scored = [(v, p) for v, p in zip(values, positions) if v is not None]
    scored.sort(key=lambda t: t[0], reverse=m.better == "higher")
    pick = lambda rows: [{"index": study["test_index"][p], "value": v, "true": study["true_class"][p]}
                         for v, p in rows]
    return {"best": pick(scored[:k]), "worst": pick(scored[::-1][:k])}
