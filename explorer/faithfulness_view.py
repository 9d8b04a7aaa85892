"""What the Faithfulness page shows: the study `core.faithfulness_study` wrote into a dataset's results.json.

No Streamlit here: the page draws what these functions return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.roles import DISTILLED, STUDIED, TEACHER, Role
from core.study_record import FaithfulnessStudy, MethodScores, Pair, pair
from core.study_report import method_label  # noqa: F401  (the pages name methods through this view)
from core.study_scores import METRICS as SCORES
from core.study_scores import Distribution, StudyFormatError



@dataclass(frozen=True)
class Metric:
    label: str
    better: str  # "lower" or "higher"
    group: str  # "curve" (per scorer), "agreement" (teacher vs student), "localisation" (per model)
    key: str  # its field in the study's record (`CurveScores`, `Agreement` or `Localisation`)


METRICS = {
    **{key: Metric(m.label, m.better, "curve", key) for key, m in SCORES.items()},
    "agreement_spearman": Metric("Teacher-student agreement (Spearman)", "higher", "agreement", "spearman"),
    "agreement_iou": Metric("Teacher-student agreement (top-10% IoU)", "higher", "agreement", "iou"),
    "pointing": Metric("Pointing game hit", "higher", "localisation", "hit"),
    "energy": Metric("Energy inside the lesion", "higher", "localisation", "energy"),
    "mask_iou": Metric("Top-5% IoU with the lesion", "higher", "localisation", "iou"),
}


@dataclass(frozen=True)
class Series:
    """One set of per-image values a metric has for each method: a pair's curve scores (``pair``), one model's
    localisation (``role``), or, with neither, the two models' agreement."""

    label: str
    pair: Pair | None = None
    role: Role | None = None

    def distribution(self, result: MethodScores, metric: Metric) -> Distribution | None:
        """This series' values of ``metric`` for one method (None where the method has none)."""
        if self.pair is not None:
            # a baseline has one map for both models: its cross series is its own score on the scoring model
            scores = result.score(self.pair.explainer, self.pair.scorer)
            return scores.scores.get(metric.key) if scores else None
        if self.role is not None:
            found = (result.localisation or {}).get(self.role)
            return getattr(found, metric.key) if found else None
        return getattr(result.agreement, metric.key) if result.agreement else None


# Which models a score is about: the map's model, then the model whose score is perturbed.
SCORERS = {"own": (Series("Teacher's map, teacher's score", pair(TEACHER, TEACHER)),
                   Series("Student's map, student's score", pair(DISTILLED, DISTILLED))),
           "cross": (Series("Student's map, teacher's score", pair(DISTILLED, TEACHER)),
                     Series("Teacher's map, student's score", pair(TEACHER, DISTILLED)))}
AGREEMENT = Series("Teacher vs student")
LOCALISED = tuple(Series(r.label, role=r) for r in STUDIED)


def curve_series(explainer: Role, scorer: Role) -> Series:
    """The series of ``explainer``'s maps scored on ``scorer``'s probability."""
    return next(s for group in SCORERS.values() for s in group if s.pair == pair(explainer, scorer))


def shipped_study(results: dict | None, source: str) -> tuple[FaithfulnessStudy | None, str | None]:
    """The study in a results.json (``source`` names it), or None with the reason it cannot be read (None when
    there is no study). ``results`` is the file's raw JSON (`explorer.loaders.results_json`), not its record: a
    file may hold the study alone, where `core.faithfulness_study` ran before any reproduce."""
    block = (results or {}).get("faithfulness")
    if not block:
        return None, None
    try:
        return FaithfulnessStudy.from_json(block, source), None
    except StudyFormatError as e:
        return None, str(e)


def scored_other_checkpoints(study: FaithfulnessStudy, shipped_digests: dict[str, str | None],
                             head_digest: str | None = None) -> bool:
    """Whether the study scored other checkpoints than the shipped ones (``shipped_digests``: sha256 by shipped
    file stem, as `explorer.loaders.checkpoint_digests` gives them), or read its maps off another evidence head
    than the one shipped (``head_digest``, `explorer.loaders.head_digest`)."""
    return study.is_stale({r: shipped_digests.get(r.shipped) for r in study.checkpoints}, head_digest=head_digest)


