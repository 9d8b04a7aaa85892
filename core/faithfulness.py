"""Is an explanation any good? Faithfulness, sanity, ground truth and teacher-student agreement.

* Deletion / insertion (Petsiuk et al., RISE, BMVC 2018): remove (insert) the image in the order of the
  map and follow the class score; a faithful map gives a low deletion and a high insertion AUC. What is removed
  is either single pixels or whole cells of a grid (the map's own resolution: a 4 x 4 map upsampled is judged
  by its 16 cells, since removing scattered pixels destroys texture the model relies on and so rewards
  scattered maps); ties are taken in one fixed seeded order, not raster order. Removed parts are replaced by
  a substrate: the mean colour or a blur of the image. Batched: one forward per step for the whole batch.
* The model-randomisation check (Adebayo et al. 2018) and the measures it reads are in `core.sanity`.
* Ground truth (the ``phantom`` dataset's lesion masks): energy-based pointing game (Wang et al.,
  Score-CAM, 2020) and IoU of the top 5 % of the map with the mask.
* Agreement of two maps (teacher vs student): Spearman rank correlation and top-k % IoU.

Implemented in numpy/torch (no scipy).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from core.hooks import preserve_model_state, require_eval

__all__ = ["Curve", "SUBSTRATES", "cell_grid", "perturbation_curve", "deletion_curve",
           "insertion_curve", "rankdata",
           "pixel_ranks", "spearman", "top_mask", "topk_iou", "agreement", "pointing_game", "mask_iou",
           "evaluate_localisation"]


@dataclass
class Curve:
    """Score curves of a deletion or insertion run.

    Attributes:
        fractions: (steps + 1,) share of pixels (or of cells) removed (deletion) or inserted (insertion); the
            share of cells is the share of pixels when the grid divides the image.
        scores: (N, steps + 1) target probability (or logit) per image and step.
        auc: (N,) trapezoidal area under each curve over fractions in [0, 1].
        substrate: what replaced the removed parts ("mean", "blur"; None for a given number or tensor).
        cells: the (rows, columns) grid removed cell by cell; None when pixel by pixel.
    """

    mode: str
    fractions: np.ndarray
    scores: np.ndarray
    auc: np.ndarray
    substrate: str | None = None
    cells: tuple[int, int] | None = None


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


def cell_grid(cells, h: int, w: int) -> tuple[int, int]:
    """(rows, columns) of a grid given as one int (g x g) or a pair, each between 1 and the image's side."""
    grid = tuple(cells) if isinstance(cells, (tuple, list)) else (cells, cells)
    if (len(grid) != 2 or not all(isinstance(g, numbers.Integral) and not isinstance(g, bool) for g in grid)
            or not (1 <= grid[0] <= h and 1 <= grid[1] <= w)):
        raise ValueError(f"cells must be an int or a (rows, columns) pair between 1 and the image's side "
                         f"({h} x {w}), got {cells!r}")
    return int(grid[0]), int(grid[1])


