"""What an explanation will cost before it runs: per-pass calibration on this host, and the cost model.

`calibrate` measures one forward (no grad) and one forward+backward to the input, per image, at the
batch size a method feeds the model; `estimate_cost` turns an explainer's pass count into seconds,
so a user sees the price before pressing a button.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from core import memory
from core.explainers import CostEstimate, make_explainer
from core.hooks import preserve_model_state, require_eval
from core.stopwatch import time_callable

__all__ = ["Calibration", "ScoringCost", "calibrate", "estimate_cost", "estimate_scoring_cost"]


@dataclass(frozen=True)
class Calibration:
    """Per-image seconds of one forward (no grad) and of one backward to the input, at a batch size."""

    input_size: tuple[int, int]
    batch_size: int
    forward_s: float
    backward_s: float  # NaN until measured
    threads: int
    device: str


_CALIBRATIONS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
# One measurement at a time in the process: several threads (the app's sessions) asking at once would each run
# the model's batches together, distorting each other's times and holding every batch's activations at once (six
# sessions opening the Explanations page together took the server from 0.86 to 1.73 GB); a thread that waited
# finds the model measured and reuses it.
_MEASURING = threading.RLock()


def calibrate(model: nn.Module, input_size: int | tuple[int, int], batch_size: int = 1, *, backward: bool = True,
              repeats: int = 3, warmup: int = 1, refresh: bool = False) -> Calibration:
    """Measure one forward and one forward+backward of ``model`` on this host, per image, at a batch size.

    Cached per (model, input size, batch size, thread count): a first call runs ``warmup + repeats``
    of each and keeps the medians. ``backward=False`` skips the backward (``backward_s`` stays NaN
    until a call asks for it); ``refresh`` measures again (a benchmark pairs it with its own run).
    The model must be in eval mode and is left as found.
    """
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(int(s) for s in input_size)
    key = (size, int(batch_size), torch.get_num_threads())
    with _MEASURING:
        cache = _CALIBRATIONS.setdefault(model, {})
        cached = None if refresh else cache.get(key)
        if cached is not None and (not backward or not math.isnan(cached.backward_s)):
            return cached
        cache[key] = _measure(model, size, int(batch_size), backward, cached, repeats, warmup)
        memory.release_freed_memory()  # the batches' activations, before the next thread measures in its own heap
        return cache[key]


def _measure(model: nn.Module, size: tuple[int, int], batch_size: int, backward: bool, cached: Calibration | None,
             repeats: int, warmup: int) -> Calibration:
    require_eval(model)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    x = torch.randn(batch_size, convs[0].in_channels if convs else 3, *size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def forward():
        with torch.inference_mode():
            model(x)

    def forward_backward():
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xg)[:, 0].sum(), xg)

    with preserve_model_state(model):
        t_f = cached.forward_s * batch_size if cached is not None else \
            time_callable(forward, repeats=repeats, warmup=warmup, sync=sync).median
        t_b = float("nan")
        if backward:
            t_b = max(time_callable(forward_backward, repeats=repeats, warmup=warmup, sync=sync).median - t_f, 0.0)
    return Calibration(size, batch_size, t_f / batch_size, t_b / batch_size, torch.get_num_threads(), str(device))


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


@dataclass(frozen=True)
class ScoringCost:
    """Passes and predicted seconds of scoring one map: deletion/insertion curves and a sanity cascade."""

    passes: dict[str, int]
    predicted_seconds: float


def estimate_scoring_cost(model: nn.Module, method: str, input_size, *, curve_steps: int | None,
                          sanity_layers: int | None, **params) -> ScoringCost:
    """What scoring a map of ``method`` costs on top of computing it.

    Deletion and insertion each run ``curve_steps + 1`` single-image forwards; the sanity check explains the
    image again with the trained model and once per randomised layer (``sanity_layers + 1`` runs of the
    method). ``None`` skips that part.
    """
    passes, seconds = {"forward": 0, "backward": 0}, 0.0
    if curve_steps is not None:
        passes["forward"] += 2 * (curve_steps + 1)
        seconds += 2 * (curve_steps + 1) * calibrate(model, input_size, 1, backward=False).forward_s
    if sanity_layers is not None:
        method_cost = estimate_cost(model, method, input_size, **params)
        runs = sanity_layers + 1
        passes["forward"] += runs * method_cost.passes["forward"]
        passes["backward"] += runs * method_cost.passes["backward"]
        seconds += runs * method_cost.predicted_seconds
    return ScoringCost(passes, seconds)
