"""The one call shape for every explainer: ``explain(model, x, method, target=None, **params)``.

Methods are the classes registered in `core.explainers.EXPLAINERS` (listed by `registered_methods`).
Before a run, `core.costs.estimate_cost` predicts its time from the method's pass count and a
one-time calibration of this model on this host; after it, the measured time sits beside the
prediction. Every ``heatmap`` is non-negative evidence for the target, min-max normalised to
[0, 1]; signed attributions keep their positive part (as Grad-CAM's ReLU does) and the signed map is
kept in ``extras["raw"]``.
"""

from __future__ import annotations

import threading
import time
import weakref
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from core.costs import estimate_cost
from core.explainers import EXPLAINERS, ExplainError, Explanation, make_explainer
from core.featuremaps import normalize_map
from core.hooks import preserve_model_state, require_eval
from core.inference import check_input

__all__ = ["explain", "ExplainError", "Explanation", "EXPLAINERS"]


def _num_classes(model: nn.Module) -> int | None:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


class ModelLock:
    """Shared for thread-safe methods, exclusive for the others, per shared model.

    Captum's layer hooks record (and feed gradients through) every thread's forward on the module,
    so a Grad-CAM in one thread breaks a saliency map computed at the same time in another, and
    would also see the forward of a feature-map capture. Methods whose hooks record only their own
    thread's forward may run together; any other method runs alone on its model.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextmanager
    def hold(self, exclusive: bool):
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and (not exclusive or self._shared == 0))
            if exclusive:
                self._exclusive = True
            else:
                self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                if exclusive:
                    self._exclusive = False
                else:
                    self._shared -= 1
                self._cond.notify_all()


_MODEL_LOCKS: "weakref.WeakKeyDictionary[nn.Module, ModelLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> ModelLock:
    """The `ModelLock` of a model (one per model object, created on first use)."""
    with _LOCKS_GUARD:
        return _MODEL_LOCKS.setdefault(model, ModelLock())


# A backward pass over a batch of images (integrated gradients, GradientSHAP) holds the batch's activations and
# their gradients at once: the app's memory peak. One such run at a time in the process, whatever the model and
# the user, so two sessions explaining at once do not add their peaks.
BATCHED_BACKWARD = threading.BoundedSemaphore(1)


@contextmanager
def memory_slot(explainer) -> Iterator[None]:
    """Hold `BATCHED_BACKWARD` while an explainer that back-propagates a batch to the input runs."""
    if explainer.backward_to == "input" and explainer.batch_size() > 1:
        with BATCHED_BACKWARD:
            yield
    else:
        yield


def explain(model: nn.Module, x: torch.Tensor, method: str, target: int | None = None, *,
            predict: bool = True, **params) -> Explanation:
    """Explain the model's score for ``target`` on one preprocessed image.

    Args:
        model: a model in eval mode (left exactly as found).
        x: normalised (1, C, H, W) float tensor (`core.inference.preprocess`).
        method: a key of `core.explainers.EXPLAINERS`.
        target: class to explain; the predicted class when None (one extra forward for most methods).
        predict: also fill ``predicted_seconds`` (calibrates this model once per size and batch).
        **params: method parameters (each class's ``defaults``; an unknown one raises).

    Raises:
        ExplainError: unknown method or parameter (or one past its limit, see `core.explainer`), an input the
            model cannot take (`core.inference.check_input`: shape, channels, dtype, NaN/inf; a side smaller than
            its pooling needs, `core.models.smallest_side_needed`), target out of range, or a map that is not
            finite (a model producing NaN).
    """
    check_input(model, x, "explain", single=True, error=ExplainError)  # the checks predict makes, before any pass
    require_eval(model)
    explainer = make_explainer(model, method, x.shape[-2:], **params)
    n_classes = _num_classes(model) if target is not None else None  # a walk over every module: only when needed
    if n_classes is not None and not 0 <= int(target) < n_classes:
        raise ExplainError(f"target {target} out of range for {n_classes} classes")
    predicted = estimate_cost(model, method, x.shape[-2:], target_known=target is not None,
                              **params).predicted_seconds if predict else None
    passes = dict(explainer.passes())
    # a method that needs the input's gradient gets its own leaf; the others only read the image
    x_in = x.detach().clone().requires_grad_() if explainer.backward_to == "input" else x.detach()
    with memory_slot(explainer), model_lock(model).hold(exclusive=not explainer.thread_safe), \
            preserve_model_state(model):
        start = time.perf_counter()
        if target is None and explainer.needs_target:
            with torch.inference_mode():
                target = int(model(x_in).argmax(1)[0])
            passes["forward"] += 1
        relevance, extras = explainer.attribute(x_in, None if target is None else int(target))
        # normalize_map turns a map with any non-finite value into NaN, and its values are in [0, 1]: the sum
        # is NaN exactly then (a cheaper test than an element-wise one)
        relevance = relevance.detach().float().cpu()
        relevance = relevance if explainer.normalised else normalize_map(relevance)
        if torch.isnan(relevance.sum()):
            raise ExplainError(f"{method} produced a non-finite map: check that the model's outputs are finite")
        seconds = time.perf_counter() - start
    target = int(extras.pop("target", target))
    return Explanation(relevance.numpy().astype(np.float32), method, target, passes, seconds, predicted,
                       dict(explainer.params), extras)
