"""What the Feature maps page computes: one cached forward per (model, image), lock-step pairing, ranking, CKA.

Stepping through layers must never run a model again: `all_layer_maps` captures every layer's
average map in one forward pass and caches it per checkpoint version and image id; the page only indexes
into it. Channel ranking and ablation do run the model and are cached per layer.

The page loads its teacher and student once and passes them down: each function takes the loaded models as
unhashed ``_`` arguments, and their `LoadedModel.version` (role, path, modification time) keys the cache, so a
rewritten checkpoint is computed with again.
"""

from __future__ import annotations

import streamlit as st
import torch

from core.cka import cka_matrix
from core.featuremaps import ablate_channels, layer_maps, rank_channels
from core.inference import batch_for
from explorer import loaders
from explorer.loaders import LoadedModel


@st.cache_data(max_entries=32, show_spinner="One forward pass through the model ...")
def all_layer_maps(_loaded: LoadedModel, version: tuple, ident: str, _x: torch.Tensor) -> dict:
    """`core.featuremaps.layer_maps` for one image: every layer's average map from ONE forward."""
    with _loaded.lock:  # hooks are attached while this runs
        result = layer_maps(_loaded.model, _x)
    return {"labels": list(result["layers"]), "maps": list(result["layers"].values()),
            "shapes": list(result["shapes"].values()), "probabilities": result["probabilities"],
            "predicted": result["predicted"]}


def lockstep(n_teacher: int, n_student: int, step: int, pairs: list[int] | None = None) -> tuple[int, int]:
    """(teacher layer, student layer) shown at ``step``.

    Without ``pairs`` both walk at the same relative depth over ``max(n_teacher, n_student)`` steps;
    with ``pairs`` (best teacher layer for each student layer, from CKA) the student sets the pace.
    """
    if pairs is not None:
        return pairs[step], step
    n = max(n_teacher, n_student)
    frac = step / max(n - 1, 1)
    return int(round(frac * (n_teacher - 1))), int(round(frac * (n_student - 1)))


@st.cache_data(max_entries=64, show_spinner="Ranking channels and ablating them ...")
def ranked_channels(_loaded: LoadedModel, version: tuple, ident: str, _x: torch.Tensor, layer: str, k: int) -> dict:
    """Top-k channels of ``layer`` for the predicted class, and the logit drop when they are zeroed."""
    with _loaded.lock:
        ranking = rank_channels(_loaded.model, _x, layer, target=None, k=k)
        ablation = ablate_channels(_loaded.model, _x, layer, ranking.channels, ranking.target, n_random=8)
    return {"channels": ranking.channels, "scores": ranking.scores[ranking.channels].tolist(),
            "maps": ranking.maps, "target": ranking.target, "logit": ranking.logit, "drop": ablation.drop,
            "random_drop": ablation.random_drop, "random_drops": ablation.random_drops.tolist(),
            "confirms": ablation.confirms_ranking,
            "n_channels": int(ranking.scores.size)}


@st.cache_data(max_entries=8, show_spinner="Comparing all teacher and student layers (linear CKA) ...")
def layer_correspondence(dataset: str, _teacher: LoadedModel, _student: LoadedModel, versions: tuple,
                         n_images: int = 32) -> dict:
    """Linear CKA between every teacher and student layer over ``n_images`` test images of ``dataset`` (spread
    over classes, leaving out files that cannot be read: ``skipped``); ``versions`` holds the two models'
    `LoadedModel.version`."""
    raw, picks, skipped = loaders.readable_items(dataset, loaders.spread_over_classes(dataset, n_images))
    with _teacher.lock, _student.lock:
        result = cka_matrix(_teacher.model, _student.model, batch_for(_teacher.meta, raw),
                            student_images=batch_for(_student.meta, raw))
    best = result.best_teacher_indices()
    return {"matrix": result.matrix, "teacher_layers": result.teacher_layers,
            "student_layers": result.student_layers, "best_teacher": best, "n_images": len(picks),
            "skipped": skipped}
