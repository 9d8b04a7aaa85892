"""Synthetic MRI-like head slices with pixel-exact lesion masks (the `phantom` dataset).

Real datasets have no lesion masks, so an explanation can only be looked at. Here every image
comes with the exact pixels that make its class, so explanations can be *scored* (pointing game,
energy inside the mask, ...) against ground truth.

Each image is a grey axial "head": a bright skull ring around textured parenchyma with two dark
ventricles, a smooth bias field and Rician noise, under a random pose (rotation, shift) and head
size. Four classes:

* ``no_lesion``: nothing else (the mask is all False).
* ``infiltrative``: a large irregular blob (boundary radius modulated by low harmonics) in one
  hemisphere, with a bright enhancing rim around a heterogeneous core.
* ``extra_axial``: a round, homogeneous, moderately bright lesion growing from the inner surface
  of the skull at a random angle (clipped by the skull, like a meningioma).
* ``midline``: a small, very bright, sharp-edged round lesion on the midline near the base.

No single global statistic gives the class away: every image is finally mapped affinely to a mean
and standard deviation drawn from class-independent ranges, and head size/pose are drawn
independently of the class. A model has to find the lesion.

Every item is a pure function of ``(seed, split, index, size)``: its random numbers come from
``numpy.random.SeedSequence([GENERATOR_VERSION, seed, split_code, index])``, so the three splits
are disjoint streams and an item never depends on which other items were generated with it.
Labels cycle ``index % 4``, so every split is balanced.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from core.catalog import DEFAULT_SPLIT_SIZES, PHANTOM_CLASSES

PHANTOM_SPLITS = {"train": 0, "val": 1, "test": 2}
# Bump when the drawing changes: it is part of every item's seed and of the data fingerprint.
GENERATOR_VERSION = 1
MIN_SIZE = 32  # below this the smallest lesion can vanish between pixel centres
_CHUNK = 256  # items rendered at once; bounds memory at large sizes

# Low-resolution random grids that are upsampled into smooth fields (texture, bias field).
_COARSE, _FINE, _BIAS = 8, 16, 3


def phantom_label(index: int) -> int:
    """Class of item ``index``: labels cycle through the classes so every split is balanced."""
    return int(index) % len(PHANTOM_CLASSES)


def _upsample_matrix(out_size: int, in_size: int) -> np.ndarray:
    """Bilinear interpolation as a matrix M (out, in): ``M @ X @ M.T`` resizes an in x in grid."""
    pos = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = pos - lo
    mat = np.zeros((out_size, in_size), dtype=np.float32)
    mat[np.arange(out_size), lo] += 1 - frac
    mat[np.arange(out_size), hi] += frac
    return mat


def _draw_params(seed: int, split_code: int, index: int, size: int) -> dict:
    """All random numbers of one item, in a fixed order whatever its class."""
    rng = np.random.default_rng(np.random.SeedSequence([GENERATOR_VERSION, seed, split_code, index]))
    label = phantom_label(index)
    u = rng.uniform
    p = {
        "label": label,
        "theta": u(-0.45, 0.45),  # head rotation, radians (~ +-26 deg)
        "cx": u(-0.07, 0.07), "cy": u(-0.07, 0.07),
        "a": u(0.56, 0.76),  # head semi-axis along x, fraction of the half-image
        "aspect": u(1.08, 1.25),
        "skull": u(0.07, 0.11),  # skull thickness in head units (the skull is r = 1)
        "vent_scale": u(0.75, 1.25), "vent_shift": u(-0.05, 0.05),
        "tissue": u(0.40, 0.50), "skull_level": u(0.78, 0.92), "vent_level": u(0.08, 0.16),
        "texture": u(0.05, 0.09), "bias": u(0.05, 0.15), "noise": u(0.015, 0.04),
        "target_mean": u(0.20, 0.32), "target_std": u(0.17, 0.25),
        # lesion candidates for every class are drawn, then only the item's own is used
        "side": rng.choice([-1.0, 1.0]), "inf_v": u(-0.35, 0.30), "inf_u": u(0.30, 0.45),
        "inf_r": u(0.21, 0.27), "harm_amp": u(0.06, 0.14, size=3), "harm_phase": u(0, 2 * np.pi, size=3),
        "ext_angle": u(0, 2 * np.pi), "ext_r": u(0.20, 0.26),
        "mid_u": u(-0.05, 0.05), "mid_v": u(0.22, 0.36), "mid_r": u(0.14, 0.18),
        "coarse": rng.standard_normal((_COARSE, _COARSE)),
        "fine": rng.standard_normal((_FINE, _FINE)),
        "bias_grid": rng.standard_normal((_BIAS, _BIAS)),
        "noise_re": rng.standard_normal((size, size)),
        "noise_im": rng.standard_normal((size, size)),
    }
    return p


def _lesion_geometry(p: dict) -> tuple[float, float, float, np.ndarray, float, float, float, float]:
    """(centre u, centre v, radius, harmonic amplitudes, rim width, core, rim, texture) for one item.

    Levels are offsets above the local tissue level. A zero radius means no lesion.
    """
    label = p["label"]
    no_harm = np.zeros(3)
    if label == 1:  # infiltrative: irregular, rim-enhancing, heterogeneous, in one hemisphere
        r = p["inf_r"]
        return p["side"] * p["inf_u"], p["inf_v"], r, p["harm_amp"], 0.35 * r, 0.05, 0.38, 0.12
    if label == 2:  # extra_axial: centre just inside the inner skull so the disc is clipped by it
        r = p["ext_r"]
        d = (1 - p["skull"]) - 0.7 * r
        return d * np.cos(p["ext_angle"]), d * np.sin(p["ext_angle"]), r, no_harm, 0.0, 0.40, 0.40, 0.02
    if label == 3:  # midline: small, very bright, near the base (v > 0 is towards the image bottom)
        return p["mid_u"], p["mid_v"], p["mid_r"], no_harm, 0.0, 0.48, 0.48, 0.0
    return 0.0, 0.0, 0.0, no_harm, 0.0, 0.0, 0.0, 0.0


def _render_chunk(params: list[dict], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw a batch of items at ``size`` px, vectorised over the batch."""
    f32 = np.float32

    def col(key: str) -> np.ndarray:
        return np.array([p[key] for p in params], dtype=f32)[:, None, None]

    lesion = [_lesion_geometry(p) for p in params]
    lu, lv, lr = (np.array([g[k] for g in lesion], dtype=f32)[:, None, None] for k in range(3))
    harm = np.array([g[3] for g in lesion], dtype=f32)[:, :, None, None]  # (N,3,1,1)
    rim_w, core, rim, tex_amp = (np.array([g[k] for g in lesion], dtype=f32)[:, None, None] for k in range(4, 8))
    phase = np.array([p["harm_phase"] for p in params], dtype=f32)[:, :, None, None]

    # pixel centres in [-1, 1]; y grows downwards like image rows
    axis = ((np.arange(size, dtype=f32) + 0.5) / size) * 2 - 1
    x, y = axis[None, None, :], axis[None, :, None]
    theta, cx, cy, a = col("theta"), col("cx"), col("cy"), col("a")
    b = np.minimum(a * col("aspect"), 0.93)
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    # head coordinates: the skull's outer edge is the unit circle
    u = ((x - cx) * cos_t + (y - cy) * sin_t) / a
    v = (-(x - cx) * sin_t + (y - cy) * cos_t) / b
    r = np.sqrt(u * u + v * v)
    skull = col("skull")
    brain = r < 1 - skull
    head = r < 1

    up_c, up_f, up_b = (_upsample_matrix(size, n) for n in (_COARSE, _FINE, _BIAS))
    smooth = lambda m, key: m @ np.stack([p[key] for p in params]).astype(f32) @ m.T
    coarse, fine, bias = smooth(up_c, "coarse"), smooth(up_f, "fine"), smooth(up_b, "bias_grid")

    tissue = col("tissue") * (1 + col("texture") * (coarse + 0.6 * fine))
    tissue = tissue - 0.06 * np.clip((r - 0.6) / (1 - skull - 0.6), 0, 1)  # darker cortex rim
    # two ventricles: ellipses either side of the midline, slightly above the centre
    vs, vsh = col("vent_scale"), col("vent_shift")
    vent = np.zeros_like(r, dtype=bool)
    for side in (-1.0, 1.0):
        du, dv = u - side * 0.11 * vs, v + 0.08 - vsh
        ang = side * 0.3
        eu = du * np.cos(ang) + dv * np.sin(ang)
        ev = -du * np.sin(ang) + dv * np.cos(ang)
        vent |= (eu / (0.07 * vs)) ** 2 + (ev / (0.22 * vs)) ** 2 < 1

    # lesion: radius modulated by harmonics k = 2, 3, 4 of the polar angle (irregular outline)
    du, dv = u - lu, v - lv
    rho = np.sqrt(du * du + dv * dv)
    phi = np.arctan2(dv, du)[:, None]
    k = np.arange(2, 5, dtype=f32)[None, :, None, None]
    boundary = lr * (1 + (harm * np.cos(k * phi + phase)).sum(axis=1))
    mask = (rho < boundary) & brain
    in_rim = rho > boundary - rim_w
    lesion_level = col("tissue") * (1 + core + (rim - core) * in_rim + tex_amp * 3 * fine)

    img = np.zeros_like(r)
    img = np.where(head, col("skull_level"), img)
    img = np.where(brain, tissue, img)
    img = np.where(brain & vent, col("vent_level"), img)
    img = np.where(mask, lesion_level, img)
    img = img * (1 + col("bias") * bias)
    # Rician magnitude noise, as in MRI magnitude images
    noise = col("noise")
    re = img + noise * np.stack([p["noise_re"] for p in params]).astype(f32)
    im = noise * np.stack([p["noise_im"] for p in params]).astype(f32)
    img = np.sqrt(re * re + im * im)
    # class-independent global brightness/contrast: mean and std become pure nuisance
    mean = img.mean(axis=(1, 2), keepdims=True)
    std = img.std(axis=(1, 2), keepdims=True) + 1e-6
    img = (img - mean) / std * col("target_std") + col("target_mean")
    img = np.clip(img, 0, 1)
    return np.round(img * 255).astype(np.uint8), mask


