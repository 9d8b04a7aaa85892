"""Explanations page helpers: predicted costs, explanations of both models, and their scores.

Every call into ``core.explain`` holds the shared model's lock (Captum attaches hooks). A result is the record
`explorer.explanation_record.PairExplanation`, kept in the user's session state, so redrawing the page runs no model.
A run with a slow method (``slow`` on its class) holds one of the server's ``$KD_APP_EXPLAINERS`` slots
(`SLOW_RUNS`): the others wait their turn and see their place in the line.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
import streamlit as st
import torch

from core import memory
from core.costs import ScoringCost, estimate_cost, estimate_scoring_cost
from core.explain import explain
from core.explainers import EXPLAINERS, CostEstimate
from core.faithfulness import agreement, deletion_curve, insertion_curve, mask_iou, pointing_game
from core.hooks import model_layers
from core.sanity import sanity_check
from explorer.explanation_record import (Curves, Lesion, MapAgreement, MethodPair, ModelExplanation, PairExplanation,
                                         Passes, Sanity)
from explorer.loaders import LoadedModel, describe_versions, model_versions
from explorer.text import plain
from explorer.names import method_label, role_label
from explorer.runtime import ServerSlots, count_setting

FAITHFULNESS_STEPS = 10  # deletion/insertion steps: 2 x (steps + 1) forward passes per map
SANITY_LAYERS = 2  # the page's sanity check randomises the head and the last feature layer
# The app's keys of the two models the page compares: a summary row each, and the agreement of their maps.
COMPARED = ("teacher", "student")
# Runs with a slow method at a time, for the whole server. One by default: six sessions explaining integrated
# gradients and GradientSHAP at once took the server to 1.88 GB at peak (every run's batches resident together)
# and another user's Dataset page from 1.3 s to 3.4-4.8 s on two cores; one at a time holds one run's batches and
# leaves the other core to the light pages (``benchmarks/app_load.py`` measures both, with and without the queue).
SLOW_RUNS = ServerSlots(count_setting("KD_APP_EXPLAINERS", 1))


def slow_run(methods: list[str]) -> bool:
    """Whether explaining with ``methods`` takes one of the server's slots (`SLOW_RUNS`): a method is slow."""
    return any(EXPLAINERS[m].slow for m in methods)


def runs_on_arrival(methods: list[str]) -> bool:
    """Whether the page explains without the Explain button, as it opens and as a shared link arrives: every method
    is cheap (a few passes per map; the slow ones wait for the button, and for the server's slot). A rule on the
    methods, not on the predicted seconds, so that it does not change with the machine's load."""
    return bool(methods) and not slow_run(methods)


@contextlib.contextmanager
def run_slot(methods: list[str], on_wait):
    """What a run with ``methods`` holds while it explains: one of `SLOW_RUNS` when a method is slow (waiting its
    turn first, ``on_wait(runs ahead)`` meanwhile), else nothing. A slow run hands what it freed back to the system
    before the next run takes its slot (`core.memory.release_freed_memory`), so runs in turn do not pile up."""
    if not slow_run(methods):
        yield
        return
    with SLOW_RUNS.held(on_wait):
        try:
            yield
        finally:
            memory.release_freed_memory()


def waiting_text(ahead: int) -> str:
    """The progress text of a run waiting for the server's slot."""
    runs = "1 run" if ahead == 1 else f"{ahead} runs"
    at_once = "one run" if SLOW_RUNS.size == 1 else f"{SLOW_RUNS.size} runs"
    return (f"Waiting for {runs} ahead of yours: the server explains with the slow methods {at_once} at a time, "
            "so that its pages stay fast for everyone ...")


@dataclass(frozen=True)
class PredictedCosts:
    """`core.costs.estimate_cost` of each method on each model (``estimates[method][role]``) and, when the run
    scores its maps, `core.costs.estimate_scoring_cost` (``scoring[method][role]``)."""

    estimates: dict[str, dict[str, CostEstimate]]
    scoring: dict[str, dict[str, ScoringCost]] = field(default_factory=dict)

    def table(self) -> list[dict]:
        """One display row per method: passes (forward/backward), predicted seconds and scoring seconds."""
        rows = []
        for method, per_role in self.estimates.items():
            row = {"method": method_label(method)}
            for role, cost in per_role.items():
                name = role_label(role)
                row[f"{name} passes (F/B)"] = f"{cost.passes['forward']}/{cost.passes['backward']}"
                row[f"{name} predicted s"] = round(cost.predicted_seconds, 3)
                if role in self.scoring.get(method, {}):
                    row[f"{name} scoring s"] = round(self.scoring[method][role].predicted_seconds, 3)
            rows.append(row)
        return rows

    def total_seconds(self) -> float:
        """Predicted seconds of running (and scoring) every method once on every model."""
        maps = sum(cost.predicted_seconds for per_role in self.estimates.values() for cost in per_role.values())
        return maps + sum(c.predicted_seconds for per_role in self.scoring.values() for c in per_role.values())


