"""Explanations page helpers: predicted costs, explanations of both models, and their scores.

Every call into ``core.explain`` holds the shared model's lock (Captum attaches hooks). Results
are plain dicts kept in the user's session state, so redrawing the page runs no model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from core.costs import ScoringCost, estimate_cost, estimate_scoring_cost
from core.explain import explain
from core.explainers import CostEstimate
from core.faithfulness import agreement, deletion_curve, insertion_curve, mask_iou, pointing_game, sanity_check
from explorer.loaders import LoadedModel, describe_versions, model_versions
from explorer.names import method_label, role_label

DEFAULT_METHODS = ["feature_maps", "grad_cam", "saliency"]
FAITHFULNESS_STEPS = 10  # deletion/insertion steps: 2 x (steps + 1) forward passes per map
SANITY_LAYERS = 2  # the page's sanity check randomises the head and the last feature layer


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


def predicted_costs(models: dict[str, LoadedModel], methods: list[str], *, faithfulness: bool = False,
                    sanity: bool = False) -> PredictedCosts:
    """Passes and predicted seconds of each method on each model (calibrates each model once), with the
    scoring that `explain_one` runs for the same switches."""
    estimates, scoring = {}, {}
    for method in methods:
        estimates[method], scoring[method] = {}, {}
        for role, loaded in models.items():
            with loaded.lock:
                size = loaded.meta.input_size
                estimates[method][role] = estimate_cost(loaded.model, method, size)
                if faithfulness or sanity:
                    scoring[method][role] = estimate_scoring_cost(
                        loaded.model, method, size, curve_steps=FAITHFULNESS_STEPS if faithfulness else None,
                        sanity_layers=SANITY_LAYERS if sanity else None)
    return PredictedCosts(estimates, {m: s for m, s in scoring.items() if s})


def _finite(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def explain_one(loaded: LoadedModel, x: torch.Tensor, method: str, target: int, *, faithfulness: bool,
                sanity: bool, mask: np.ndarray | None) -> dict:
    """One model's explanation of one image with its cost and scores (plain numbers and arrays)."""
    with loaded.lock:
        exp = explain(loaded.model, x, method, target)
        out = {"heatmap": exp.heatmap, "seconds": exp.seconds, "predicted_seconds": exp.predicted_seconds,
               "passes": exp.passes, "target": exp.target}
        if faithfulness:
            for name, curve in (("deletion_auc", deletion_curve), ("insertion_auc", insertion_curve)):
                out[name] = float(curve(loaded.model, x, exp.heatmap, [target], steps=FAITHFULNESS_STEPS).auc[0])
        if sanity:
            check = sanity_check(loaded.model, x, method, target, n_layers=SANITY_LAYERS)
            out["sanity_spearman"] = _finite(check.spearman)
            out["sanity_layers"] = check.randomized
    if mask is not None and mask.shape == exp.heatmap.shape and mask.any():
        hit = pointing_game(exp.heatmap, mask)
        out.update(pointing_hit=_finite(hit["hit"]), energy=_finite(hit["energy"]),
                   mask_iou=_finite(mask_iou(exp.heatmap, mask)))
    return out


def explain_pair(models: dict[str, LoadedModel], xs: dict[str, torch.Tensor], methods: list[str], target: int, *,
                 faithfulness: bool = True, sanity: bool = True, masks: dict[str, np.ndarray | None] | None = None,
                 on_progress=None) -> dict:
    """Explain ``target`` on both models with each method; adds the teacher-student agreement per method.

    ``masks``: the lesion mask at each model's input size (phantom), for the pointing game.
    """
    masks = masks or {}
    results, total, done = {}, len(methods) * len(models), 0
    for method in methods:
        per_model = {}
        for role, loaded in models.items():
            per_model[role] = explain_one(loaded, xs[role], method, target, faithfulness=faithfulness,
                                          sanity=sanity, mask=masks.get(role))
            done += 1
            if on_progress:
                on_progress(done / total, f"{method_label(method)} on the {role_label(role).lower()}")
        if "teacher" in per_model and "student" in per_model:
            per_model["agreement"] = {k: _finite(v) for k, v in
                                      agreement(per_model["teacher"]["heatmap"], per_model["student"]["heatmap"]).items()}
        results[method] = per_model
    return results


def run_key(dataset: str, models: dict[str, LoadedModel], image_ident: str, methods: list[str], target: int,
            faithfulness: bool, sanity: bool) -> tuple:
    """Everything a saved explanation depends on: dataset, both checkpoints (path and modification time),
    image, class, methods and the scoring switches. A result is shown only under its own key."""
    return (dataset, model_versions(models), image_ident, tuple(methods), int(target), bool(faithfulness), bool(sanity))


def computed_for(key: tuple) -> str:
    """What a result was computed for, in words (shown above it)."""
    dataset, checkpoints, image, methods, target, _, _ = key
    files = describe_versions(checkpoints)
    return f"computed for {dataset}, image {image}, class index {target}, with {files}"


def peak(heatmap: np.ndarray) -> tuple[int, int]:
    """(row, column) of a map's maximum (the pointing game's point)."""
    return divmod(int(np.argmax(heatmap)), heatmap.shape[1])


def score_rows(result: dict) -> list[dict]:
    """A small table of one method's scores per model, formatted for display."""
    names = [("seconds", "measured s", "{:.3f}"), ("predicted_seconds", "predicted s", "{:.3f}"),
             ("deletion_auc", "deletion AUC (lower better)", "{:.3f}"),
             ("insertion_auc", "insertion AUC (higher better)", "{:.3f}"),
             ("sanity_spearman", "sanity: rank corr. after randomising (lower better)", "{:.2f}"),
             ("pointing_hit", "pointing game hit", "{:.0f}"), ("energy", "energy in lesion", "{:.0%}"),
             ("mask_iou", "top-5% IoU with lesion", "{:.2f}")]
    rows = []
    for key, label, fmt in names:
        values = {role: result[role].get(key) for role in ("teacher", "student") if role in result}
        if any(v is not None for v in values.values()):
            rows.append({"score": label, **{r: ("n/a" if v is None else fmt.format(v)) for r, v in values.items()}})
    return rows
