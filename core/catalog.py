"""The datasets by name, where their files are and what is in them: read without torch (the app's Home and
sidebar use it before anything imports torch).

Real datasets live in an ImageFolder layout ``ROOT/<name>/{train,test}/<class>/<image>``. The root
is, in order: the ``root`` argument, the ``KD_DATA_ROOT`` environment variable,
``../shared/datasets`` next to the repository (or next to the working directory) if it exists,
else ``./data``.

Splits. ``protocol="official"`` keeps the published test folder untouched and carves a stratified,
seeded validation split out of train (per class: sort the file names, shuffle them with one
``random.Random(seed)``, classes in registry order, the first ``round(val_fraction * n)`` go to
val). Test is never used for model selection. ``val_carve="scan_ends"`` carves instead the outer slices of every
scan of a slice dataset (`scan_end_split`): the same share, but images beyond the slice levels the model trains on,
as alzheimer's test images are (`benchmarks/slice_scans.py`), where a random carve holds near copies of training
slices. ``protocol="pooled"`` reproduces the leaky protocol
common in the literature (and likely the paper's): train and test files are pooled and re-split at
random with the official test fraction, so near-duplicate slices land on both sides; compare both
protocols to measure the leak.
"""

from __future__ import annotations

import functools
import os
import random
import statistics
from dataclasses import replace
from pathlib import Path

from core.dataset_info import (DEFAULT_SPLIT_SIZES, IGNORED_FILES, IMAGE_EXTENSIONS, LAYOUTS, PHANTOM_CLASSES,  # noqa: F401
                               PROTOCOLS, REPO_ROOT, SPLITS, VAL_CARVES, DatasetError, DatasetInfo)
from core.folder_datasets import TEST_FRACTION, from_checkpoints, images_in, read_folder
from core.layout import checkpoint_root
from core.metadata import CheckpointError, load_meta, meta_path
from core.registry import Registry

DATASETS = Registry("dataset", DatasetError)
# Why a folder under the data root or the checkpoint root is not a dataset, by its name (`discover`).
FOLDER_PROBLEMS: dict[str, str] = {}


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
    kaggle="tourist55/alzheimers-dataset-4-class-of-images",
    split_note="Its test images are the outer slices of the very scans its training images come from (found from "
               "the pixels: benchmarks/slice_scans.py), so test accuracy measures other levels of the brains of "
               "subjects the models trained on, not new patients."))
register_dataset(DatasetInfo(
    "phantom", PHANTOM_CLASSES, "synthetic MRI-like head slice with lesion mask",
    "generated in code (core.phantom), seeded", 64, synthetic=True))


BUILT_IN = frozenset(DATASETS)


def register_user_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add or replace a user's dataset (a folder read again may have changed); a built-in name is refused."""
    if info.name in BUILT_IN:
        raise DatasetError(f"{info.name!r} is a built-in dataset's name: rename the folder (e.g. my_{info.name})")
    DATASETS[info.name] = info
    FOLDER_PROBLEMS.pop(info.name, None)
    return info


def register_folder(folder: str | os.PathLike) -> DatasetInfo:
    """Read a user's image folder (`core.folder_datasets.read_folder`) and register it under the folder's name,
    with the folder's parent as its data root."""
    info = read_folder(folder, BUILT_IN)
    return register_user_dataset(replace(info, root=str(Path(folder).expanduser().resolve().parent)))


def data_root_of(name: str, root: str | os.PathLike | None = None) -> Path:
    """The data root to read ``name`` from: ``root`` when given, else the one its folder was registered in, else
    the default (`resolve_root`)."""
    info = DATASETS.get(name)
    if root is None and info is not None and info.root:
        return Path(info.root)
    return resolve_root(root)


def get_info(name: str, root: str | os.PathLike | None = None) -> DatasetInfo:
    """Registry entry of ``name``; else the user's folder ``<data root>/name``, read and registered; `DatasetError`
    listing the known names (or saying what is wrong with the folder) otherwise."""
    if name in DATASETS:
        return DATASETS[name]
    folder = resolve_root(root) / name
    if folder.is_dir():
        return register_folder(folder)
    return DATASETS[name]


def discover(root: str | os.PathLike | None = None, checkpoints: str | os.PathLike | None = None) -> list[str]:
    """Register every user dataset found: each folder of images under the data root, and each folder of
    checkpoints under the checkpoint root whose images are not here (known from its metadata). Returns the
    registered names; a folder that is not a usable dataset is left out, its reason in `FOLDER_PROBLEMS`."""
    found = []
    for base, read in ((resolve_root(root), _read_images), (Path(checkpoints or checkpoint_root()), _read_checkpoints)):
        try:
            entries = sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
        except OSError:  # no such root, or one this user cannot list: nothing to find there
            continue
        for name in entries:
            if name in BUILT_IN or name in found:
                continue
            try:
                info = read(base / name)
            except DatasetError as err:
                FOLDER_PROBLEMS[name] = str(err)  # the folder's reason now, not the first one found
                continue
            if info is not None:
                register_user_dataset(info)
                found.append(name)
    return found


