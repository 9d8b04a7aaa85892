"""What the study compares each explanation with, and where a map points: the baseline maps (seeded noise, per
pixel or drawn at a map's own resolution and upsampled as the explainers upsample theirs, a centre prior, the
phantom's mean lesion mask) and the lesion checks of the phantom (pointing game with a stated
tolerance, energy inside the lesion, IoU of the top 5 %).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.data import load_dataset, materialize
from core.faithfulness import cell_grid, mask_iou, pointing_game
from core.study_scores import Distribution, Localisation

BASELINES = ("random", "centre", "mask_prior")
# Random noise like a method's map: drawn at the map's own grid and upsampled to the image (one per grid, so the
# study draws it per method, with that method's cells; it is not in BASELINES, which need no grid).
MATCHED_RANDOM = "matched_random"
# The pointing game's tolerance: 15 px at 224 px, scaled to the input side.
TOLERANCE_AT_224 = 15


def mask_prior(size: int, n: int = 400, seed: int = 0) -> np.ndarray:
    """Mean lesion mask of phantom training images at ``size`` (where lesions are, without looking)."""
    train = materialize(load_dataset("phantom", "train", input_size=size, seed=seed, n_train=n), progress=False)
    return train.masks.float().mean(0).numpy()


def baseline_map(kind: str, n: int, size: int, seed: int, prior: np.ndarray | None = None, *,
                 cells: int | tuple[int, int] | None = None) -> np.ndarray:
    """(n, size, size) baseline maps: seeded noise, a centred Gaussian, or the given mask prior.

    ``cells`` (random noise only): draw the noise on that grid and upsample it (`matched_random`); required for
    `MATCHED_RANDOM`, and "random" with cells is the same map; None is one draw per pixel.
    """
    if kind in ("random", MATCHED_RANDOM) and cells is not None:
        return matched_random(n, size, cells, seed)
    if kind == MATCHED_RANDOM:
        raise ValueError(f"{MATCHED_RANDOM!r} needs the cells of the map it stands beside")
    if cells is not None:
        raise ValueError(f"cells are for random noise only, not the {kind!r} baseline")
    if kind == "random":
        return np.random.default_rng(seed).random((n, size, size)).astype(np.float32)
    if kind == "centre":
        axis = np.arange(size) - (size - 1) / 2
        g = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * (size / 4) ** 2))
        return np.repeat(g.astype(np.float32)[None], n, axis=0)
    if kind == "mask_prior":
        if prior is None:
            raise ValueError("the mask prior needs the phantom's mean training mask")
        return np.repeat(resize_maps(prior[None], size), n, axis=0)
    raise ValueError(f"unknown baseline {kind!r}; choose from {BASELINES}")


def matched_random(n: int, size: int, cells: int | tuple[int, int], seed: int) -> np.ndarray:
    """(n, size, size) seeded uniform noise drawn on a ``cells`` grid (g x g, or (rows, columns)) and upsampled
    bilinearly as Grad-CAM, CAM and the average feature maps upsample their own coarse maps: a random map as
    smooth as a coarse map, where per-pixel noise would be judged against it on scattered pixels it never has."""
    grid = cell_grid(cells, size, size)
    noise = np.random.default_rng(seed).random((n, *grid)).astype(np.float32)
    return resize_maps(noise, size)


def resize_maps(maps: np.ndarray, size: int) -> np.ndarray:
    """(n, size, size) float32: ``maps`` (n, h, w) upsampled (or shrunk) with the explainers' bilinear call,
    corners not aligned; as given when already that size."""
    if maps.shape[-2:] == (size, size):
        return np.asarray(maps, dtype=np.float32)
    t = F.interpolate(torch.as_tensor(np.asarray(maps, dtype=np.float32))[:, None], size=(size, size),
                      mode="bilinear", align_corners=False)
    return t[:, 0].numpy()


def tolerant_hit(m: np.ndarray, mask: np.ndarray, tolerance: int) -> float:
    """Pointing game with a tolerance: the share of the map's maximum (a plateau where tied) within ``tolerance``
    px (Chebyshev) of the mask; the rule of `core.faithfulness.pointing_game`, which it is."""
    return pointing_game(m, mask, tolerance)["hit"]


def tolerance(size: int) -> int:
    return max(1, round(TOLERANCE_AT_224 * size / 224))


def localisation(maps: np.ndarray, ds, idx: np.ndarray, size: int) -> Localisation:
    """Pointing game (with `tolerance`), energy in the lesion and top-5 % IoU of the maps of images ``idx``, in
    image order (NaN where the image has no lesion)."""
    masks = ds.masks.numpy()[idx]
    if masks.shape[-1] != size:
        masks = resize_maps(masks.astype(np.float32), size) >= 0.5
    nan = float("nan")
    rows = [(tolerant_hit(m, k, tolerance(size)), pointing_game(m, k)["energy"], mask_iou(m, k, 5.0))
            if k.any() else (nan, nan, nan) for m, k in zip(maps, masks)]
    hit, energy, iou = zip(*rows) if rows else ((), (), ())
    return Localisation(Distribution.of(hit), Distribution.of(energy), Distribution.of(iou))