def _unit_ranks(maps: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
    """(N, H, W) long: the step order of each pixel's unit, most relevant first: the pixel's own place
    (`pixel_ranks`), or with a grid the place of its cell by the map's mean over the cell (ties seeded the same
    way). Row r lies in cell row ``r * rows // H``: cells differ by at most one pixel in size."""
    if grid is None:
        return pixel_ranks(maps)
    n, h, w = maps.shape
    rows = torch.arange(h, device=maps.device) * grid[0] // h
    cols = torch.arange(w, device=maps.device) * grid[1] // w
    cell = (rows[:, None] * grid[1] + cols[None, :]).flatten()
    units = grid[0] * grid[1]
    sums = torch.zeros(n, units, device=maps.device).index_add_(1, cell, maps.flatten(1).float())
    means = sums / torch.bincount(cell, minlength=units)
    return pixel_ranks(means.view(n, *grid)).flatten(1)[:, cell].view(n, h, w)


SUBSTRATES = ("mean", "blur")  # what removed parts of the image are replaced by, by name


def _substrate(x: torch.Tensor, substrate) -> torch.Tensor:
    if isinstance(substrate, torch.Tensor):
        return substrate.to(x).expand_as(x)
    if substrate == "blur":  # RISE's insertion start: the image with its detail removed
        side = min(x.shape[-2:])
        kernel = max(3, (side // 8) | 1)
        return gaussian_blur(x, [kernel, kernel], [side / 16.0, side / 16.0])
    if substrate in ("mean", "zero"):  # the mean colour is zero in normalised space ("zero": its earlier name)
        return torch.zeros_like(x)
    if isinstance(substrate, (int, float)) and not isinstance(substrate, bool):
        return torch.full_like(x, float(substrate))
    raise ValueError(f"substrate must be one of {SUBSTRATES}, 'auto', a number or a tensor, got {substrate!r}")


def _trapezoid(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return ((y[..., 1:] + y[..., :-1]) / 2 * np.diff(x)).sum(-1)


def perturbation_curve(model: nn.Module, x: torch.Tensor, maps, targets: Sequence[int], *, mode: str = "deletion",
                       steps: int | None = None, cells=None, substrate="auto", score: str = "prob",
                       batch_size: int = 32) -> Curve:
    """Delete or insert pixels (or whole cells) in decreasing map order and record the target score after each
    step. Parts of equal relevance are taken in one fixed seeded order (`pixel_ranks`), not raster order.

    Args:
        x: normalised (N, C, H, W) images; maps: (N, H, W) (or (H, W) for N = 1); targets: N classes.
        mode: "deletion" (start from the image, replace parts by the substrate) or "insertion" (start
            from the substrate, put parts back).
        steps: number of steps, between 1 and the number of units (pixels, or cells); step k perturbs
            ``round(k * units / steps)`` units (all channels). None: 20 for pixels, one cell a step for cells.
        cells: None (pixel by pixel) or a grid, g (g x g cells) or (rows, columns): each cell's relevance is
            the map's mean over it and whole cells go in that order, e.g. the grid of the map's own resolution.
        substrate: "mean" (the mean colour: zero in normalised space; "zero" is accepted too), "blur", a
            number or a tensor; "auto" is the mean for deletion and the blur for insertion, as in RISE.
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
    grid = None if cells is None else cell_grid(cells, h, w)
    units = h * w if grid is None else grid[0] * grid[1]
    steps = (20 if grid is None else units) if steps is None else steps
    if not (isinstance(steps, int) and 1 <= steps <= units):
        raise ValueError(f"steps must be an int between 1 and the number of {'pixels' if grid is None else 'cells'}"
                         f" ({units}), got {steps!r}")
    targets = torch.as_tensor(list(targets), dtype=torch.long, device=x.device)
    if isinstance(substrate, str) and substrate == "auto":
        substrate = "mean" if mode == "deletion" else "blur"
    base = _substrate(x, substrate)
    rank = _unit_ranks(maps, grid)[:, None]
    counts = [round(k * units / steps) for k in range(steps + 1)]
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
    fractions = np.array(counts, dtype=float) / units
    name = {"zero": "mean"}.get(substrate, substrate) if isinstance(substrate, str) else None
    return Curve(mode, fractions, scores, _trapezoid(scores, fractions), name, grid)


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


def pointing_game(m, mask, tolerance: int = 0) -> dict[str, float]:
    """Pointing game against a ground-truth mask.

    Args:
        tolerance: pixels (Chebyshev distance) around the mask that still count as a hit (the mask grown by a
            ``2 * tolerance + 1`` square); 0 is the mask itself. The energy always uses the mask itself.

    Returns:
        ``{"hit": 1.0 if the map's maximum lies in the (grown) mask else 0.0, "energy": sum(map in mask) /
        sum(map)}`` (energy-based pointing game, Wang et al. 2020); NaN for an empty mask or map. Where the
        maximum is a plateau (a coarse map upsampled: a 2 x 2 map is flat over each corner) the hit is the share
        of the plateau inside the (grown) mask, the expected hit of a point drawn from it; taking the first such
        pixel would always point at the plateau's top-left corner. This is the one rule for every pointing score
        (the study's tolerant hit is this with its tolerance).
    """
    m, mask = np.asarray(m, dtype=float), np.asarray(mask, dtype=bool)
    if m.shape != mask.shape:
        raise ValueError(f"map {m.shape} and mask {mask.shape} differ in shape")
    if not (isinstance(tolerance, numbers.Integral) and tolerance >= 0):
        raise ValueError(f"tolerance must be a whole number of pixels, 0 or more, got {tolerance!r}")
    if not mask.any():
        return {"hit": float("nan"), "energy": float("nan")}
    grown = mask
    if tolerance > 0:
        side = 2 * int(tolerance) + 1
        grown = F.max_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], side, 1,
                             int(tolerance))[0, 0].numpy() > 0
    top = m == m.max()  # all False for a map with NaN
    positive = np.clip(m, 0, None)
    total = positive.sum()
    return {"hit": float(grown[top].mean()) if top.any() else float("nan"),
            "energy": float(positive[mask].sum() / total) if total > 0 else float("nan")}


def mask_iou(m, mask, top_percent: float = 5.0) -> float:
    """IoU of the map's top ``top_percent`` % pixels with the ground-truth mask (NaN for an empty mask)."""
    mask = np.asarray(mask, dtype=bool)
    return _iou(top_mask(m, top_percent), mask) if mask.any() else float("nan")


def evaluate_localisation(maps, masks, top_percent: float = 5.0) -> dict[str, np.ndarray]:
    """Pointing hit, energy and top-% IoU for each (map, mask) pair; NaN where the mask is empty."""
    rows = [(*pointing_game(m, k).values(), mask_iou(m, k, top_percent)) for m, k in zip(maps, masks)]
    hit, energy, iou = (np.array(col, dtype=float) for col in zip(*rows)) if rows else ([], [], [])
    return {"hit": hit, "energy": energy, "iou": iou}
