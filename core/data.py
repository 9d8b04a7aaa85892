"""Datasets: a registry by name, ImageFolder readers, splits, the phantom, and in-memory copies.

Real datasets live in an ImageFolder layout ``ROOT/<name>/{train,test}/<class>/<image>``. The root
is, in order: the ``root`` argument, the ``KD_DATA_ROOT`` environment variable,
``../shared/datasets`` next to the repository (or next to the working directory) if it exists,
else ``./data``.

Splits. ``protocol="official"`` keeps the published test folder untouched and carves a stratified,
seeded validation split out of train (per class: sort the file names, shuffle them with one
``random.Random(seed)``, classes in registry order, the first ``round(val_fraction * n)`` go to
val). Test is never used for model selection. ``protocol="pooled"`` reproduces the leaky protocol
common in the literature (and likely the paper's): train and test files are pooled and re-split at
random with the official test fraction, so near-duplicate slices land on both sides; compare both
protocols to measure the leak.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from tqdm import tqdm

from core.images import ImageError, open_image, to_rgb
from core.phantom import DEFAULT_SPLIT_SIZES, PHANTOM_CLASSES, PhantomDataset, render_phantom
from core.registry import Registry

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
# Operating-system litter that may sit in any folder and is never data.
IGNORED_FILES = frozenset({"thumbs.db", "desktop.ini"})
SPLITS = ("train", "val", "test")
PROTOCOLS = ("official", "pooled")
REPO_ROOT = Path(__file__).resolve().parents[1]


class DatasetError(ValueError):
    """A dataset that cannot be used as asked, with a message that says what to do."""


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the code needs to know about a dataset before reading it.

    Attributes:
        name: registry key and folder name under the data root.
        classes: canonical class names, in label order (label i = classes[i]).
        modality: what the images are (for the UI).
        source: where the images come from.
        input_size: default square side the images are resized to.
        synthetic: True for generated datasets (no files, no root).
        kaggle: Kaggle slug the files can be fetched from (see `core.fetch`).
    """

    name: str
    classes: tuple[str, ...]
    modality: str
    source: str
    input_size: int
    synthetic: bool = False
    kaggle: str = ""


