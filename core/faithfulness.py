"""Is an explanation any good? Faithfulness, sanity, ground truth and teacher-student agreement.

* Deletion / insertion (Petsiuk et al., RISE, BMVC 2018): remove (insert) pixels in the order of the
  map and follow the class score; a faithful map gives a low deletion and a high insertion AUC.
  Batched: one forward per step for the whole batch of perturbed images.
* Model-randomisation check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018), cascading:
  the map should change more as more layers are re-initialised from the top down; a rank correlation near 1
  means it does not depend on what the model learnt.
* Ground truth (the ``phantom`` dataset's lesion masks): energy-based pointing game (Wang et al.,
  Score-CAM, 2020) and IoU of the top 5 % of the map with the mask.
* Agreement of two maps (teacher vs student): Spearman rank correlation and top-k % IoU.

Implemented in numpy/torch (no scipy).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from core.explain import explain
from core.hooks import model_layers, preserve_model_state, require_eval

__all__ = ["Curve", "SanityResult", "perturbation_curve", "deletion_curve", "insertion_curve", "rankdata",
           "pixel_ranks", "spearman", "top_mask", "topk_iou", "agreement", "pointing_game", "mask_iou", "evaluate_localisation",
           "SanityStep", "top_down_modules", "sanity_check"]


@dataclass
class Curve:
    """Score curves of a deletion or insertion run.

    Attributes:
        fractions: (steps + 1,) share of pixels removed (deletion) or inserted (insertion).
        scores: (N, steps + 1) target probability (or logit) per image and step.
        auc: (N,) trapezoidal area under each curve over fractions in [0, 1].
    """

    mode: str
    fractions: np.ndarray
    scores: np.ndarray
    auc: np.ndarray


def _as_tensor(maps, n: int) -> torch.Tensor:
    maps = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps).float()
    return maps.view(n, *maps.shape[-2:]) if maps.dim() == 2 else maps


TIE_SEED = 0  # the fixed order in which pixels of equal relevance are taken


def pixel_ranks(maps: torch.Tensor, seed: int = TIE_SEED) -> torch.Tensor:
    """(N, H, W) long: each pixel's place in its map's order, most relevant first (0), as deletion, insertion and
    ROAD remove them.

    Pixels of equal value are taken in one fixed random order (seeded, the same for every image of that size),
    not in raster order: a map with many exact zeros (integrated gradients, a ReLU'd Grad-CAM) or plateaus (a
    coarse map upsampled) would otherwise always lose its top-left pixels first, and its score would depend on
    where the image's content happens to lie.
    """
    n, h, w = maps.shape
    generator = torch.Generator().manual_seed(int(seed))
    shuffle = torch.randperm(h * w, generator=generator).to(maps.device).expand(n, -1)
    values = (-maps.flatten(1).float()).gather(1, shuffle)
    order = shuffle.gather(1, torch.argsort(values, dim=1, stable=True))
    positions = torch.arange(h * w, device=maps.device).expand(n, -1)
    return torch.empty_like(order).scatter_(1, order, positions).view(n, h, w)


def _baseline(x: torch.Tensor, baseline) -> torch.Tensor:
    if isinstance(baseline, torch.Tensor):
        return baseline.to(x).expand_as(x)
    if baseline == "blur":  # RISE's insertion start: the image with its detail removed
        side = min(x.shape[-2:])
        kernel = max(3, (side // 8) | 1)
        return gaussian_blur(x, [kernel, kernel], [side / 16.0, side / 16.0])
    if baseline == "zero":
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    raise ValueError(f"baseline must be 'zero', 'blur', a number or a tensor, got {baseline!r}")


def _trapezoid(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return ((y[..., 1:] + y[..., :-1]) / 2 * np.diff(x)).sum(-1)


def perturbation_curve(model: nn.Module, x: torch.Tensor, maps, targets: Sequence[int], *, mode: str = "deletion",
                       steps: int = 20, baseline="auto", score: str = "prob", batch_size: int = 32) -> Curve:
    """Delete or insert pixels in decreasing map order and record the target score after each step.

    Args:
        x: normalised (N, C, H, W) images; maps: (N, H, W) (or (H, W) for N = 1); targets: N classes.
        mode: "deletion" (start from the image, replace pixels by the baseline) or "insertion" (start
            from the baseline, put pixels back).
        steps: number of steps; step k perturbs ``round(k * H * W / steps)`` pixels (all channels).
        baseline: "zero" (the mean colour in normalised space), "blur", a number or a tensor;
            "auto" is zero for deletion and blur for insertion, as in RISE.
        score: "prob" (softmax probability) or "logit".
        batch_size: images per forward; each step is one forward for each chunk of images.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if score not in ("prob", "logit"):
        raise ValueError(f"score must be 'prob' or 'logit', got {score!r}")
    require_eval(model)
    n, _, h, w = x.shape
    maps = _as_tensor(maps, n).to(x.device)
    if maps.shape != (n, h, w):
        raise ValueError(f"maps must be shaped {(n, h, w)}, got {tuple(maps.shape)}")
    targets = torch.as_tensor(list(targets), dtype=torch.long, device=x.device)
    if baseline == "auto":
        baseline = "zero" if mode == "deletion" else "blur"
    base = _baseline(x, baseline)
    rank = pixel_ranks(maps)[:, None]
    counts = [round(k * h * w / steps) for k in range(steps + 1)]
    scores = np.zeros((n, steps + 1))
    with preserve_model_state(model), torch.inference_mode():
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            xs, bs, rk, tg = x[sl], base[sl], rank[sl], targets[sl]
            for k, count in enumerate(counts):
                chosen = rk < count
                perturbed = torch.where(chosen, bs, xs) if mode == "deletion" else torch.where(chosen, xs, bs)
                out = model(perturbed).float()
                out = torch.softmax(out, 1) if score == "prob" else out
                scores[sl, k] = out.gather(1, tg[:, None])[:, 0].cpu().numpy()
    fractions = np.array(counts, dtype=float) / (h * w)
    return Curve(mode, fractions, scores, _trapezoid(scores, fractions))


