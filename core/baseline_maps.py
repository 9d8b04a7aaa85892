"""What the study compares each explanation with, and where a map points: the baseline maps (seeded noise, a
centre prior, the phantom's mean lesion mask) and the lesion checks of the phantom (pointing game with a stated
tolerance, energy inside the lesion, IoU of the top 5 %).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.data import load_dataset, materialize
from core.faithfulness import mask_iou, pointing_game
from core.study_record import Distribution, Localisation

BASELINES = ("random", "centre", "mask_prior")
# The pointing game's tolerance: 15 px at 224 px, scaled to the input side.
TOLERANCE_AT_224 = 15


def mask_prior(size: int, n: int = 400, seed: int = 0) -> np.ndarray:
    """Mean lesion mask of phantom training images at ``size`` (where lesions are, without looking)."""
    train = materialize(load_dataset("phantom", "train", input_size=size, seed=seed, n_train=n), progress=False)
    return train.masks.float().mean(0).numpy()


def baseline_map(kind: str, n: int, size: int, seed: int, prior: np.ndarray | None = None) -> np.ndarray:
    """(n, size, size) baseline maps: seeded noise, a centred Gaussian, or the given mask prior."""
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


def resize_maps(maps: np.ndarray, size: int) -> np.ndarray:
    if maps.shape[-1] == size:
        return np.asarray(maps, dtype=np.float32)
    t = F.interpolate(torch.as_tensor(np.asarray(maps, dtype=np.float32))[:, None], size=(size, size),
                      mode="bilinear", align_corners=False)
    return t[:, 0].numpy()


def tolerant_hit(m: np.ndarray, mask: np.ndarray, tolerance: int) -> float:
    """Pointing game: 1 when the map's maximum lies within ``tolerance`` px (Chebyshev) of the mask."""
    grown = F.max_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], 2 * tolerance + 1, 1, tolerance)
    return float(grown[0, 0].numpy().ravel()[int(np.argmax(m))] > 0)


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
