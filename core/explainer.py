"""What every explainer shares: the base class, its registry, the result and cost records, and the errors.

The methods themselves are `core.explainers` (one small class each, registered by name); `core.explain.explain`
is the one call that runs them. What the app and the studies need to know about a method (its names, whether it
is slow, its batch in the app) is a class attribute of its class, and `registered_methods` is the one way to list
them.

Limits, checked when an explainer is built (so by `core.costs.estimate_cost` and before `core.explain.explain`
runs a pass), so that no setting runs unbounded: at most `MAX_PASSES` images through the model for one
explanation (``n_steps``, ``n_samples``, occlusion's windows), `MAX_BATCH` images per model call
(``internal_batch_size``, ``perturbations_per_eval``) and `MAX_GRID` patches per side for KernelSHAP and LIME;
baselines, ``stdevs`` and ``alpha`` finite (the last two not negative), seeds from 0 to 2**32 - 1.
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
from torch import nn

from core.registry import Registry


# Occlusion at stride 1 on the app's 128 px images is 127 x 127 windows and one unoccluded pass, within
# MAX_PASSES; KernelSHAP with n_samples=10**8 or LIME with grid=4096 (a least-squares fit over 16.8 million
# patches) would run for days or exhaust memory.
MAX_PASSES = 16_384
MAX_BATCH = 256
MAX_GRID = 64
MAX_SEED = 2**32 - 1  # numpy's seeding takes 32 bits
COUNTS = ("n_steps", "n_samples", "internal_batch_size", "perturbations_per_eval", "grid", "window", "stride")
BATCHES = ("internal_batch_size", "perturbations_per_eval")
PASS_SETTINGS = ("n_steps", "n_samples", "window", "stride")  # what sets a method's pass count


class ExplainError(ValueError):
    """An explanation that cannot be computed as asked (bad method, parameter, input or target)."""


@dataclass
class Explanation:
    """One explanation of one image.

    Attributes:
        heatmap: float32 (H, W) array, the input's height and width, in [0, 1].
        method: registry name. target: explained class.
        passes: ``{"forward": n, "backward": m}`` images pushed through the model (a batch of 16
            counts 16), including the prediction pass when no target was given.
        seconds: measured wall time of the method (calibration excluded).
        predicted_seconds: the cost model's prediction (None when not asked for).
        params: the resolved parameters. extras: method-specific (``raw`` signed map; feature_maps:
            ``layers``, ``shapes``, ``logits``, ``probabilities``).
    """

    heatmap: np.ndarray
    method: str
    target: int
    passes: dict[str, int]
    seconds: float
    predicted_seconds: float | None
    params: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CostEstimate:
    """Passes and predicted time of a method at given settings (the pass-count bound)."""

    method: str
    passes: dict[str, int]
    batch_size: int
    predicted_seconds: float


EXPLAINERS = Registry("method", ExplainError)


def register_explainer(name: str):
    """Class decorator: add an `Explainer` subclass to `EXPLAINERS` under ``name``."""

    def _register(cls):
        cls.name = name
        return EXPLAINERS.register(name)(cls)

    return _register


def registered_methods(**where: Any) -> list[str]:
    """Registered method names in registration order (the order every menu, table and study shows them),
    keeping only the classes whose class attributes equal ``where`` (``registered_methods(slow=False)``); a
    name that `Explainer` does not declare as a class attribute raises. A method that reads a trained head
    shipped beside the model (``needs_head``) is listed only when asked for (``needs_head=True``): every model
    explains with the others, while a model without its head cannot with it."""
    unknown = sorted(key for key in where if key not in Explainer.__annotations__)
    if unknown:
        raise ExplainError(f"explainers have no attribute(s) {unknown}")
    where = {"needs_head": False, **where}
    return [name for name, cls in EXPLAINERS.items() if all(getattr(cls, k) == v for k, v in where.items())]


def make_explainer(model: nn.Module, method: str, input_size: int | tuple[int, int], **params) -> "Explainer":
    """Instantiate a registered explainer with validated parameters (an unknown one raises)."""
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(int(s) for s in input_size)
    return EXPLAINERS[method](model, size, **params)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch and numpy (Captum samples with both) and restore the global generators afterwards."""
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)