def _read_images(folder: Path) -> DatasetInfo:
    return read_folder(folder, BUILT_IN)


def _read_checkpoints(folder: Path) -> DatasetInfo | None:
    """A checkpoint folder's dataset from its teacher's (else student's) metadata, read and checked by
    `core.metadata.load_meta`: the folder of images the run that trained them read, where it still is, else the
    names and size alone; None for a folder without them."""
    for role in ("teacher", "student"):
        weights = folder / f"{role}.pt"
        if meta_path(weights).is_file():
            try:
                meta = load_meta(weights)
            except CheckpointError as err:
                raise DatasetError(f"{meta_path(weights)} cannot be read: {err}") from err
            recorded = (meta.train or {}).get("root")
            if isinstance(recorded, str) and recorded and (Path(recorded) / folder.name).is_dir():
                try:  # the run that trained them names the folder of images: read it from there
                    images = read_folder(Path(recorded) / folder.name, BUILT_IN)
                    return replace(images, root=str(Path(recorded).resolve()))
                except DatasetError:
                    pass  # the folder has changed since: the models are still worth listing
            return from_checkpoints(folder, meta.classes, meta.input_size, BUILT_IN)
    return None


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
    if name not in BUILT_IN:
        return f"put the images in <root>/{name}/<class>/ (or {{train,test}}/<class>/) and pass root=..., or set KD_DATA_ROOT"
    return (f"put the images in <root>/{name}/{{train,test}}/<class>/ and pass root=..., or set KD_DATA_ROOT; "
            f"to download and arrange them: python -m core.fetch {name} --dest <root>")


def _is_visible(entry: os.DirEntry | Path) -> bool:
    return not entry.name.startswith(".") and entry.name.lower() not in IGNORED_FILES


def scan_split(root: Path, name: str, folder: str) -> dict[str, list[str]]:
    """Image paths per class under ``root/name/folder``, relative to ``root/name``, sorted.

    Raises:
        DatasetError: missing folder, missing/unexpected/empty class folder, a non-image file, or an entry the
            scan cannot read (a looping link, a folder without read permission).
    """
    info = get_info(name, root)
    split_dir = root / name / folder
    if not root.is_dir():
        raise DatasetError(f"data root {root} does not exist; {_how_to_fix(name)}")
    if not split_dir.is_dir():
        raise DatasetError(f"{split_dir} is missing; {_how_to_fix(name)}")
    try:
        return _class_files(split_dir, info, folder)
    except OSError as err:  # the app's pages and the commands report a DatasetError; a raw one would be a traceback
        raise DatasetError(f"{err.filename or split_dir}: {err.strerror or err}; remove or mend the link, or give "
                           "this user permission to read it") from err


def _class_files(split_dir: Path, info: DatasetInfo, folder: str) -> dict[str, list[str]]:
    """`scan_split` past its root checks: the class folders and their images, which the system may refuse to read."""
    found = {e.name for e in os.scandir(split_dir) if e.is_dir() and _is_visible(e)}
    missing = [c for c in info.classes if c not in found]
    unexpected = sorted(found - set(info.classes))
    if missing or unexpected:
        raise DatasetError(
            f"{split_dir}: class folders must be exactly {list(info.classes)}"
            + (f"; missing {missing}" if missing else "") + (f"; unexpected {unexpected}" if unexpected else "")
            + " (rename or remove the folders; class names are case-sensitive)")
    files: dict[str, list[str]] = {}
    prefix = f"{folder}/" if folder else ""
    if info.user:  # the user's own folder: whatever is not an image is skipped (`dataset_status` counts it)
        for cls in info.classes:
            images, _ = images_in(split_dir / cls)
            if not images:
                raise DatasetError(f"{split_dir / cls} holds no images; every class needs at least one")
            files[cls] = [f"{prefix}{cls}/{image}" for image in images]
        return files
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
        files[cls] = sorted(f"{prefix}{cls}/{e.name}" for e in entries)
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