DATASETS = Registry("dataset", DatasetError)


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a dataset to `DATASETS` under its name (a name can be taken only once)."""
    return DATASETS.register(info.name)(info)


register_dataset(DatasetInfo(
    "brain_tumor", ("glioma", "meningioma", "notumor", "pituitary"), "brain MRI (mixed planes/sequences)",
    "Kaggle masoudnickparvar/brain-tumor-mri-dataset (figshare + SARTAJ + Br35H)", 128,
    kaggle="masoudnickparvar/brain-tumor-mri-dataset"))
register_dataset(DatasetInfo(
    "eye_disease", ("cataract", "diabetic_retinopathy", "glaucoma", "normal"), "colour fundus photograph",
    "Kaggle gunavenkatdoddi/eye-diseases-classification (IDRiD, ODIR, HRF, ...)", 128,
    kaggle="gunavenkatdoddi/eye-diseases-classification"))
register_dataset(DatasetInfo(
    "alzheimer", ("MildDemented", "ModerateDemented", "NonDemented", "VeryMildDemented"), "axial brain MRI (T1)",
    "Kaggle tourist55/alzheimers-dataset-4-class-of-images", 128,
    kaggle="tourist55/alzheimers-dataset-4-class-of-images"))
register_dataset(DatasetInfo(
    "phantom", PHANTOM_CLASSES, "synthetic MRI-like head slice with lesion mask",
    "generated in code (core.phantom), seeded", 64, synthetic=True))


def get_info(name: str) -> DatasetInfo:
    """Registry entry of ``name``; `DatasetError` listing the known names otherwise."""
    return DATASETS[name]


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: argument, else $KD_DATA_ROOT, else an existing ../shared/datasets, else ./data."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("KD_DATA_ROOT"):
        return Path(os.environ["KD_DATA_ROOT"]).expanduser()
    for base in (REPO_ROOT, Path.cwd()):
        shared = base.parent / "shared" / "datasets"
        if shared.is_dir():
            return shared
    return Path("data")


def _how_to_fix(name: str) -> str:
    return (f"put the images in <root>/{name}/{{train,test}}/<class>/ and pass root=..., or set KD_DATA_ROOT; "
            f"to download and arrange them: python -m core.fetch {name} --dest <root>")


def _is_visible(entry: os.DirEntry | Path) -> bool:
    return not entry.name.startswith(".") and entry.name.lower() not in IGNORED_FILES


def scan_split(root: Path, name: str, folder: str) -> dict[str, list[str]]:
    """Image paths per class under ``root/name/folder``, relative to ``root/name``, sorted.

    Raises:
        DatasetError: missing folder, missing/unexpected/empty class folder, or a non-image file.
    """
    info = get_info(name)
    split_dir = root / name / folder
    if not root.is_dir():
        raise DatasetError(f"data root {root} does not exist; {_how_to_fix(name)}")
    if not split_dir.is_dir():
        raise DatasetError(f"{split_dir} is missing; {_how_to_fix(name)}")
    found = {e.name for e in os.scandir(split_dir) if e.is_dir() and _is_visible(e)}
    missing = [c for c in info.classes if c not in found]
    unexpected = sorted(found - set(info.classes))
    if missing or unexpected:
        raise DatasetError(
            f"{split_dir}: class folders must be exactly {list(info.classes)}"
            + (f"; missing {missing}" if missing else "") + (f"; unexpected {unexpected}" if unexpected else "")
            + " (rename or remove the folders; class names are case-sensitive)")
    files: dict[str, list[str]] = {}
    for cls in info.classes:
        entries = [e for e in os.scandir(split_dir / cls) if _is_visible(e)]
        not_images = sorted(e.name for e in entries if not e.is_file() or Path(e.name).suffix.lower()
                            not in IMAGE_EXTENSIONS)
        if not_images:
            shown = ", ".join(not_images[:5]) + (" ..." if len(not_images) > 5 else "")
            raise DatasetError(f"{split_dir / cls}: {len(not_images)} entries are not image files ({shown}); "
                               f"move them out (images must end in {', '.join(sorted(IMAGE_EXTENSIONS))})")
        if not entries:
            raise DatasetError(f"{split_dir / cls} holds no images; every class needs at least one")
        files[cls] = sorted(f"{folder}/{cls}/{e.name}" for e in entries)
    return files


def stratified_split(files: dict[str, list[str]], fraction: float, seed: int) -> tuple[dict, dict]:
    """Split each class: sort, shuffle with one ``random.Random(seed)`` (classes in dict order),
    the first ``round(fraction * n)`` go to the second part. Returns ``(rest, carved)``."""
    if not 0 <= fraction < 1:
        raise DatasetError(f"split fraction must be in [0, 1), got {fraction}")
    rng = random.Random(seed)
    rest, carved = {}, {}
    for cls, names in files.items():
        names = sorted(names)
        rng.shuffle(names)
        k = round(fraction * len(names))
        carved[cls], rest[cls] = sorted(names[:k]), sorted(names[k:])
    return rest, carved


def split_files(name: str, split: str, root: Path, *, seed: int = 0, val_fraction: float = 0.15,
                protocol: str = "official") -> dict[str, list[str]]:
    """Relative image paths per class of one split under a protocol (see the module docstring)."""
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    if protocol not in PROTOCOLS:
        raise DatasetError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    train, test = scan_split(root, name, "train"), scan_split(root, name, "test")
    if protocol == "pooled":
        n_test, n_all = sum(map(len, test.values())), sum(map(len, train.values())) + sum(map(len, test.values()))
        pooled = {c: train[c] + test[c] for c in train}
        train, test = stratified_split(pooled, n_test / n_all, seed)
    if split == "test":
        return test
    train, val = stratified_split(train, val_fraction, seed)
    return val if split == "val" else train


class FolderDataset(Dataset):
    """One split of a real dataset, decoded lazily; items ``(float (3,S,S) in [0,1], label)``.

    Decoding errors raise `DatasetError` naming the file; `materialize` skips such files instead,
    so training (which materialises first) never stops in the middle of an epoch.
    """

    def __init__(self, info: DatasetInfo, split: str, root: Path, files: dict[str, list[str]], *,
                 input_size: int, seed: int, val_fraction: float, protocol: str):
        self.info, self.split, self.root = info, split, Path(root)
        self.input_size, self.seed, self.val_fraction, self.protocol = input_size, seed, val_fraction, protocol
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
                 seed: int = 0, val_fraction: float = 0.15, protocol: str = "official",
                 **phantom_sizes: int) -> Dataset:
    """Open one split of a registered dataset.

    Args:
        name: a key of `DATASETS`.
        split: "train", "val" (carved from train) or "test".
        root: data root (see `resolve_root`); ignored for the phantom.
        input_size: square side; defaults to the registry's ``input_size``.
        seed: split seed for real data; generator seed for the phantom.
        val_fraction: share of each train class moved to val (real data).
        protocol: "official" or "pooled" (real data only).
        **phantom_sizes: ``n_train``, ``n_val``, ``n_test`` item counts (phantom only).

    Returns:
        A Dataset with ``.classes``, ``.targets``, ``.info`` (phantom: also ``.mask(i)``).

    Raises:
        DatasetError: unknown name/split/protocol, or missing/malformed data (message says what to do).
    """
    info = get_info(name)
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
        try:
            ds = PhantomDataset(split, seed=seed, size=size, n=phantom_sizes.get(f"n_{split}"))
        except ValueError as err:
            raise DatasetError(str(err)) from err
        ds.info = info
        return ds
    if phantom_sizes:
        raise DatasetError(f"{sorted(phantom_sizes)} apply only to the phantom dataset")
    data_root = resolve_root(root)
    files = split_files(name, split, data_root, seed=seed, val_fraction=val_fraction, protocol=protocol)
    if not any(files.values()):
        raise DatasetError(f"{name} {split} is empty (val_fraction={val_fraction}); use val_fraction > 0")
    return FolderDataset(info, split, data_root, files, input_size=size, seed=seed,
                         val_fraction=val_fraction, protocol=protocol)


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
    return _digest({"dataset": ds.info.name, "split": ds.split, "seed": ds.seed, "protocol": ds.protocol,
                    "val_fraction": ds.val_fraction, "files": sorted(f"{rel}:{label}" for rel, label in picked)})


def data_fingerprint(ds: Dataset) -> str:
    """sha256 identifying the data of ``ds``.

    Folder datasets: the sorted relative file list with labels plus split, seed, protocol and
    val_fraction (the pixels are not read). Phantom: its generator parameters. In-memory copies
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


