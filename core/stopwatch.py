"""An honest stopwatch: warm-up, perf_counter, median and IQR, and what a timing depends on.

Conventions (as TorchCAM's ``eval_latency``): every timed call is bracketed by ``sync`` (CUDA
synchronisation, or nothing on CPU) and the clock; warm-up calls are not timed. The clock and sync
are arguments, so a test can check the order of events with fakes instead of asserting times.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

__all__ = ["TimingResult", "time_callable", "environment"]


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
