"""Explainers behind one call shape: ``explain(model, x, method, target=None, **params)``.

One small class per method in the `EXPLAINERS` registry (the app lists methods from it). Each class
states its defaults for an input size, its pass count at those settings, the batch it feeds the model,
and how far its backward goes; `estimate_cost` turns that into a predicted time from a one-time
calibration of this model on this host (`core.timing.calibrate`), so a user sees the price before running.

The Captum baselines are called the standard way (``LayerGradCam(model, layer).attribute(x, target=c)``
etc.) so that timings compare like with like. KernelShap and Lime fit their linear surrogate with
`least_squares_model` (weighted least squares in closed form, in torch): Captum's default surrogates
need scikit-learn, which is not a dependency. Every ``.map`` is non-negative evidence for the target,
min-max normalised to [0, 1]; signed attributions keep their positive part (as Grad-CAM's ReLU does)
and the signed map is kept in ``extras["raw"]``.
"""


from __future__ import annotations

import threading
import time
import weakref
from typing import Any

import numpy as np
import torch
from torch import nn

from core.explainers import (EXPLAINERS, CostEstimate, Explainer, ExplainError, Explanation, least_squares_model,
                             register_explainer)
from core.featuremaps import normalize_map, preserve_model_state, require_eval
from core.timing import calibrate

__all__ = ["ExplainError", "Explanation", "CostEstimate", "Explainer", "EXPLAINERS", "register_explainer", "explain",
           "estimate_cost", "make_explainer", "method_defaults", "least_squares_model"]


def method_defaults(method: str, input_size: int | tuple[int, int]) -> dict[str, Any]:
    """Default parameters of a method at an input size (for forms in the app)."""
    return _explainer_class(method).defaults(_size(input_size))


def _explainer_class(method: str) -> type[Explainer]:
    if method not in EXPLAINERS:
        raise ExplainError(f"unknown method {method!r}; choose one of {', '.join(EXPLAINERS)}")
    return EXPLAINERS[method]


def _size(input_size) -> tuple[int, int]:
    return (input_size, input_size) if isinstance(input_size, int) else tuple(int(s) for s in input_size)


def make_explainer(model: nn.Module, method: str, input_size, **params) -> Explainer:
    """Instantiate a registered explainer with validated parameters."""
    return _explainer_class(method)(model, _size(input_size), **params)


def estimate_cost(model: nn.Module, method: str, input_size, *, target_known: bool = True,
                  **params) -> CostEstimate:
    """Passes and predicted seconds of ``method`` on ``model`` at ``input_size`` (calibrates once).

    ``predicted = F * t_f + B * t_b`` with per-image forward/backward costs at the batch the method
    uses; a backward that stops at the target layer (Grad-CAM) is counted as free. Without a known
    target, one batch-1 prediction forward is added.
    """
    explainer = make_explainer(model, method, input_size, **params)
    passes = dict(explainer.passes())
    needs_backward = explainer.backward_to == "input" and passes["backward"] > 0
    cal = calibrate(model, input_size, explainer.batch_size(), backward=needs_backward)
    seconds = passes["forward"] * cal.forward_s
    if needs_backward:
        seconds += passes["backward"] * cal.backward_s
    if not target_known and explainer.needs_target:
        passes["forward"] += 1
        seconds += calibrate(model, input_size, 1, backward=False).forward_s
    return CostEstimate(method, passes, explainer.batch_size(), seconds)


def _num_classes(model: nn.Module) -> int | None:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


_LAYER_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.Lock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _layer_lock(model: nn.Module) -> threading.Lock:
    """Captum's layer hooks record every thread's forward: serialise layer methods per shared model."""
    with _LOCKS_GUARD:
        return _LAYER_LOCKS.setdefault(model, threading.Lock())


def explain(model: nn.Module, x: torch.Tensor, method: str, target: int | None = None, *,
            predict: bool = True, **params) -> Explanation:
    """Explain the model's score for ``target`` on one preprocessed image.

    Args:
        model: a model in eval mode (left exactly as found).
        x: normalised (1, C, H, W) float tensor (`core.inference.preprocess`).
        method: a key of `EXPLAINERS`.
        target: class to explain; the predicted class when None (one extra forward for most methods).
        predict: also fill ``predicted_seconds`` (calibrates this model once per size and batch).
        **params: method parameters (see `method_defaults`).

    Raises:
        ExplainError: unknown method or parameter, bad input shape, target out of range, or a map that
            is not finite (a model producing NaN).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] != 1 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ExplainError(f"explain needs one float image shaped (1, C, H, W), got {shape}")
    require_eval(model)
    explainer = make_explainer(model, method, x.shape[-2:], **params)
    n_classes = _num_classes(model)
    if target is not None and n_classes is not None and not 0 <= int(target) < n_classes:
        raise ExplainError(f"target {target} out of range for {n_classes} classes")
    predicted = estimate_cost(model, method, x.shape[-2:], target_known=target is not None,
                              **params).predicted_seconds if predict else None
    passes = dict(explainer.passes())
    x_in = x.detach().clone().requires_grad_(explainer.backward_to == "input")
    lock = _layer_lock(model) if explainer.backward_to == "layer" else threading.Lock()
    with lock, preserve_model_state(model):
        start = time.perf_counter()
        if target is None and explainer.needs_target:
            with torch.inference_mode():
                target = int(model(x_in).argmax(1)[0])
            passes["forward"] += 1
        relevance, extras = explainer.attribute(x_in, None if target is None else int(target))
        relevance = relevance.detach().float().cpu()
        if not torch.isfinite(relevance).all():
            raise ExplainError(f"{method} produced a non-finite map: check that the model's outputs are finite")
        relevance = normalize_map(relevance)
        seconds = time.perf_counter() - start
    target = int(extras.pop("target", target))
    return Explanation(relevance.numpy().astype(np.float32), method, target, passes, seconds, predicted,
                       dict(explainer.params), extras)