def deletion_curve(model: nn.Module, x: torch.Tensor, maps, targets: Sequence[int], **kwargs) -> Curve:
    """`perturbation_curve` in deletion mode (its ``auc``: lower = more faithful map)."""
    return perturbation_curve(model, x, maps, targets, mode="deletion", **kwargs)


def insertion_curve(model: nn.Module, x: torch.Tensor, maps, targets: Sequence[int], **kwargs) -> Curve:
    """`perturbation_curve` in insertion mode (its ``auc``: higher = more faithful map)."""
    return perturbation_curve(model, x, maps, targets, mode="insertion", **kwargs)


def rankdata(a) -> np.ndarray:
    """Ranks 1..n of the flattened array, ties sharing their average rank (as scipy.stats.rankdata)."""
    a = np.ravel(np.asarray(a))
    sorter = np.argsort(a, kind="mergesort")
    inverse = np.empty(a.size, dtype=np.intp)
    inverse[sorter] = np.arange(a.size)
    sorted_a = a[sorter]
    first = np.r_[True, sorted_a[1:] != sorted_a[:-1]]
    dense = first.cumsum()[inverse]
    bounds = np.r_[np.nonzero(first)[0], a.size]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(a, b) -> float:
    """Spearman rank correlation of two maps (Pearson correlation of their tie-averaged ranks).

    NaN when either map is constant (no ranking to compare).
    """
    ra, rb = rankdata(a), rankdata(b)
    if ra.size != rb.size:
        raise ValueError(f"maps differ in size: {np.size(a)} vs {np.size(b)}")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def top_mask(m, percent: float) -> np.ndarray:
    """Boolean mask of exactly ``max(1, round(percent % of pixels))`` highest pixels (ties in raster order)."""
    m = np.asarray(m, dtype=float)
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    k = max(1, int(round(percent / 100 * m.size)))
    mask = np.zeros(m.size, dtype=bool)
    mask[np.argsort(-m.ravel(), kind="stable")[:k]] = True
    return mask.reshape(m.shape)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")


