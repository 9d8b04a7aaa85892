"""Datasets as tensors: ImageFolder readers, the phantom, and in-memory copies (the registry, roots and
splits are `core.catalog`).

Items are ``(float tensor (3,H,W) in [0,1], int label)``: decoded with `core.images`, made RGB
(grey is repeated over three channels) and resized to a square. No normalisation and no
augmentation here: the training code does both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from tqdm import tqdm

from core.catalog import SPLITS, DatasetError, DatasetInfo, data_root_of, get_info, split_files
from core.images import ImageError, open_image, to_rgb
from core.phantom import PhantomDataset, render_phantom

log = logging.getLogger(__name__)


class FolderDataset(Dataset):
    """One split of a real dataset, decoded lazily; items ``(float (3,S,S) in [0,1], label)``.

    Decoding errors raise `DatasetError` naming the file; `materialize` skips such files instead,
    so training (which materialises first) never stops in the middle of an epoch.
    """

    def __init__(self, info: DatasetInfo, split: str, root: Path, files: dict[str, list[str]], *,
                 input_size: int, seed: int, val_fraction: float, protocol: str, val_carve: str = "random"):
        self.info, self.split, self.root = info, split, Path(root)
        self.input_size, self.seed, self.val_fraction, self.protocol = input_size, seed, val_fraction, protocol
        self.val_carve = val_carve
        self.classes = list(info.classes)
        self.samples = [(rel, label) for label, cls in enumerate(self.classes) for rel in files[cls]]
        self.targets = [label for _, label in self.samples]
        self.transform = v2.Compose([v2.ToImage(), v2.Resize((input_size, input_size), antialias=True)])

    def __len__(self) -> int:
        return len(self.samples)

    def path(self, index: int) -> Path:
        """Absolute path of item ``index``."""
        return self.root / self.info.name / self.samples[index][0]

    def load_uint8(self, index: int) -> torch.Tensor:
        """Item ``index`` as uint8 (3,S,S); `ImageError` if the file cannot be decoded."""
        image = to_rgb(open_image(self.path(index)))
        return self.transform(image).as_subclass(torch.Tensor)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            pixels = self.load_uint8(index)
        except ImageError as err:
            raise DatasetError(f"{err} (materialize() skips unreadable files; or delete it)") from err
        return pixels.float().div_(255), self.targets[index]


class InMemoryDataset(Dataset):
    """Decoded images held as uint8, returned as ``(float (3,H,W) in [0,1], label)``.

    Attributes:
        images: uint8 (N,3,H,W). targets: long (N,). classes: class names.
        masks: bool (N,H,W) lesion masks (phantom only) or None.
        skipped: ``(path, reason)`` of files that could not be decoded.
        paths: relative path (or ``"phantom/<split>/<i>"``) of each kept item.
        info: registry entry of the source, if known. fingerprint: see `data_fingerprint`.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes, masks: torch.Tensor | None = None, *,
                 skipped=None, paths=None, info: DatasetInfo | None = None, fingerprint: str = ""):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N,3,H,W), got {images.dtype} {tuple(images.shape)}")
        if len(targets) != len(images) or (masks is not None and masks.shape != (len(images), *images.shape[2:])):
            raise ValueError("targets and masks must match the images")
        self.images, self.targets, self.classes, self.masks = images, targets.long(), list(classes), masks
        self.skipped, self.paths, self.info, self.fingerprint = list(skipped or []), paths, info, fingerprint

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float().div_(255), int(self.targets[index])

    def mask(self, index: int) -> np.ndarray:
        """Lesion mask bool (H,W) of item ``index`` (phantom only)."""
        if self.masks is None:
            raise DatasetError("this dataset has no lesion masks (only the phantom has them)")
        return self.masks[index].numpy().copy()


def load_dataset(name: str, split: str, root: str | os.PathLike | None = None, *, input_size: int | None = None,
                 seed: int = 0, val_fraction: float = 0.15, protocol: str = "official", val_carve: str = "random",
                 **phantom_sizes: int) -> Dataset:
    """Open one split of a registered dataset.

    Args:
        name: a key of `core.catalog.DATASETS`.
        split: "train", "val" (carved from train) or "test".
        root: data root (see `resolve_root`); ignored for the phantom.
        input_size: square side; defaults to the registry's ``input_size``.
        seed: split seed for real data; generator seed for the phantom.
        val_fraction: share of each train class moved to val (real data).
        protocol: "official" or "pooled" (real data only).
        val_carve: "random" or "scan_ends" (real data only; `core.catalog.scan_end_split`).
        **phantom_sizes: ``n_train``, ``n_val``, ``n_test`` item counts (phantom only).

    Returns:
        A Dataset with ``.classes``, ``.targets``, ``.info`` (phantom: also ``.mask(i)``).

    Raises:
        DatasetError: unknown name/split/protocol, or missing/malformed data (message says what to do).
    """
    info = get_info(name, root)
    size = int(input_size or info.input_size)
    if size < 8:
        raise DatasetError(f"input_size must be at least 8 px, got {size}")
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    if info.synthetic:
        unknown = set(phantom_sizes) - {f"n_{s}" for s in SPLITS}
        if unknown:
            raise DatasetError(f"unknown phantom options {sorted(unknown)}; use n_train, n_val, n_test")
        if protocol != "official":
            raise DatasetError("the phantom has no files to pool; use protocol='official'")
        if val_carve != "random":
            raise DatasetError("the phantom's images are not slices of scans; use val_carve='random'")
        try:
            ds = PhantomDataset(split, seed=seed, size=size, n=phantom_sizes.get(f"n_{split}"))
        except ValueError as err:
            raise DatasetError(str(err)) from err
        ds.info = info
        return ds
    if phantom_sizes:
        raise DatasetError(f"{sorted(phantom_sizes)} apply only to the phantom dataset")
    data_root = data_root_of(name, root)
    files = split_files(name, split, data_root, seed=seed, val_fraction=val_fraction, protocol=protocol,
                        val_carve=val_carve)
    if not any(files.values()):
        raise DatasetError(f"{name} {split} is empty (val_fraction={val_fraction}); use val_fraction > 0")
    return FolderDataset(info, split, data_root, files, input_size=size, seed=seed,
                         val_fraction=val_fraction, protocol=protocol, val_carve=val_carve)