@functools.lru_cache(maxsize=4)
def _scans_of(folder: str, rels: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    # the pixels of every training image are read once per process: ~20 s for alzheimer's 5,121; a file that
    # cannot be read joins no scan and stays in train, where loading it skips it and says so, as for any split
    from core.scans import find_scans, positions, slice_signatures  # numpy and Pillow only, loaded when asked for

    signatures = slice_signatures((Path(folder) / rel for rel in rels), skip_unreadable=True)
    scans = find_scans(signatures)
    return tuple(scans.tolist()), tuple(positions(signatures, scans).tolist())


def scan_end_split(files: dict[str, list[str]], fraction: float, folder: Path) -> tuple[dict, dict]:
    """Split off the outer slices of every scan (`core.scans`): ``k`` at each end, ``k`` the nearest whole number to
    ``fraction`` of the median scan's slices over two (at least 1). Scans are found from the pixels of the files
    (relative to ``folder``); no seed is needed. Returns ``(rest, carved)`` like `stratified_split`.

    Raises:
        DatasetError: no two images are slices of one scan (not a slice dataset).
    """
    import numpy as np

    from core.scans import SCAN_THRESHOLD, outer_slices

    listed = [(cls, rel) for cls, names in files.items() for rel in sorted(names)]
    scans, place = (np.asarray(a) for a in _scans_of(str(folder), tuple(rel for _, rel in listed)))
    sizes = np.bincount(scans) if len(scans) else np.zeros(0, int)
    if not (sizes > 1).any():
        raise DatasetError(f"no two training images of {folder.name} are slices of one scan (none correlate above "
                           f"{SCAN_THRESHOLD}): the scan_ends validation carve needs a dataset of slices; use the "
                           "random carve")
    per_end = max(1, round(fraction * statistics.median(sizes[sizes > 1].tolist()) / 2)) if fraction > 0 else 0
    held = outer_slices(scans, place, per_end)
    rest: dict[str, list[str]] = {cls: [] for cls in files}
    carved: dict[str, list[str]] = {cls: [] for cls in files}
    for (cls, rel), out in zip(listed, held):
        (carved if out else rest)[cls].append(rel)
    return rest, carved


def split_files(name: str, split: str, root: Path, *, seed: int = 0, val_fraction: float = 0.15,
                protocol: str = "official", val_carve: str = "random") -> dict[str, list[str]]:
    """Relative image paths per class of one split under a protocol and a validation carve (see the module
    docstring)."""
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    if protocol not in PROTOCOLS:
        raise DatasetError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if val_carve not in VAL_CARVES:
        raise DatasetError(f"val_carve must be one of {VAL_CARVES}, got {val_carve!r}")
    if get_info(name, root).layout == "flat":  # no test folder: a seeded, stratified share of each class is test
        if protocol == "pooled":
            raise DatasetError(f"{name} has no test folder to pool with train (its test split is carved at random "
                               "already); use the official protocol")
        train, test = stratified_split(scan_split(root, name, ""), TEST_FRACTION, seed)
    else:
        train, test = scan_split(root, name, "train"), scan_split(root, name, "test")
    if protocol == "pooled":
        n_test, n_all = sum(map(len, test.values())), sum(map(len, train.values())) + sum(map(len, test.values()))
        pooled = {c: train[c] + test[c] for c in train}
        train, test = stratified_split(pooled, n_test / n_all, seed)
    if split == "test":
        return test
    if val_carve == "scan_ends":
        train, val = scan_end_split(train, val_fraction, Path(root) / name)
    else:
        train, val = stratified_split(train, val_fraction, seed)
    return val if split == "val" else train


def dataset_status(name: str, root: str | os.PathLike | None = None) -> dict:
    """What the UI needs to show about a dataset; never raises.

    Returns:
        ``{"name", "available", "reason", "root", "classes", "modality", "source", "split_note", "input_size",
        "synthetic", "user", "layout", "skipped", "counts": {"train": {cls: n}, "test": {cls: n}},
        "totals": {"train": n, "test": n}}``; ``reason`` (None when available) says why the data cannot be used and
        how to fix it; ``skipped`` counts the entries of a user's class folders that are not images.
    """
    status = {"name": name, "available": False, "reason": None, "root": None, "classes": [], "modality": "",
              "source": "", "split_note": "", "input_size": None, "synthetic": False, "user": False,
              "layout": "split", "skipped": 0, "counts": {}, "totals": {}}
    info = DATASETS.get(name)
    if info is None:
        status["reason"] = f"unknown dataset {name!r}; known: {', '.join(DATASETS)}"
        return status
    status.update(classes=list(info.classes), modality=info.modality, source=info.source,
                  split_note=info.split_note, input_size=info.input_size, synthetic=info.synthetic, user=info.user,
                  layout=info.layout)
    if info.synthetic:
        counts = {s: {c: len(range(k, n, len(info.classes))) for k, c in enumerate(info.classes)}
                  for s, n in DEFAULT_SPLIT_SIZES.items()}
    else:
        try:
            data_root = data_root_of(name, root)
            status["root"] = str(data_root)
            if info.layout == "flat":  # the test share carved with the default data seed, as a run carves it
                train, test = stratified_split(scan_split(data_root, name, ""), TEST_FRACTION, 0)
                splits = {"train": train, "test": test}
            else:
                splits = {s: scan_split(data_root, name, s) for s in ("train", "test")}
            counts = {s: {c: len(v) for c, v in files.items()} for s, files in splits.items()}
            if info.user:
                status["skipped"] = sum(images_in(data_root / name / folder / c)[1] for c in info.classes
                                        for folder in (("",) if info.layout == "flat" else ("train", "test")))
        except (DatasetError, OSError) as err:
            status["reason"] = str(err)
            return status
    status.update(available=True, counts=counts, totals={s: sum(c.values()) for s, c in counts.items()})
    return status