def available_metrics(study: FaithfulnessStudy) -> list[str]:
    """Metrics the study has (localisation only where the dataset has lesion masks)."""
    localised = any(out.localisation is not None for out in study.methods.values())
    scored = {m for out in study.methods.values() for scores in out.curves.values() for m in scores.scores}
    return [k for k, m in METRICS.items() if (m.group != "localisation" or localised) and
            (m.group != "curve" or k in scored)]


def series_of(metric: str, scoring: str = "own") -> tuple[Series, ...]:
    """The series a metric is drawn in (``scoring`` picks the curve scores' own or cross-model pairs)."""
    group = METRICS[metric].group
    return SCORERS[scoring] if group == "curve" else ((AGREEMENT,) if group == "agreement" else LOCALISED)


def distributions(study: FaithfulnessStudy, metric: str, scoring: str = "own") -> dict[str, dict[str, list]]:
    """``{series label: {method: per-image values}}`` for a box plot (baselines included, NaN-free)."""
    out: dict[str, dict[str, list]] = {}
    for name, result in study.methods.items():
        for series in series_of(metric, scoring):
            found = series.distribution(result, METRICS[metric])
            if found is not None:
                out.setdefault(series.label, {})[name] = found.finite()
    return out


def comparison_rows(study: FaithfulnessStudy, metric: str, scoring: str = "own") -> list[dict]:
    """Each method against the random map on the same images: mean difference, 95% interval, p-value."""
    m = METRICS[metric]
    if m.group != "curve":
        return []
    rows = []
    for name, result in study.methods.items():
        for series in SCORERS[scoring]:
            scores = result.curves.get(series.pair)  # as stored: a baseline has no other model to cross to
            c = scores.vs_random.get(m.key) if scores else None
            if c is None:
                continue
            mean = scores.scores[m.key].mean
            versus = (result.versus or {}).get(series.pair.explainer, "random")
            rows.append({"method": method_label(name), "scored": series.label,
                         "better than random": c.verdict(m.better),
                         "against": method_label(versus).removesuffix(" (baseline)"), "images": c.n,
                         "mean": round(math.nan if mean is None else mean, 3), "minus random": round(c.mean, 3),
                         "95% interval": f"[{c.ci[0]:.3f}, {c.ci[1]:.3f}]",
                         "p (paired t)": f"{c.p_value:.2g}", "p (sign flips)": f"{c.p_sign_flip:.2g}"})
    return rows


def constant_note(study: FaithfulnessStudy, method: str) -> str:
    """How many maps turned constant at the cascade's last step, by model (a constant map explains nothing, so the
    page states how many the cascade's line leaves out); "" where the study did not count them (version 1)."""
    parts = [f"{role.label}: {steps[-1].constant} of {len(steps[-1].spearman.values)} maps turned constant at the "
             "last step" for role, steps in study.sanity.get(method, {}).items()
             if steps and steps[-1].constant is not None]
    return "; ".join(parts)


def cascades(study: FaithfulnessStudy, method: str) -> dict[str, tuple[list[str], list[float]]]:
    """``{model's shipped name: (layers randomised so far, the cascade's statistic per step)}`` for one method (the
    statistic docs/results.md gives at the last step: `CascadeStep.median_correlation`)."""
    return {role.shipped: ([s.layer for s in steps],
                           [math.nan if s.median_correlation is None else s.median_correlation for s in steps])
            for role, steps in study.sanity.get(method, {}).items()}


def extreme_series(study: FaithfulnessStudy, metric: str, scoring: str = "own",
                   method: str | None = None) -> list[Series]:
    """The series a best/worst list can be drawn from for this metric (of ``method``: those it has values of; the
    teacher's evidence has no teacher's map)."""
    found = list(series_of(metric, scoring))
    if method is None:
        return found
    return [s for s in found if s.distribution(study.methods[method], METRICS[metric]) is not None]


def extremes(study: FaithfulnessStudy, method: str, metric: str, series: Series, k: int = 3) -> dict[str, list[dict]]:
    """The ``k`` best and worst images of one method and series: test index, value, true class position."""
    m = METRICS[metric]
    values = series.distribution(study.methods[method], m).values
    scored = [(v, p) for v, p in zip(values, study.positions(values)) if v is not None]
    scored.sort(key=lambda t: t[0], reverse=m.better == "higher")
    pick = lambda rows: [{"index": study.test_index[p], "value": v, "true": study.true_class[p]}  # noqa: E731
                         for v, p in rows]
    return {"best": pick(scored[:k]), "worst": pick(scored[::-1][:k])}
