"""ROAD, RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
Methods", ICML 2022): remove a share of the pixels in the order of the map, fill them in, and follow the score.

Deletion fills removed pixels with a constant, and the shape of what was removed then tells the model where the
map pointed: the score falls because the image looks odd, not because the evidence went. ROAD fills each removed
pixel with noisy linear imputation instead: the weighted mean of its eight neighbours (1/6 for the four beside it,
1/12 for the four across a corner), solved jointly for every removed pixel of an image, plus a little Gaussian
noise, so a filled region blends into what surrounds it.

* Most relevant first (MoRF): remove the top share of the map; a faithful map makes the score fall fast, so a
  lower mean over the shares is better.
* Least relevant first (LeRF): remove the bottom share; a faithful map keeps the score, so higher is better.
* Combined: the mean over the shares of (LeRF - MoRF) / 2; higher is more faithful.

The numbers are pytorch-grad-cam's ROAD (``metrics.road``) at the same settings: the same neighbour weights, the
same count of removed pixels at a share, the same noise added after the solve. Two differences, both stated
where they arise: pixels of equal relevance are taken in `core.faithfulness.pixel_ranks`' fixed order, and each
image's noise comes from its own seeded generator (see `road_scores`). pytorch-grad-cam reports each score minus
the untouched image's score; a `RoadCurve` keeps both (``scores - original`` is its number), and the combined
score is the same either way.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import splu
from torch import nn

from core.faithfulness import pixel_ranks
from core.hooks import preserve_model_state, require_eval

__all__ = ["NEIGHBOUR_WEIGHTS", "FRACTIONS", "ORDERS", "RoadCurve", "impute", "removal_count", "removed_pixels",
           "road_scores", "road_combined"]

# (row offset, column offset, weight) of the neighbours a removed pixel is the weighted mean of; the weights sum
# to 1, and at the image's border the mean is over the neighbours inside it. Listed in the ROAD paper's order, so
# the solve adds them up in the same order.
NEIGHBOUR_WEIGHTS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12),
                     (0, -1, 1 / 6), (-1, -1, 1 / 12), (1, 0, 1 / 6), (-1, 0, 1 / 6))
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ORDERS = ("morf", "lerf")
SCORES = ("prob", "logit")


@dataclass(frozen=True)
class RoadCurve:
    """Scores of one ROAD run (one order) over the removed shares.

    Attributes:
        order: "morf" (most relevant removed first: lower is more faithful) or "lerf" (least relevant first:
            higher is more faithful).
        fractions: (F,) share of each image's pixels removed.
        scores: (N, F) target probability (or logit) of each image with that share removed and imputed.
        original: (N,) the same score on the untouched image (pytorch-grad-cam's ROAD reports scores - original).
        mean: (N,) mean of ``scores`` over the shares, the number ROAD ranks maps by.
        seconds: wall seconds per image of the imputations and forwards (the untouched image's included).
    """

    order: str
    fractions: np.ndarray
    scores: np.ndarray
    original: np.ndarray
    mean: np.ndarray
    seconds: float


def _imputation_system(removed: np.ndarray, values: np.ndarray, shape: tuple[int, int, int]):
    """The linear system whose solution fills every removed pixel of a batch: ``(matrix, right-hand side,
    flat indices of the removed pixels)``.

    ``removed``: (N * H * W,) bool; ``values``: (N * H * W, C). One row per removed pixel i:
    ``s_i x_i - sum(w_j x_j over removed neighbours) = sum(w_j v_j over kept neighbours)``, s_i the weight of
    i's neighbours inside the image; every channel is a column of the right-hand side. Images are blocks of one
    block-diagonal matrix: a pixel's neighbours never cross into the next image.
    """
    _, h, w = shape
    unknown = np.flatnonzero(removed)
    count = unknown.size
    variable = np.full(removed.size, -1, dtype=np.int64)
    variable[unknown] = np.arange(count)
    image, within = np.divmod(unknown, h * w)
    row, col = np.divmod(within, w)
    ids = np.arange(count)
    diagonal = np.ones(count)
    rhs = np.zeros((count, values.shape[1]))
    rows, cols, weights = [ids], [ids], []
    for d_row, d_col, weight in NEIGHBOUR_WEIGHTS:
        r, c = row + d_row, col + d_col
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        diagonal[~inside] -= weight  # subtracted from 1 in this order, as the ROAD paper's solver does
        here = ids[inside]
        neighbour = image[inside] * (h * w) + r[inside] * w + c[inside]
        missing = removed[neighbour]
        rows.append(here[missing])
        cols.append(variable[neighbour[missing]])
        weights.append(np.full(int(missing.sum()), -weight))
        rhs[here[~missing]] += weight * values[neighbour[~missing]]
    matrix = csc_matrix((np.concatenate([diagonal, *weights]), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(count, count))
    return matrix, rhs, unknown


def _generators(generator, n: int) -> list:
    if generator is None or isinstance(generator, torch.Generator):
        return [generator] * n
    generators = list(generator)
    if len(generators) != n:
        raise ValueError(f"generator must be one torch.Generator or one per image ({n}), got {len(generators)}")
    return generators


def impute(x: torch.Tensor, removed, noise: float = 0.01, generator=None) -> torch.Tensor:
    """Fill the removed pixels of each image by noisy linear imputation (a new tensor; x is left as it is).

    Args:
        x: normalised (N, C, H, W) images.
        removed: (N, H, W) bool, True where a pixel is removed; every image must keep at least one pixel.
        noise: standard deviation of the Gaussian noise added to each filled value (in x's units); 0 for none.
        generator: where the noise comes from: one ``torch.Generator`` for all images, one per image, or None
            for torch's global generator. Each image draws a (C, removed pixels) normal sample in raster order,
            as pytorch-grad-cam's imputer does, so with the global generator and the same seed the two agree
            for one image.

    Each removed pixel becomes the weighted mean (`NEIGHBOUR_WEIGHTS`) of its neighbours, removed ones
    included, which makes one sparse linear system; a batch is one block-diagonal system, factorised once and
    solved for every channel at once, in float64.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be an (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    n, c, h, w = x.shape
    removed = torch.as_tensor(removed)
    if removed.shape != (n, h, w):
        raise ValueError(f"removed must be shaped {(n, h, w)}, got {tuple(removed.shape)}")
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    generators = _generators(generator, n)
    flags = removed.detach().to("cpu", torch.bool).numpy().reshape(n, h * w)
    whole = flags.all(1)
    if whole.any():
        raise ValueError(f"removed covers every pixel of image {int(np.argmax(whole))}: nothing to impute from")
    pixels = x.detach().permute(0, 2, 3, 1).reshape(n * h * w, c)
    out = pixels.clone()
    if not flags.any():
        return out.view(n, h, w, c).permute(0, 3, 1, 2).contiguous()
    matrix, rhs, unknown = _imputation_system(flags.reshape(-1), pixels.cpu().double().numpy(), (n, h, w))
    filled = torch.from_numpy(splu(matrix).solve(rhs)).float()  # (removed pixels, C)
    if noise > 0:
        bounds = np.concatenate([[0], np.cumsum(flags.sum(1))])
        draws = [torch.randn(c, int(bounds[i + 1] - bounds[i]), generator=generators[i]) for i in range(n)]
        filled = filled + noise * torch.cat(draws, dim=1).t()
    out[torch.from_numpy(unknown).to(out.device)] = filled.to(out)
    return out.view(n, h, w, c).permute(0, 3, 1, 2).contiguous()


def removal_count(fraction: float, pixels: int) -> int:
    """How many of ``pixels`` are removed at ``fraction``: those at or above the map's (1 - fraction) quantile as
    numpy's linear percentile places it, ``pixels - ceil((1 - fraction) * (pixels - 1))``, which is
    pytorch-grad-cam's threshold on a map without ties. Always at least one and at most ``pixels - 1``."""
    return pixels - math.ceil(round((1 - fraction) * (pixels - 1), 6))


def removed_pixels(maps: torch.Tensor, fraction: float, order: str = "morf") -> torch.Tensor:
    """(N, H, W) bool: the pixels removed at ``fraction``, the top `removal_count` of each map (MoRF) or the
    bottom ones (LeRF).

    Pixels of equal value are taken in `core.faithfulness.pixel_ranks`' fixed seeded order, so exactly
    `removal_count` pixels go. pytorch-grad-cam thresholds the map at a percentile instead, which removes a
    tied plateau at the threshold all at once; the two differ only where a map has ties.
    """
    _check_choice("order", order, ORDERS)
    _check_fractions([fraction])
    ranks = pixel_ranks(maps)
    pixels = maps.shape[-2] * maps.shape[-1]
    count = removal_count(fraction, pixels)
    return ranks < count if order == "morf" else ranks >= pixels - count


def _check_choice(field: str, value, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _check_fractions(fractions) -> np.ndarray:
    try:
        values = np.asarray(fractions, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"fractions must be numbers in (0, 1), got {fractions!r}") from None
    if values.size == 0 or not np.all((values > 0) & (values < 1)):
        raise ValueError(f"fractions must be numbers in (0, 1), got {fractions!r}")
    return values


def _noise_generator(seed: int, image: int, step: int) -> torch.Generator:
    """The noise of one image at one share: its own generator, seeded from (seed, image index, share index), so
    an image's noise does not depend on the batch it shares or on which shares run before it."""
    state = np.random.SeedSequence([int(seed), image, step]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


def _target_scores(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, score: str) -> np.ndarray:
    out = model(x).float()
    out = torch.softmax(out, 1) if score == "prob" else out
    return out.gather(1, targets[:, None])[:, 0].cpu().numpy()


def _checked_inputs(x: torch.Tensor, maps, targets) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be an (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    n, _, h, w = x.shape
    if h * w < 2:
        raise ValueError(f"x must have at least 2 pixels per image to impute from, got {h} x {w}")
    maps = torch.as_tensor(maps if isinstance(maps, torch.Tensor) else np.asarray(maps)).float()
    maps = maps.view(n, *maps.shape[-2:]) if maps.dim() == 2 and n == 1 else maps
    if maps.shape != (n, h, w):  # a lower-resolution map is the caller's to resize, with the method it prefers
        raise ValueError(f"maps must be shaped {(n, h, w)} like the images, got {tuple(maps.shape)}")
    targets = torch.as_tensor(list(targets), dtype=torch.long, device=x.device)
    if targets.shape != (n,):
        raise ValueError(f"targets must name one class per image ({n}), got {targets.numel()}")
    return maps.to(x.device), targets


def road_scores(model: nn.Module, x: torch.Tensor, maps, targets: Sequence[int], *,
                fractions: Sequence[float] = FRACTIONS, order: str = "morf", score: str = "prob",
                batch_size: int = 32, noise: float = 0.01, seed: int = 0) -> RoadCurve:
    """Remove each share of the pixels in the map's order, impute them, and record the target's score.

    Args:
        x: normalised (N, C, H, W) images; maps: (N, H, W) at x's resolution (or (H, W) for N = 1); targets:
            N classes.
        fractions: shares of pixels removed, each in (0, 1); see `removal_count` and `removed_pixels`.
        order: "morf" (most relevant first) or "lerf" (least relevant first).
        score: "prob" (softmax probability) or "logit".
        batch_size: images per forward; a chunk of images takes one forward untouched and one per share.
        noise: standard deviation of the imputation's noise (pytorch-grad-cam's default 0.01); 0 for none.
        seed: seeds one generator per image and share (`_noise_generator`), so the scores do not depend on
            ``batch_size``, and MoRF and LeRF of one image at one share draw the same normal sample.
    """
    _check_choice("order", order, ORDERS)
    _check_choice("score", score, SCORES)
    fractions = _check_fractions(fractions)
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if int(seed) < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed}")
    maps, targets = _checked_inputs(x, maps, targets)
    require_eval(model)
    n, _, h, w = x.shape
    pixels = h * w
    ranks = pixel_ranks(maps)
    counts = [removal_count(f, pixels) for f in fractions]
    scores, original = np.zeros((n, len(counts))), np.zeros(n)
    started = time.perf_counter()
    with preserve_model_state(model), torch.inference_mode():
        for start in range(0, n, int(batch_size)):
            chunk = slice(start, start + int(batch_size))
            images, chosen = x[chunk], targets[chunk]
            original[chunk] = _target_scores(model, images, chosen, score)
            for step, count in enumerate(counts):
                removed = ranks[chunk] < count if order == "morf" else ranks[chunk] >= pixels - count
                generators = [_noise_generator(seed, i, step) for i in range(start, start + len(images))]
                imputed = impute(images, removed, noise, generators)
                scores[chunk, step] = _target_scores(model, imputed, chosen, score)
    seconds = (time.perf_counter() - started) / max(n, 1)
    return RoadCurve(order, fractions, scores, original, scores.mean(1), seconds)


def road_combined(morf: RoadCurve, lerf: RoadCurve) -> np.ndarray:
    """(N,) ROAD's combined score, pytorch-grad-cam's ROADCombined: the mean over the shares of
    (LeRF - MoRF) / 2. Higher is more faithful (a faithful map has a low MoRF and a high LeRF curve)."""
    if morf.order != "morf" or lerf.order != "lerf":
        raise ValueError(f"road_combined takes a MoRF then a LeRF curve, got {morf.order!r} and {lerf.order!r}")
    if morf.scores.shape != lerf.scores.shape or not np.allclose(morf.fractions, lerf.fractions):
        raise ValueError("morf and lerf must cover the same images at the same fractions")
    return (lerf.mean - morf.mean) / 2
