"""What the code knows about a dataset before reading it (`DatasetInfo`), the error for a dataset it cannot use,
and the names of files that are, or are never, images: read without torch, by the catalog and by the reader of
user folders (`core.folder_datasets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The phantom's classes and split sizes (`core.phantom` draws the images).
PHANTOM_CLASSES = ("no_lesion", "infiltrative", "extra_axial", "midline")
DEFAULT_SPLIT_SIZES = {"train": 960, "val": 192, "test": 384}
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dcm"})
# Operating-system litter that may sit in any folder and is never data.
IGNORED_FILES = frozenset({"thumbs.db", "desktop.ini"})
SPLITS = ("train", "val", "test")
PROTOCOLS = ("official", "pooled")
# How validation is carved out of train: a seeded share of each class at random, or the outer slices of each scan
# (slice datasets: `core.catalog.scan_end_split`).
VAL_CARVES = ("random", "scan_ends")
REPO_ROOT = Path(__file__).resolve().parents[1]
# How a folder holds its splits: "split" is {train,test}/<class>/, "flat" is <class>/ with the test split carved.
LAYOUTS = ("split", "flat")


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
        layout: one of `LAYOUTS`.
        user: a folder the user brought (`core.folder_datasets`): files that are not images are skipped and
            counted rather than refused, and the name can be registered again when the folder changes.
        root: the data root this dataset's folder lies in, where it is not the default one (a folder named by
            ``--data DIR``, or found through the run that trained its checkpoints); "" for the default root.
        split_note: what its test split measures, where that is not what a reader would assume ("" if nothing).
    """

    name: str
    classes: tuple[str, ...]
    modality: str
    source: str
    input_size: int
    synthetic: bool = False
    kaggle: str = ""
    layout: str = "split"
    user: bool = False
    root: str = ""
    split_note: str = ""