def topk_iou(a, b, percent: float = 10.0) -> float:
    """IoU of the top ``percent`` % pixels of two maps of the same shape."""
    return _iou(top_mask(a, percent), top_mask(b, percent))


def _resize_like(m, shape) -> np.ndarray:
    m = np.asarray(m, dtype=np.float32)
    if m.shape == tuple(shape):
        return m
    t = F.interpolate(torch.from_numpy(m)[None, None], size=tuple(shape), mode="bilinear", align_corners=False)
    return t[0, 0].numpy()


def agreement(map_a, map_b, top_percent: float = 10.0) -> dict[str, float]:
    """Agreement of two maps of one image: ``{"spearman", "iou"}`` (b is resized to a's shape if needed)."""
    map_b = _resize_like(map_b, np.shape(map_a))
    return {"spearman": spearman(map_a, map_b), "iou": topk_iou(map_a, map_b, top_percent)}


def pointing_game(m, mask) -> dict[str, float]:
    """Pointing game against a ground-truth mask.

    Returns:
        ``{"hit": 1.0 if the map's maximum lies in the mask else 0.0, "energy": sum(map in mask) /
        sum(map)}`` (energy-based pointing game, Wang et al. 2020); NaN for an empty mask or map. Where the
        maximum is a plateau (a coarse map upsampled: a 2 x 2 map is flat over each corner) the hit is the share
        of the plateau inside the mask, the expected hit of a point drawn from it; taking the first such pixel
        would always point at the plateau's top-left corner.
    """
    m, mask = np.asarray(m, dtype=float), np.asarray(mask, dtype=bool)
    if m.shape != mask.shape:
        raise ValueError(f"map {m.shape} and mask {mask.shape} differ in shape")
    if not mask.any():
        return {"hit": float("nan"), "energy": float("nan")}
    m = np.clip(m, 0, None)
    total = m.sum()
    top = m == m.max()  # all False for a map with NaN
    return {"hit": float(mask[top].mean()) if top.any() else float("nan"),
            "energy": float(m[mask].sum() / total) if total > 0 else float("nan")}


def mask_iou(m, mask, top_percent: float = 5.0) -> float:
    """IoU of the map's top ``top_percent`` % pixels with the ground-truth mask (NaN for an empty mask)."""
    mask = np.asarray(mask, dtype=bool)
    return _iou(top_mask(m, top_percent), mask) if mask.any() else float("nan")


def evaluate_localisation(maps, masks, top_percent: float = 5.0) -> dict[str, np.ndarray]:
    """Pointing hit, energy and top-% IoU for each (map, mask) pair; NaN where the mask is empty."""
    rows = [(*pointing_game(m, k).values(), mask_iou(m, k, top_percent)) for m, k in zip(maps, masks)]
    hit, energy, iou = (np.array(col, dtype=float) for col in zip(*rows)) if rows else ([], [], [])
    return {"hit": hit, "energy": energy, "iou": iou}


@dataclass
class SanityStep:
    """One step of the cascade: every module in ``randomized`` re-initialised (``layer`` the newest)."""

    layer: str
    randomized: list[str]
    spearman: float
    iou: float
    map_randomized: np.ndarray


@dataclass
class SanityResult:
    """Outcome of the cascading model-randomisation check.

    Attributes:
        steps: one `SanityStep` per cascade step, top module first. Its ``spearman`` is the rank correlation
            of the trained and the randomised map: near 1 means the map does not depend on the weights
            randomised so far (the check fails), near 0 means it does. ``iou``: top-10 % IoU of the two maps.
        randomized, spearman, iou, map_randomized: those of the last step.
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
    def iou(self) -> float:
        return self.steps[-1].iou

    @property
    def map_randomized(self) -> np.ndarray:
        return self.steps[-1].map_randomized


def top_down_modules(model: nn.Module) -> list[str]:
    """Module paths from the output down: the last Linear (the head), then the feature layers reversed."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1:] + [path for _, path in reversed(model_layers(model))]


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
            steps.append(SanityStep(name, names[:k + 1], spearman(trained.heatmap, other),
                                    topk_iou(trained.heatmap, other, 10.0), other))
    return SanityResult(method, trained.target, steps, trained.heatmap)
