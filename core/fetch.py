"""Fetch the three Kaggle datasets and arrange them as ``DEST/<name>/{train,test}/<class>/``.

Downloading needs ``kagglehub`` (``pip install kagglehub``) and Kaggle credentials
(``~/.kaggle/kaggle.json`` or ``KAGGLE_USERNAME``/``KAGGLE_KEY``); arranging an already downloaded
folder needs neither::

    python -m core.fetch brain_tumor --dest data                 # download + arrange
    python -m core.fetch eye_disease --src ~/Downloads/eye --dest data   # arrange only

Kaggle layouts mapped onto ours:

* brain_tumor (masoudnickparvar/brain-tumor-mri-dataset): ``Training/<class>``, ``Testing/<class>``.
* eye_disease (gunavenkatdoddi/eye-diseases-classification): ``dataset/<class>`` with no split;
  a stratified seeded 80/20 split is made (per class: sort names, shuffle with one
  ``random.Random(seed)``, classes in registry order, the first ``round(0.2 n)`` go to test).
* alzheimer (tourist55/alzheimers-dataset-4-class-of-images): ``Alzheimer_s Dataset/{train,test}/<class>``.

The copies in ``../shared/datasets`` were also de-duplicated and had a hold-out removed (see its
README), so counts from a fresh fetch are higher than those.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from core.catalog import DATASETS, IMAGE_EXTENSIONS, DatasetError, stratified_split

EYE_TEST_FRACTION = 0.2
# Folder names of each Kaggle release, mapped to our split names (None: no split in the source).
KAGGLE_SPLITS: dict[str, dict[str, str] | None] = {
    "brain_tumor": {"Training": "train", "Testing": "test"},
    "eye_disease": None,
    "alzheimer": {"train": "train", "test": "test"},
}


class FetchError(DatasetError):
    """A download or a source folder that cannot be arranged, with what to do about it."""


def _kaggle_info(name: str):
    info = DATASETS.get(name)
    if info is None or not info.kaggle:
        fetchable = [n for n, i in DATASETS.items() if i.kaggle]
        raise FetchError(f"{name!r} cannot be fetched; choose one of {fetchable}")
    return info


def _class_dirs(folder: Path, classes: tuple[str, ...]) -> dict[str, Path] | None:
    """Map canonical class names to the sub-folders of ``folder`` (case-insensitive), or None."""
    subdirs = {p.name.lower(): p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if set(subdirs) != {c.lower() for c in classes}:
        return None
    return {c: subdirs[c.lower()] for c in classes}


def _find(src: Path, test) -> Path:
    """The shallowest folder under ``src`` (itself included, depth <= 4) for which ``test`` holds."""
    level = [src]
    for _ in range(5):
        for folder in sorted(level):
            if test(folder):
                return folder
        level = [p for f in level for p in f.iterdir() if p.is_dir() and not p.name.startswith(".")]
    raise FileNotFoundError


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _locate(name: str, src: Path) -> dict[str, dict[str, list[Path]]]:
    """Image files per split per class found in a Kaggle download of ``name``."""
    classes = DATASETS[name].classes
    splits = KAGGLE_SPLITS[name]
    try:
        if splits is None:
            base = _find(src, lambda f: _class_dirs(f, classes) is not None)
            return {"all": {c: _images(d) for c, d in _class_dirs(base, classes).items()}}
        base = _find(src, lambda f: all((f / s).is_dir() and _class_dirs(f / s, classes) for s in splits))
    except FileNotFoundError:
        want = f"<class>/ folders {list(classes)}" if splits is None else \
            f"{' and '.join(splits)}/ folders, each with class folders {list(classes)}"
        raise FetchError(f"{src}: no folder with {want} was found; is this the Kaggle download of {name}?") from None
    return {ours: {c: _images(d) for c, d in _class_dirs(base / theirs, classes).items()}
            for theirs, ours in splits.items()}


def _place(source: Path, target: Path, link: bool) -> None:
    if link:
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or links not allowed: copy instead
            pass
    shutil.copy2(source, target)


def arrange_kaggle_layout(name: str, src_dir: str | os.PathLike, dest_root: str | os.PathLike, seed: int = 0, *,
                          link: bool = True, overwrite: bool = False) -> dict[str, dict[str, int]]:
    """Copy (or hard-link) a Kaggle download into ``dest_root/<name>/{train,test}/<class>/``.

    Args:
        name: "brain_tumor", "eye_disease" or "alzheimer".
        src_dir: the downloaded folder (the release's own folder may sit a few levels below).
        dest_root: data root to create (see `core.catalog.resolve_root`).
        seed: seed of the 80/20 split for eye_disease (unused for the others).
        link: hard-link files where possible (no extra disk space), else copy.
        overwrite: replace an existing ``dest_root/<name>`` folder.

    Returns:
        Image counts ``{"train": {class: n}, "test": {class: n}}``.

    Raises:
        FetchError: unknown name, unrecognised source layout, or destination already present.
    """
    info = _kaggle_info(name)
    src = Path(src_dir)
    if not src.is_dir():
        raise FetchError(f"source folder {src} does not exist")
    found = _locate(name, src)
    if "all" in found:
        by_name = {c: {p.name: p for p in files} for c, files in found["all"].items()}
        train, test = stratified_split({c: list(m) for c, m in by_name.items()}, EYE_TEST_FRACTION, seed)
        found = {s: {c: [by_name[c][n] for n in part[c]] for c in info.classes}
                 for s, part in (("train", train), ("test", test))}
    empty = [f"{s}/{c}" for s, per in found.items() for c, files in per.items() if not files]
    if empty:
        raise FetchError(f"{src}: no images in {empty}; the download looks incomplete, fetch it again")
    dest = Path(dest_root) / name
    if dest.exists() and any(dest.iterdir()):
        if not overwrite:
            raise FetchError(f"{dest} already exists and is not empty; remove it or pass overwrite=True / --overwrite")
        shutil.rmtree(dest)
    counts: dict[str, dict[str, int]] = {}
    for split, per_class in found.items():
        counts[split] = {}
        for cls, files in per_class.items():
            target_dir = dest / split / cls
            target_dir.mkdir(parents=True, exist_ok=True)
            for path in files:
                _place(path, target_dir / path.name, link)
            counts[split][cls] = len(files)
    return counts


def fetch_dataset(name: str, dest_root: str | os.PathLike, seed: int = 0, *, link: bool = True,
                  overwrite: bool = False) -> dict:
    """Download ``name`` from Kaggle with kagglehub and arrange it under ``dest_root``.

    Returns:
        The counts from `arrange_kaggle_layout`.

    Raises:
        FetchError: kagglehub missing, download failed, or layout not recognised.
    """
    info = _kaggle_info(name)
    try:
        import kagglehub  # optional dependency, only needed here
    except ImportError as err:
        raise FetchError("kagglehub is not installed: pip install kagglehub (and set up Kaggle credentials), "
                         f"or download https://www.kaggle.com/datasets/{info.kaggle} yourself and run "
                         f"python -m core.fetch {name} --src <download> --dest <root>") from err
    try:
        path = kagglehub.dataset_download(info.kaggle)
    except Exception as err:  # network, credentials, licence not accepted: all end the same way
        raise FetchError(f"downloading {info.kaggle} failed ({err}); check the network and Kaggle credentials") from err
    return arrange_kaggle_layout(name, path, dest_root, seed, link=link, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m core.fetch NAME --dest DIR [--src DIR] [--seed N] [--copy] [--overwrite]``."""
    fetchable = [n for n, i in DATASETS.items() if i.kaggle]
    parser = argparse.ArgumentParser(prog="python -m core.fetch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=fetchable, help="dataset to fetch")
    parser.add_argument("--dest", required=True, help="data root to write <name>/{train,test}/<class>/ into")
    parser.add_argument("--src", help="arrange this already downloaded folder instead of downloading")
    parser.add_argument("--seed", type=int, default=0, help="seed of the eye_disease 80/20 split (default 0)")
    parser.add_argument("--copy", action="store_true", help="copy files instead of hard-linking them")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DEST/<name> folder")
    args = parser.parse_args(argv)
    try:
        if args.src:
            counts = arrange_kaggle_layout(args.name, args.src, args.dest, args.seed, link=not args.copy,
                                           overwrite=args.overwrite)
        else:
            counts = fetch_dataset(args.name, args.dest, args.seed, link=not args.copy, overwrite=args.overwrite)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for split, per_class in counts.items():
        print(f"{split}: " + ", ".join(f"{c} {n}" for c, n in per_class.items()) + f" (total {sum(per_class.values())})")
    print(f"done: {Path(args.dest) / args.name}; use root={args.dest!r} or KD_DATA_ROOT={args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