def dataset_status(name: str, root: str | os.PathLike | None = None) -> dict:
    """What the UI needs to show about a dataset; never raises.

    Returns:
        ``{"name", "available", "reason", "root", "classes", "modality", "source", "input_size",
        "synthetic", "counts": {"train": {cls: n}, "test": {cls: n}}, "totals": {"train": n, "test": n}}``;
        ``reason`` (None when available) says why the data cannot be used and how to fix it.
    """
    status = {"name": name, "available": False, "reason": None, "root": None, "classes": [], "modality": "",
              "source": "", "input_size": None, "synthetic": False, "counts": {}, "totals": {}}
    info = DATASETS.get(name)
    if info is None:
        status["reason"] = f"unknown dataset {name!r}; known: {', '.join(DATASETS)}"
        return status
    status.update(classes=list(info.classes), modality=info.modality, source=info.source,
                  input_size=info.input_size, synthetic=info.synthetic)
    if info.synthetic:
        counts = {s: {c: len(range(k, n, len(info.classes))) for k, c in enumerate(info.classes)}
                  for s, n in DEFAULT_SPLIT_SIZES.items()}
    else:
        try:
            data_root = resolve_root(root)
            status["root"] = str(data_root)
            counts = {s: {c: len(v) for c, v in scan_split(data_root, name, s).items()} for s in ("train", "test")}
        except (DatasetError, OSError) as err:
            status["reason"] = str(err)
            return status
    status.update(available=True, counts=counts, totals={s: sum(c.values()) for s, c in counts.items()})
    return status
