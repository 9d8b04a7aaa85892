"""An honest timing harness: warm-up, fixed threads, perf_counter, median and IQR, pass-count bounds.

Conventions (after TorchCAM's ``eval_latency``): every timed call is bracketed by ``sync`` (CUDA
synchronisation, or nothing on CPU) and the clock; warm-up calls are not timed; the same images and
targets go to every method; the plain forward pass is reported in its own row and column, so the
explainer's own cost (``overhead_s``) is visible; each row carries the pass-count bound of
`core.explain.estimate_cost` and the ratio measured / bound. The clock and sync are arguments, so a
test can check the order of events with fakes instead of asserting times.

`calibrate` measures the per-pass costs behind every prediction: one forward (no grad) and one
forward+backward to the input, per image, at the batch size a method feeds the model.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["TimingResult", "time_callable", "Calibration", "calibrate", "environment", "benchmark_methods",
           "ProgressCallback"]

ProgressCallback = Callable[[int, int, str], None]


@dataclass
class TimingResult:
    """Seconds per call over the timed repeats (warm-up excluded)."""

    samples: list[float]
    warmup: int = 0
    q25: float = field(init=False)
    median: float = field(init=False)
    q75: float = field(init=False)
    mean: float = field(init=False)

    def __post_init__(self):
        if not self.samples:
            raise ValueError("a timing needs at least one sample")
        self.q25, self.median, self.q75 = (float(v) for v in np.percentile(self.samples, [25, 50, 75]))
        self.mean = float(np.mean(self.samples))

    @property
    def iqr(self) -> float:
        """Interquartile range q75 - q25 (linear interpolation between samples)."""
        return self.q75 - self.q25


def _no_sync() -> None:
    return None


def time_callable(fn: Callable[[], object], repeats: int = 10, warmup: int = 2, *,
                  clock: Callable[[], float] = time.perf_counter,
                  sync: Callable[[], None] | None = None) -> TimingResult:
    """Time ``fn`` ``repeats`` times after ``warmup`` untimed calls.

    Order of events: warm-up ``fn, sync`` (x ``warmup``), then per repeat
    ``sync, clock, fn, sync, clock``: pending device work never leaks into or out of a sample.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    sync = sync or _no_sync
    for _ in range(warmup):
        fn()
        sync()
    samples = []
    for _ in range(repeats):
        sync()
        start = clock()
        fn()
        sync()
        samples.append(clock() - start)
    return TimingResult(samples, warmup)


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


def calibrate(model: nn.Module, input_size: int | tuple[int, int], batch_size: int = 1, *, backward: bool = True,
              repeats: int = 3, warmup: int = 1, refresh: bool = False) -> Calibration:
    """Measure one forward and one forward+backward of ``model`` on this host, per image, at a batch size.

    Cached per (model, input size, batch size, thread count): a first call runs ``warmup + repeats``
    of each and keeps the medians. ``backward=False`` skips the backward (``backward_s`` stays NaN
    until a call asks for it); ``refresh`` measures again (a benchmark pairs it with its own run).
    The model must be in eval mode and is left as found.
    """
    from core.featuremaps import preserve_model_state, require_eval

    size = (input_size, input_size) if isinstance(input_size, int) else tuple(int(s) for s in input_size)
    key = (size, int(batch_size), torch.get_num_threads())
    cache = _CALIBRATIONS.setdefault(model, {})
    cached = None if refresh else cache.get(key)
    if cached is not None and (not backward or not math.isnan(cached.backward_s)):
        return cached
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
    cache[key] = Calibration(size, int(batch_size), t_f / batch_size, t_b / batch_size, torch.get_num_threads(),
                             str(device))
    return cache[key]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str | torch.device = "cpu") -> dict[str, object]:
    """Library versions, device and threading: what a timing depends on."""
    import captum
    import torchvision

    device = torch.device(device)
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "captum": captum.__version__, "numpy": np.__version__, "platform": platform.platform(),
            "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "device": str(device),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,  # others' work skews timings
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def _row(model_name: str, method: str, timing: TimingResult, n_images: int, repeats: int, forward_s: float,
         passes: dict, bound_s: float, input_size, params: dict) -> dict:
    return {"model": model_name, "method": method, "images": n_images, "repeats": repeats, "warmup": timing.warmup,
            "mean_s": timing.mean, "median_s": timing.median, "iqr_s": timing.iqr, "q25_s": timing.q25,
            "q75_s": timing.q75, "forward_s": forward_s, "overhead_s": timing.median - forward_s,
            "x_forward": timing.median / forward_s if forward_s > 0 else float("nan"),
            "passes_forward": passes["forward"], "passes_backward": passes["backward"],
            "bound_s": bound_s, "ratio_to_bound": timing.median / bound_s if bound_s > 0 else float("nan"),
            "input_size": "x".join(str(s) for s in input_size), "threads": torch.get_num_threads(),
            "params": json.dumps(params, sort_keys=True)}