def method_params(method: str, gradcam_layer: str | None) -> dict:
    """The explainer parameters the page sets: Grad-CAM's target layer (None: the model's last conv layer) and
    the batch of the batched-backward methods (their class's ``app_batch``, which bounds the app's memory peak).
    CAM takes none: its weights are the classifier's, so it is tied to the layer pooled before it."""
    app_batch = EXPLAINERS[method].app_batch
    if app_batch is not None:
        return {"internal_batch_size": app_batch}
    return {"layer": gradcam_layer} if method == "grad_cam" and gradcam_layer else {}


def gradcam_layer_choices(loaded: LoadedModel) -> dict[str, str]:
    """The layers Grad-CAM may target on a model, in forward order (the last is the default): label -> what
    it is (channels and resolution where the model declares them)."""
    info = {layer.label: layer for layer in getattr(loaded.model, "feature_info", None) or []}
    choices = {}
    for label, _ in model_layers(loaded.model):
        layer = info.get(label)
        choices[label] = label if layer is None else f"{label} ({layer.channels} channels, 1/{layer.reduction} side)"
    return choices


def predicted_costs(models: dict[str, LoadedModel], methods: list[str], *, faithfulness: bool = False,
                    sanity: bool = False, gradcam_layers: dict[str, str] | None = None) -> PredictedCosts:
    """Passes and predicted seconds of each method on each model (calibrates each model once), with the
    scoring that `explain_one` runs for the same switches."""
    estimates, scoring, layers = {}, {}, gradcam_layers or {}
    for method in methods:
        estimates[method], scoring[method] = {}, {}
        for role, loaded in explaining(models, method).items():
            params = method_params(method, layers.get(role))
            with loaded.lock:
                size = loaded.meta.input_size
                estimates[method][role] = estimate_cost(loaded.model, method, size, **params)
                if faithfulness or sanity:
                    scoring[method][role] = estimate_scoring_cost(
                        loaded.model, method, size, curve_steps=FAITHFULNESS_STEPS if faithfulness else None,
                        sanity_layers=SANITY_LAYERS if sanity else None, **params)
    return PredictedCosts(estimates, {m: s for m, s in scoring.items() if s})


