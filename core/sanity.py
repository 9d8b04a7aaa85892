"""Does a map depend on what the model learnt? The cascading model-randomisation check (Adebayo et al., "Sanity
Checks for Saliency Maps", NeurIPS 2018), the similarity measures it reads, and what unrelated maps score.

The check explains one image again after re-initialising more and more layers, from the top down, and compares
each map with the trained model's. As Adebayo et al. and Arun et al. (2021, saliency maps on medical images)
report it, four measures: the signed rank correlation, its absolute value (a map that turns into its own
inverse has kept its structure: a negative correlation is no pass, only one near 0 is), the structural
similarity (SSIM) and the IoU of the top 10 %. Read alone, none of them says what "far apart" is:
`unrelated_pair_scores` gives the same measures for maps of two different images from one model.

A constant map (every pixel equal: a Grad-CAM whose ReLU zeroed every position, a map of a dead network)
explains nothing. It is not missing data, and it has no ranking: its rank correlation is undefined, its SSIM
only the formula's stabilising constants against the other map's brightness, and its "top 10 %" the first rows
in raster order. So a pair with a constant map is counted as constant (`SanityStep.constant`, the ``constant``
flags of `map_similarity` and `unrelated_pair_scores`) and all four of its scores are NaN: scores summarise the
non-constant maps, always shown beside how many maps turned constant.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.explain import explain
from core.faithfulness import spearman, topk_iou
from core.featuremaps import normalize_map
from core.hooks import model_layers, preserve_model_state

__all__ = ["SSIM_WINDOW", "SSIM_SIGMA", "is_constant", "ssim", "map_similarity", "unrelated_pair_scores",
           "SanityStep", "SanityResult", "top_down_modules", "sanity_check"]

SSIM_WINDOW, SSIM_SIGMA = 11, 1.5  # the standard Gaussian window of SSIM (Wang et al. 2004)
SSIM_K1, SSIM_K2 = 0.01, 0.03  # its stabilising constants, for maps scaled to a data range of 1
SANITY_TOP_PERCENT = 10.0  # the share of pixels whose IoU the check reports
NAN = float("nan")


def is_constant(m) -> bool:
    """True when every pixel of the map has the same value (a map with NaN is broken, not constant)."""
    m = np.asarray(m)
    return m.size > 0 and bool(m.max() == m.min())


def _gaussian_window(side: int) -> torch.Tensor:
    offsets = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
    g = torch.exp(-offsets ** 2 / (2 * SSIM_SIGMA ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a, b) -> float:
    """Mean structural similarity (Wang et al. 2004) of two maps of one shape, each min-max scaled to [0, 1].

    The standard single-scale form: an 11 x 11 Gaussian window of sigma 1.5 (the largest odd side that fits, for a
    map under 11 px), K1 = 0.01 and K2 = 0.03 over a data range of 1, the window's weighted means, variances and
    covariance, averaged over every position where the window lies inside the map. 1 for maps equal after
    scaling, near 0 for unrelated ones, negative where one map's structure is the other's inverted. A constant
    map scales to all zeros (`core.featuremaps.normalize_map`); its SSIM is then the formula's value,
    ``C1 / (mu_b^2 + C1) * C2 / (var_b + C2)`` at each position, not a statement about structure (see the
    module's note on constant maps).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two 2-D maps of one shape, got {a.shape} and {b.shape}")
    x, y = (normalize_map(torch.from_numpy(m))[None, None] for m in (a, b))
    side = min(SSIM_WINDOW, *a.shape)
    window = _gaussian_window(side - (side % 2 == 0))
    mean_x, mean_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mean_x ** 2
    var_y = F.conv2d(y * y, window) - mean_y ** 2
    cov = F.conv2d(x * y, window) - mean_x * mean_y
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    local = ((2 * mean_x * mean_y + c1) * (2 * cov + c2)) / ((mean_x ** 2 + mean_y ** 2 + c1) * (var_x + var_y + c2))
    return float(local.mean())


def map_similarity(a, b, top_percent: float = SANITY_TOP_PERCENT) -> dict[str, float | bool]:
    """How alike two maps of one shape are: ``{"spearman", "abs_spearman", "ssim", "iou", "constant"}``.

    ``iou``: of the top ``top_percent`` % pixels. ``constant``: either map is constant; then all four scores are
    NaN (see the module's note), never a number that looks like an answer.
    """
    if is_constant(a) or is_constant(b):
        return {"spearman": NAN, "abs_spearman": NAN, "ssim": NAN, "iou": NAN, "constant": True}
    rho = spearman(a, b)
    return {"spearman": rho, "abs_spearman": abs(rho), "ssim": ssim(a, b), "iou": topk_iou(a, b, top_percent),
            "constant": False}


def unrelated_pair_scores(maps, top_percent: float = SANITY_TOP_PERCENT) -> dict[str, np.ndarray]:
    """The random-image-pair baseline: `map_similarity` of maps of different images from one model.

    Args:
        maps: (N, H, W), N >= 2, one map per image, all of different images and from the same model and method.

    Returns:
        ``{"spearman", "abs_spearman", "ssim", "iou"}``: float arrays, and ``"constant"``: a bool array, one entry
        per pair: each map with the next image's, the last with the first (N pairs; one pair for N = 2). What two
        maps that explain different images score is what "unrelated" looks like: a randomised model's map is far
        from its trained map only where it scores like these.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3 or len(maps) < 2:
        raise ValueError(f"unrelated pairs need (N, H, W) maps of N >= 2 images, got shape {maps.shape}")
    n = len(maps)
    rows = [map_similarity(maps[i], maps[(i + 1) % n], top_percent) for i in range(n if n > 2 else 1)]
    return {key: np.array([row[key] for row in rows], dtype=bool if key == "constant" else float)
            for key in ("spearman", "abs_spearman", "ssim", "iou", "constant")}


@dataclass
class SanityStep:
    """One step of the cascade: every module in ``randomized`` re-initialised (``layer`` the newest).

    ``spearman``, ``abs_spearman``, ``ssim``, ``iou``: `map_similarity` of the trained and this step's map, NaN
    when either is constant. ``constant``: this step's (randomised) map is constant.
    """

    layer: str
    randomized: list[str]
    spearman: float
    iou: float
    map_randomized: np.ndarray
    constant: bool = False
    abs_spearman: float = NAN
    ssim: float = NAN


@dataclass
class SanityResult:
    """Outcome of the cascading model-randomisation check.

    Attributes:
        steps: one `SanityStep` per cascade step, top module first. Its ``spearman`` is the rank correlation
            of the trained and the randomised map: near 1 means the map does not depend on the weights
            randomised so far (the check fails), near 0 means it does. ``iou``: top-10 % IoU of the two maps.
            A step whose map turned constant has ``constant`` set and NaN scores: it is counted, not dropped.
        randomized, spearman, abs_spearman, ssim, iou, constant, map_randomized: those of the last step.
        trained_constant: the trained model's map is constant, so no step has a score.
    """

    method: str
    target: int
    steps: list[SanityStep]
    map_trained: np.ndarray

    @property
    def randomized(self) -> list[str]:
        return self.steps[-1].randomized

    @property
    def spearman(self) -> float:
        return self.steps[-1].spearman

    @property
    def abs_spearman(self) -> float:
        return self.steps[-1].abs_spearman

    @property
    def ssim(self) -> float:
        return self.steps[-1].ssim

    @property
    def iou(self) -> float:
        return self.steps[-1].iou

    @property
    def constant(self) -> bool:
        return self.steps[-1].constant

    @property
    def trained_constant(self) -> bool:
        return is_constant(self.map_trained)

    @property
    def map_randomized(self) -> np.ndarray:
        return self.steps[-1].map_randomized


def top_down_modules(model: nn.Module) -> list[str]:
    """Module paths from the output down: the last Linear (the head), then the feature layers reversed.

    A feature layer without parameters (the DenseNet teacher's final ReLU, a stem listed by its pooling) has
    nothing to re-initialise and is left out: its step would repeat the one before it under another name.
    """
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    layers = [path for _, path in reversed(model_layers(model))
              if next(model.get_submodule(path).parameters(), None) is not None]
    return linears[-1:] + layers


def sanity_check(model: nn.Module, x: torch.Tensor, method: str = "grad_cam", target: int | None = None, *,
                 n_layers: int | None = 2, seed: int = 0, **params) -> SanityResult:
    """Cascading model randomisation (Adebayo et al. 2018), top module first, one module more each step.

    The model is deep-copied (the shared model is never touched). Step k re-initialises the k-th module of
    `top_down_modules` (the head, then the feature layers from the last one down) with its own
    ``reset_parameters`` under a fixed seed, keeping the modules randomised before it, and explains the image
    for the same target; ``n_layers`` steps (None: every module).
    """
    trained = explain(model, x, method, target, predict=False, **params)
    names = top_down_modules(model)
    names = names[:max(1, int(n_layers))] if n_layers is not None else names
    with preserve_model_state(model):
        randomized = copy.deepcopy(model)
    for m in randomized.modules():  # hooks copied from another thread's open context must not run
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    steps = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for k, name in enumerate(names):
            for m in randomized.get_submodule(name).modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
            other = explain(randomized, x, method, trained.target, predict=False, **params).heatmap
            scores = map_similarity(trained.heatmap, other)
            steps.append(SanityStep(name, names[:k + 1], scores["spearman"], scores["iou"], other,
                                    is_constant(other), scores["abs_spearman"], scores["ssim"]))
    return SanityResult(method, trained.target, steps, trained.heatmap)