def render_phantom(seed: int, split: str, indices, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render phantom items.

    Args:
        seed: non-negative generator seed.
        split: "train", "val" or "test" (disjoint random streams).
        indices: item indices (any iterable of non-negative ints).
        size: output side in pixels (>= 32); images are drawn at this size directly.

    Returns:
        ``(images uint8 (N,H,W), masks bool (N,H,W), labels int64 (N,))``.
    """
    if split not in PHANTOM_SPLITS:
        raise ValueError(f"phantom split must be one of {list(PHANTOM_SPLITS)}, got {split!r}")
    if int(seed) < 0:
        raise ValueError(f"phantom seed must be >= 0, got {seed}")
    if int(size) < MIN_SIZE:
        raise ValueError(f"phantom size must be >= {MIN_SIZE} px, got {size}")
    indices = [int(i) for i in indices]
    size = int(size)
    images = np.zeros((len(indices), size, size), dtype=np.uint8)
    masks = np.zeros((len(indices), size, size), dtype=bool)
    for start in range(0, len(indices), _CHUNK):
        chunk = indices[start:start + _CHUNK]
        params = [_draw_params(int(seed), PHANTOM_SPLITS[split], i, size) for i in chunk]
        images[start:start + len(chunk)], masks[start:start + len(chunk)] = _render_chunk(params, size)
    labels = np.array([phantom_label(i) for i in indices], dtype=np.int64)
    return images, masks, labels


class PhantomDataset(Dataset):
    """One split of the phantom dataset; items ``(float tensor (3,H,W) in [0,1], label)``.

    Args:
        split: "train", "val" or "test".
        seed: generator seed (>= 0).
        size: image side in pixels.
        n: number of items (defaults: train 960, val 192, test 384).
    """

    classes = list(PHANTOM_CLASSES)
    info = None  # set to the registry entry by core.data.load_dataset

    def __init__(self, split: str = "train", *, seed: int = 0, size: int = 64, n: int | None = None):
        if split not in PHANTOM_SPLITS:
            raise ValueError(f"phantom split must be one of {list(PHANTOM_SPLITS)}, got {split!r}")
        n = DEFAULT_SPLIT_SIZES[split] if n is None else int(n)
        if n < 1:
            raise ValueError(f"phantom split size must be >= 1, got {n}")
        render_phantom(seed, split, [], size)  # validates seed and size up front
        self.split, self.seed, self.size, self.n = split, int(seed), int(size), n
        self.classes = list(PHANTOM_CLASSES)
        self.targets = [phantom_label(i) for i in range(n)]
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # a plain dict pickles to workers

    def _item(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._cache:
            if len(self._cache) >= 256:
                self._cache.clear()
            images, masks, _ = render_phantom(self.seed, self.split, [index], self.size)
            self._cache[index] = (images[0], masks[0])
        return self._cache[index]

    def _check(self, index: int) -> int:
        index = int(index)
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(f"phantom {self.split} index {index} out of range (n={self.n})")
        return index

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = self._check(index)
        grey = torch.from_numpy(self._item(index)[0].copy())
        return grey.float().div_(255).expand(3, -1, -1).clone(), self.targets[index]

    def mask(self, index: int) -> np.ndarray:
        """Pixel-exact lesion mask of item ``index``: bool (H,W), all False for ``no_lesion``."""
        return self._item(self._check(index))[1].copy()

    def render_all(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All items at once: ``(images uint8 (N,H,W), masks bool (N,H,W), labels (N,))``."""
        return render_phantom(self.seed, self.split, range(self.n), self.size)

    def generator_params(self) -> dict:
        """Everything that determines the pixels (used for the data fingerprint)."""
        return {"generator": "phantom", "version": GENERATOR_VERSION, "seed": self.seed,
                "split": self.split, "n": self.n, "size": self.size, "classes": list(PHANTOM_CLASSES)}