def _subset(targets: list[int], max_per_class: int | None, seed: int) -> list[int]:
    """Indices kept: all, or a seeded random ``max_per_class`` of each class, in dataset order."""
    if max_per_class is None:
        return list(range(len(targets)))
    rng = random.Random(seed)
    keep: list[int] = []
    for label in sorted(set(targets)):
        idx = [i for i, t in enumerate(targets) if t == label]
        keep += idx if len(idx) <= max_per_class else rng.sample(idx, max_per_class)
    return sorted(keep)


def materialize(ds: Dataset, progress: bool = True, *, max_per_class: int | None = None) -> InMemoryDataset:
    """Decode a dataset once into memory (uint8), skipping unreadable files with a logged warning.

    Args:
        ds: a dataset from `load_dataset` (or any dataset of ``(float [0,1] (3,H,W), label)``).
        progress: show a tqdm bar while decoding files.
        max_per_class: keep at most this many items per class (seeded random choice), for quick runs.
    """
    if isinstance(ds, InMemoryDataset) and max_per_class is None:
        return ds
    raw_targets = ds.targets if hasattr(ds, "targets") else [ds[i][1] for i in range(len(ds))]
    targets = [int(t) for t in raw_targets]
    keep = _subset(targets, max_per_class, getattr(ds, "seed", 0))
    classes = list(getattr(ds, "classes", []))
    info = getattr(ds, "info", None)
    if isinstance(ds, PhantomDataset):
        grey, masks, labels = render_phantom(ds.seed, ds.split, keep, ds.size)
        images = torch.from_numpy(grey).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
        return InMemoryDataset(images, torch.from_numpy(labels), classes, torch.from_numpy(masks),
                               paths=[f"phantom/{ds.split}/{i}" for i in keep], info=info,
                               fingerprint=_fingerprint_of(ds, keep))
    if isinstance(ds, FolderDataset):
        kept, pixels, skipped = [], [], []
        for i in tqdm(keep, desc=f"decoding {ds.info.name} {ds.split}", disable=not progress, unit="img"):
            try:
                pixels.append(ds.load_uint8(i))
                kept.append(i)
            except (ImageError, OSError) as err:
                skipped.append((ds.samples[i][0], str(err)))
        if skipped:
            log.warning("%s %s: skipped %d unreadable file(s), e.g. %s", ds.info.name, ds.split, len(skipped),
                        skipped[0][1])
        if not kept:
            raise DatasetError(f"{ds.info.name} {ds.split}: none of the {len(keep)} files could be decoded")
        images = torch.stack(pixels)
        return InMemoryDataset(images, torch.tensor([targets[i] for i in kept]), classes, skipped=skipped,
                               paths=[ds.samples[i][0] for i in kept], info=info, fingerprint=_fingerprint_of(ds, kept))
    pixels = [ds[i][0] for i in keep]  # generic dataset of float [0,1] tensors
    images = torch.stack([(p.clamp(0, 1) * 255).round().to(torch.uint8) for p in pixels])
    mem = InMemoryDataset(images, torch.tensor([targets[i] for i in keep]), classes, info=info)
    mem.fingerprint = data_fingerprint(mem)
    return mem


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _fingerprint_of(ds: Dataset, indices: list[int] | None = None) -> str:
    if isinstance(ds, PhantomDataset):
        payload = ds.generator_params()
        if indices is not None and len(indices) != len(ds):
            payload["indices"] = indices
        return _digest(payload)
    picked = ds.samples if indices is None else [ds.samples[i] for i in indices]
    payload = {"dataset": ds.info.name, "split": ds.split, "seed": ds.seed, "protocol": ds.protocol,
               "val_fraction": ds.val_fraction, "files": sorted(f"{rel}:{label}" for rel, label in picked)}
    if ds.val_carve != "random" and ds.split != "test":  # the random carve's fingerprints stay as they were
        payload["val_carve"] = ds.val_carve
    return _digest(payload)


def data_fingerprint(ds: Dataset) -> str:
    """sha256 identifying the data of ``ds``.

    Folder datasets: the sorted relative file list with labels plus split, seed, protocol,
    val_fraction and, for train and val, a validation carve other than the random one (the pixels are not
    read). Phantom: its generator parameters. In-memory copies
    carry the fingerprint of what they kept (equal to the source's when nothing was skipped).
    """
    if isinstance(ds, (PhantomDataset, FolderDataset)):
        return _fingerprint_of(ds)
    if isinstance(ds, InMemoryDataset):
        if ds.fingerprint:
            return ds.fingerprint
        h = hashlib.sha256(ds.images.numpy().tobytes())
        h.update(ds.targets.numpy().tobytes())
        return h.hexdigest()
    raise DatasetError(f"cannot fingerprint a {type(ds).__name__}; use load_dataset() or materialize()")