def _finite(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def explain_one(loaded: LoadedModel, x: torch.Tensor, method: str, target: int, *, faithfulness: bool,
                sanity: bool, mask: np.ndarray | None, gradcam_layer: str | None = None) -> ModelExplanation:
    """One model's explanation of one image with its cost and the scores asked for (and, with a lesion mask of
    the map's size, the lesion checks)."""
    params = method_params(method, gradcam_layer)
    curves = check = lesion = None
    with loaded.lock:
        exp = explain(loaded.model, x, method, target, **params)
        if faithfulness:
            curves = Curves(*(float(curve(loaded.model, x, exp.heatmap, [target], steps=FAITHFULNESS_STEPS).auc[0])
                              for curve in (deletion_curve, insertion_curve)))
        if sanity:
            check = sanity_check(loaded.model, x, method, target, n_layers=SANITY_LAYERS, **params)
    if mask is not None and mask.shape == exp.heatmap.shape and mask.any():
        hit = pointing_game(exp.heatmap, mask)
        lesion = Lesion(_finite(hit["hit"]), _finite(hit["energy"]), _finite(mask_iou(exp.heatmap, mask)))
    return ModelExplanation(exp.heatmap, exp.seconds, exp.predicted_seconds,
                            Passes(exp.passes["forward"], exp.passes["backward"]), exp.extras.get("layer"), curves,
                            None if check is None else Sanity(_finite(check.spearman), tuple(check.randomized)),
                            lesion)


def explain_pair(models: dict[str, LoadedModel], xs: dict[str, torch.Tensor], methods: list[str], target: int, *,
                 faithfulness: bool = True, sanity: bool = True, masks: dict[str, np.ndarray | None] | None = None,
                 gradcam_layers: dict[str, str] | None = None, on_progress=None) -> PairExplanation:
    """Explain ``target`` on both models with each method; adds the teacher-student agreement per method.

    ``masks``: the lesion mask at each model's input size (phantom), for the pointing game.
    ``gradcam_layers``: Grad-CAM's layer on each model by role (a missing role: its last conv layer).
    """
    masks, layers = masks or {}, gradcam_layers or {}
    results, total, done = {}, sum(len(explaining(models, m)) for m in methods), 0
    for method in methods:
        per_model = {}
        for role, loaded in explaining(models, method).items():
            per_model[role] = explain_one(loaded, xs[role], method, target, faithfulness=faithfulness,
                                          sanity=sanity, mask=masks.get(role), gradcam_layer=layers.get(role))
            done += 1
            if on_progress:
                on_progress(done / total, f"{method_label(method)} on the {role_label(role).lower()}")
        pair_agreement = None
        if all(role in per_model for role in COMPARED):
            alike = agreement(*(per_model[role].heatmap for role in COMPARED))
            pair_agreement = MapAgreement(_finite(alike["spearman"]), _finite(alike["iou"]))
        results[method] = MethodPair(per_model, pair_agreement)
    return PairExplanation(int(target), results)


def offered_methods(models: dict[str, LoadedModel]) -> list[str]:
    """Every method some model can explain with, in registration order (the teacher's evidence where the student
    has its head)."""
    return [m for m in EXPLAINERS if any(EXPLAINERS[m].can_explain(loaded.model) for loaded in models.values())]


def not_made(method: str, role: str) -> str:
    """Why a model has no map of a method (in its column of the page)."""
    if EXPLAINERS[method].needs_head and role == "teacher":
        return ("The teacher's evidence is read off the student, which learnt to give the teacher's Grad-CAM from "
                "its own forward pass: compare it with the teacher's Grad-CAM.")
    return f"The {role_label(role).lower()} cannot explain with {method_label(method)}."


def explaining(models: dict[str, LoadedModel], method: str) -> dict[str, LoadedModel]:
    """The models that can explain with ``method``: both, or for the teacher's evidence the student with its head."""
    return {role: loaded for role, loaded in models.items() if EXPLAINERS[method].can_explain(loaded.model)}


def answer(result: PairExplanation, classes: list[str], probabilities: dict[str, np.ndarray]) -> str:
    """What the run says in words: both models' predictions, how alike their maps are (Spearman of each method's two
    maps) and, where deletion curves ran, which map's removal lowers each model's score fastest."""
    said = []
    if all(role in probabilities for role in COMPARED):
        (t_class, t_p), (s_class, s_p) = (_top(probabilities[role], classes) for role in COMPARED)
        said.append(f"The teacher predicts {t_class} ({t_p:.0%}), the student {s_class} ({s_p:.0%}): they "
                     f"{'agree' if t_class == s_class else 'disagree'}.")
    alike = sorted(((pair.agreement.spearman, method) for method, pair in result.methods.items()
                    if pair.agreement is not None and pair.agreement.spearman is not None), reverse=True)
    if len(alike) == 1:
        said.append(f"Their {_prose(alike[0][1])} maps rank the image's places alike at Spearman {alike[0][0]:.2f} "
                    "(1: the same order, 0: unrelated).")
    elif alike:
        said.append(f"Their maps agree most with {_prose(alike[0][1])} (Spearman {alike[0][0]:.2f}) and least with "
                    f"{_prose(alike[-1][1])} ({alike[-1][0]:.2f}; 1: the same order of places, 0: unrelated).")
    fastest = {}
    for role in COMPARED:
        found = [(r.curves.deletion_auc, m) for m, pair in result.methods.items()
                 if (r := pair.models.get(role)) is not None and r.curves is not None]
        if len(found) > 1:
            fastest[role] = min(found)
    if fastest:
        said.append("Removing the most relevant pixels first lowers each model's score fastest with these maps "
                     "(deletion AUC, lower is better): " + ", ".join(
                         f"the {role_label(role, short=True).lower()}'s with its {_prose(m)} ({auc:.2f})"
                         for role, (auc, m) in fastest.items()) + ".")
    return " ".join(said)


def _top(probabilities: np.ndarray, classes: list[str]) -> tuple[str, float]:
    best = int(np.argmax(probabilities))
    return plain(classes[best]), float(probabilities[best])


def _prose(method: str) -> str:
    """A method's name inside a sentence: its short name, lower-cased unless it is an acronym."""
    name = EXPLAINERS[method].short_title or method_label(method)
    word = name.split()[0]
    return name[0].lower() + name[1:] if word[1:] == word[1:].lower() else name  # "Grad-CAM" stays


def run_key(dataset: str, models: dict[str, LoadedModel], image_ident: str, methods: list[str], target: int,
            faithfulness: bool, sanity: bool, gradcam_layers: dict[str, str] | None = None) -> tuple:
    """Everything a saved explanation depends on: dataset, both checkpoints (path and modification time),
    image, class, methods, the scoring switches and Grad-CAM's layer on each model. A result is shown only
    under its own key."""
    chosen = gradcam_layers or {}
    layers = tuple((role, chosen[role]) for role in models if role in chosen) if "grad_cam" in methods else ()
    return (dataset, model_versions(models), image_ident, tuple(methods), int(target), bool(faithfulness),
            bool(sanity), layers)


def computed_for(key: tuple) -> str:
    """What a result was computed for, in words (shown above it)."""
    dataset, checkpoints, image, methods, target, _, _, layers = key
    files = describe_versions(checkpoints)
    at = "; Grad-CAM at " + ", ".join(f"{role_label(role)} {layer}" for role, layer in layers) if layers else ""
    return f"computed for {dataset}, image {image}, class index {target}, with {files}{at}"


def peak(heatmap: np.ndarray) -> tuple[int, int]:
    """(row, column) of a map's maximum (the pointing game's point)."""
    return divmod(int(np.argmax(heatmap)), heatmap.shape[1])


def top_classes(probabilities: np.ndarray, classes: list[str], k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most probable classes, most probable first, with their probabilities."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [(classes[i], float(probabilities[i])) for i in order]


@dataclass(frozen=True)
class Score:
    """One score of a map and how it is shown.

    ``attribute``: its name in a `ModelExplanation` (or a `MapAgreement`), inside the measured group ``group``
    (``curves``, ``sanity``, ``lesion``; None: the record's own). ``label``: the case report's row name;
    ``header``: the summary column's, after the model's name, ending in the better direction; ``report_fmt``
    (Python) and ``column_fmt`` (Streamlit's NumberColumn) format its value.
    """

    group: str | None
    attribute: str
    label: str
    header: str
    help: str
    report_fmt: str
    column_fmt: str

    def measured(self, scores: ModelExplanation | MapAgreement | None) -> bool:
        """Whether ``scores`` (None: the model or the agreement is missing) has this score, even if undefined."""
        return scores is not None and (self.group is None or getattr(scores, self.group) is not None)

    def value(self, scores: ModelExplanation | MapAgreement | None) -> float | None:
        """This score of ``scores``; None where not measured or undefined."""
        if not self.measured(scores):
            return None
        return getattr(scores if self.group is None else getattr(scores, self.group), self.attribute)


SCORES = (
    Score(None, "seconds", "measured s", "s", "Seconds the method took, measured (the prediction is in the cost "
          "table above).", "{:.3f}", "%.3f"),
    Score(None, "predicted_seconds", "predicted s", "predicted s", "Seconds the cost model predicted.", "{:.3f}",
          "%.3f"),
    Score("curves", "deletion_auc", "deletion AUC (lower better)", "deletion AUC ↓", "Deletion AUC: remove the "
          "pixels the map ranks highest first and follow the class probability; the area under that curve. Lower "
          "is better.", "{:.3f}", "%.3f"),
    Score("curves", "insertion_auc", "insertion AUC (higher better)", "insertion AUC ↑", "Insertion AUC: restore "
          "the top-ranked pixels of a blurred image first; the area under the probability curve. Higher is "
          "better.", "{:.3f}", "%.3f"),
    Score("sanity", "spearman", "sanity: rank corr. after randomising (lower better)", "sanity ρ ↓", "Sanity "
          "check: rank correlation (Spearman ρ) of the map with the map after re-initialising the head and the "
          "last layer. Lower is better: a map that explains the model must change.", "{:.2f}", "%.2f"),
    Score("lesion", "pointing_hit", "pointing game hit", "pointing hit ↑", "Pointing game: 1 when the map's maximum "
          "(x on the map) falls on the true lesion, 0 when not. Higher is better.", "{:.0f}", "%.0f"),
    Score("lesion", "energy", "energy in lesion", "lesion energy ↑", "Share of the map's relevance inside the true "
          "lesion. Higher is better.", "{:.0%}", "percent"),
    Score("lesion", "mask_iou", "top-5% IoU with lesion", "lesion IoU ↑", "Intersection over union of the map's "
          "top 5% pixels with the true lesion. Higher is better.", "{:.2f}", "%.2f"),
)
AGREEMENT = (
    Score(None, "spearman", "agreement: Spearman", "Agreement ρ", "Teacher-student agreement: rank correlation "
          "(Spearman ρ) of the two models' maps over pixels; 1 when they order the places the same way.",
          "{:.2f}", "%.2f"),
    Score(None, "iou", "agreement: top-10% IoU", "Agreement IoU", "Teacher-student agreement: intersection over "
          "union of the two maps' top 10% pixels; 1 when they coincide.", "{:.2f}", "%.2f"),
)
HEADER_PX, CELL_PAD_PX = 7, 16  # a header's width per character (14 px font) and padding: no header is cut
VALUE_CHARS = 6  # the widest number a score column shows ("0.123", "100%")


@dataclass(frozen=True)
class SummaryColumn:
    """A score column of the summary tables: one model's score (``pair`` False), or the agreement of the two
    models' maps (``pair`` True, the same on both rows of a method)."""

    score: Score
    pair: bool = False

    @property
    def header(self) -> str:
        return self.score.header

    @property
    def help(self) -> str:
        return self.score.help + (" The same on both rows of a method: it compares their maps." if self.pair else "")

    @property
    def width(self) -> int:
        return HEADER_PX * max(len(self.header), VALUE_CHARS) + CELL_PAD_PX

    def _scores(self, pair: MethodPair, role: str) -> ModelExplanation | MapAgreement | None:
        return pair.agreement if self.pair else pair.models.get(role)

    def value(self, pair: MethodPair, role: str) -> float | None:
        return self.score.value(self._scores(pair, role))

    def present(self, pair: MethodPair) -> bool:
        return any(self.score.measured(self._scores(pair, role)) for role in COMPARED)


def _summary_layout(lesion: bool) -> list[SummaryColumn]:
    """Every possible column of one table, in order: the cost and the scores and the agreement, or (``lesion``)
    the checks against the true lesion. Two tables, so that neither is wider than the page at 1400 px."""
    scores = [s for s in SCORES if s.attribute != "predicted_seconds"]  # the cost table above predicts
    if lesion:
        return [SummaryColumn(s) for s in scores if s.group == "lesion"]
    return [SummaryColumn(s) for s in scores if s.group != "lesion"] + [SummaryColumn(s, True) for s in AGREEMENT]


def summary_rows(result: PairExplanation, lesion: bool = False) -> list[dict]:
    """A summary table of `explain_pair`'s result: one row per method and model ("Method", "Model", then one
    number or None per column); a column only for a score that some method has, and no rows at all when no
    column is left (the lesion table without a lesion mask)."""
    columns = [c for c in _summary_layout(lesion) if any(c.present(pair) for pair in result.methods.values())]
    if not columns:
        return []
    return [{"Method": method_label(method, short=True), "Model": role_label(role, short=True),
             **{c.header: c.value(pair, role) for c in columns}}
            for method, pair in result.methods.items() for role in COMPARED if role in pair.models]


def summary_columns(rows: list[dict], lesion: bool = False) -> list[SummaryColumn]:
    """The `SummaryColumn` of each score column of `summary_rows`, in its order (for headers, help and widths)."""
    by_header = {c.header: c for c in _summary_layout(lesion)}
    return [by_header[h] for h in (rows[0] if rows else {}) if h in by_header]


def label_width(texts) -> int:
    """Pixel width of a text column that shows every one of ``texts`` (and its header) uncut."""
    return HEADER_PX * max(len(t) for t in texts) + CELL_PAD_PX


def show_summaries(result: PairExplanation) -> None:
    """Draw the summary table of a result and, when there is a true lesion, the table of lesion checks."""
    for lesion in (False, True):
        rows = summary_rows(result, lesion=lesion)
        if not rows:
            continue
        if lesion:
            st.markdown("**Lesion checks**: each map against the true lesion.")
        config = {label: st.column_config.TextColumn(label, pinned=True, help=hint,
                                                     width=label_width([label] + [r[label] for r in rows]))
                  for label, hint in (("Method", "The explanation method"), ("Model", "The model explained"))}
        config.update({c.header: st.column_config.NumberColumn(c.header, help=c.help, format=c.score.column_fmt,
                                                               width=c.width)
                       for c in summary_columns(rows, lesion=lesion)})
        st.dataframe(rows, hide_index=True, key="exp_lesion" if lesion else "exp_summary", column_config=config)


def score_rows(pair: MethodPair) -> list[dict]:
    """One method's scores per model, one row per score, formatted for the case report."""
    rows = []
    for score in SCORES:
        values = {role: score.value(pair.models[role]) for role in COMPARED if role in pair.models}
        if any(v is not None for v in values.values()):
            rows.append({"score": score.label, **{r: ("n/a" if v is None else score.report_fmt.format(v))
                                                   for r, v in values.items()}})
    return rows