class Explainer:
    """Base class: subclasses set ``defaults`` and implement ``passes`` and ``attribute``.

    A new method is one subclass: its class attributes below are all that the app, the benchmarks and the
    faithfulness study read about it, and registering it (`register_explainer`) puts it in their lists.

    Attributes:
        name: the registry name (set by `register_explainer`), used in code, URLs and files.
        title: the method's name in menus and headings.
        short_title: its name in legends and table columns; empty: the ``title``.
        slow: hundreds of passes at the defaults, or tens with a backward each: the faithfulness study scores it
            on a seeded subset of its images.
        single_pass: one forward pass and no backward whatever the settings: the maps the distilled student
            makes almost for free, which the timing's speed factors compare Grad-CAM with.
        preselected: chosen when the Explanations and Timing pages open without a method in the link.
        app_batch: images per batched backward in the app (its ``internal_batch_size``); None: the method's
            default. The app's memory peak grows with it (integrated gradients at 16 images added about 600 MB
            on the DenseNet teacher at 128 px in the app's memory benchmark); on a CPU a smaller batch costs
            little time, the same passes in more calls.
        in_timing_table: timed for the shipped timing table (`core.reproduce`): the paper's comparison of the
            student's maps with the teacher's usual explainers.
        backward_to: how far the backward pass goes: "input", "layer" (stops at the target layer,
            costs little) or "none".
        needs_target: False when the method finds the predicted class in its own forward pass.
        thread_safe: True when concurrent calls on one shared model cannot disturb each other (hooks that
            record only their own thread's forward); Captum's methods are not, and run one at a time.
        normalised: True when ``attribute`` already returns the map min-max normalised by
            `core.featuremaps.normalize_map` (NaN where not finite), so `core.explain.explain` need not again.
        needs_head: True when the method reads a head trained for the model and attached to it (the teacher's
            evidence, `core.teacher_evidence`): `registered_methods` leaves it out unless asked for.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    short_title: ClassVar[str] = ""
    slow: ClassVar[bool] = False
    single_pass: ClassVar[bool] = False
    preselected: ClassVar[bool] = False
    app_batch: ClassVar[int | None] = None
    in_timing_table: ClassVar[bool] = True
    backward_to: ClassVar[str] = "input"
    needs_target: ClassVar[bool] = True
    thread_safe: ClassVar[bool] = False
    normalised: ClassVar[bool] = False
    needs_head: ClassVar[bool] = False

    def __init__(self, model: nn.Module, input_size: tuple[int, int], **params):
        defaults = self.defaults(input_size)
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ExplainError(f"{self.name} has no parameter(s) {unknown}; known: {sorted(defaults)}")
        self.model, self.input_size = model, tuple(input_size)
        self.params = {**defaults, **{k: v for k, v in params.items() if v is not None}}
        self.validate()
        self.check_passes()

    @classmethod
    def defaults(cls, input_size: tuple[int, int]) -> dict[str, Any]:
        return {}

    @classmethod
    def can_explain(cls, model: nn.Module) -> bool:
        """Whether ``model`` has what the method reads besides the model itself (a head: ``needs_head``)."""
        return True

    def validate(self) -> None:
        """Refuse a parameter that is not a number of its kind or is past its limit (the module's ``MAX_*``)."""
        for key, value in self.params.items():
            if key in COUNTS:
                self._whole(key, value, 1)
            if key in BATCHES and value > MAX_BATCH:
                raise ExplainError(f"{self.name}: {key} must be at most {MAX_BATCH} images per call, got {value}")
            if key == "grid" and value > min(MAX_GRID, *self.input_size):
                raise ExplainError(f"{self.name}: grid must be at most {MAX_GRID} patches per side and no more than "
                                   f"the image's {min(self.input_size)} px, got {value}")
            if key in ("baseline", "stdevs", "alpha"):
                self._finite(key, value, non_negative=key != "baseline")
            if key == "black" and value is not None:
                for v in (value if isinstance(value, (list, tuple)) else [value]):
                    self._finite(key, v)
            if key == "seed":
                self._whole(key, value, 0, MAX_SEED)

    def check_passes(self) -> None:
        """Refuse settings that push more than `MAX_PASSES` images through the model (after `validate`)."""
        total = self.passes()["forward"]
        if total > MAX_PASSES:
            settings = ", ".join(f"{key}={value:,}" for key, value in self.params.items() if key in PASS_SETTINGS)
            raise ExplainError(f"{self.name}: {settings} need {total:,} passes of the model; at most {MAX_PASSES:,} "
                               "are allowed (fewer samples or steps, a larger stride)")

    def _whole(self, key: str, value, low: int, high: int | None = None) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ExplainError(f"{self.name}: {key} must be a whole number, got {value!r}")
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ExplainError(f"{self.name}: {key} must be {bounds}, got {value}")

    def _finite(self, key: str, value, non_negative: bool = False) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or \
                (non_negative and value < 0):
            kind = "a finite number of at least 0" if non_negative else "a finite number"
            raise ExplainError(f"{self.name}: {key} must be {kind}, got {value!r}")

    def passes(self) -> dict[str, int]:
        """Images through the model at these settings, excluding a prediction pass."""
        raise NotImplementedError

    def batch_size(self) -> int:
        """Images per forward call (the batch at which the per-pass cost is calibrated)."""
        return 1

    def map_side(self) -> int:
        """Cells per side of the grid this method's map is drawn at before it is upsampled to the image: the
        image's side for the gradient methods (one value per pixel); a layer's side, the occlusion windows or the
        patch grid for the others. The faithfulness study draws its random map at this side, so a coarse map is
        compared with noise as coarse as itself, not with per-pixel noise."""
        return min(self.input_size)

    def attribute(self, x: torch.Tensor, target: int) -> tuple[torch.Tensor, dict]:
        """Return a non-negative (H, W) relevance map for ``target`` and method extras."""
        raise NotImplementedError