def benchmark_methods(models: Mapping[str, nn.Module], images: torch.Tensor | Mapping[str, torch.Tensor],
                      methods: Sequence[str], targets: Sequence[int], *, repeats: int = 5, warmup: int = 1,
                      params: Mapping[str, dict] | None = None, budget_s: float | None = None,
                      threads: int | None = None, clock: Callable[[], float] = time.perf_counter,
                      sync: Callable[[], None] | None = None,
                      on_progress: ProgressCallback | None = None) -> list[dict]:
    """Time every method on every model over the same images and targets.

    Args:
        models: name -> model in eval mode.
        images: normalised (N, 3, H, W) batch shared by all models, or name -> batch when the models
            preprocess differently (the same N images in the same order).
        methods: registry names of `core.explain.EXPLAINERS`.
        targets: one class per image, used for every model and method.
        repeats: timed runs per image; warmup: untimed runs on the first image.
        params: method -> parameters.
        budget_s: if set, a method whose predicted time for all runs exceeds it gets fewer repeats
            (at least one per image) and no warm-up when one run takes over a second; the row says so.
        threads: torch CPU threads for the run (restored afterwards).

    Returns:
        One row per (model, method), plus a ``"forward"`` row per model: median and IQR of seconds per
        image, the model's plain forward time, passes, the pass-count bound and the ratio to it.
    """
    from core.explain import estimate_cost, explain

    params = dict(params or {})
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    rows, done, total = [], 0, len(models) * (len(methods) + 1)
    try:
        for name, model in models.items():
            batch = images[name] if isinstance(images, Mapping) else images
            if len(batch) != len(targets) or len(batch) == 0:
                raise ValueError(f"{len(batch)} images for {len(targets)} targets")
            size = tuple(batch.shape[-2:])
            samples = []
            for i in range(len(batch)):
                x = batch[i:i + 1]

                def forward(x=x):
                    with torch.inference_mode():
                        model(x)

                samples += time_callable(forward, repeats, warmup if i == 0 else 0, clock=clock, sync=sync).samples
            fwd = TimingResult(samples, warmup)
            rows.append(_row(name, "forward", fwd, len(batch), repeats, fwd.median, {"forward": 1, "backward": 0},
                             fwd.median, size, {}))
            done += 1
            if on_progress:
                on_progress(done, total, f"{name}: forward")
            for method in methods:
                method_params = dict(params.get(method, {}))
                cost = estimate_cost(model, method, size, **method_params)
                runs, method_warmup = repeats, warmup
                if budget_s is not None and cost.predicted_seconds * repeats * len(batch) > budget_s:
                    runs = max(1, int(budget_s / max(cost.predicted_seconds * len(batch), 1e-9)))
                    method_warmup = 0 if cost.predicted_seconds > 1.0 else warmup
                samples = []
                for i in range(len(batch)):
                    x, target = batch[i:i + 1], int(targets[i])

                    def call(x=x, target=target):
                        explain(model, x, method, target, predict=False, **method_params)

                    samples += time_callable(call, runs, method_warmup if i == 0 else 0,
                                             clock=clock, sync=sync).samples
                timing = TimingResult(samples, method_warmup)
                rows.append(_row(name, method, timing, len(batch), runs, fwd.median, cost.passes,
                                 cost.predicted_seconds, size, method_params))
                done += 1
                if on_progress:
                    on_progress(done, total, f"{name}: {method}")
    finally:
        torch.set_num_threads(previous_threads)
    return rows
