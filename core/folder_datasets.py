"""A folder of the user's images read as a dataset: which classes it has, how it holds its splits, what its optional
``dataset.toml`` says, and every reason it cannot be used, in one message that says what to do. Read without torch.

Two layouts (`core.dataset_info.LAYOUTS`):

    DIR/train/<class>/<image>, DIR/test/<class>/<image>    "split": the test folder is the test split
    DIR/<class>/<image>                                    "flat": `TEST_FRACTION` of each class is carved as test,
                                                           stratified and seeded by the run's data seed

The dataset's name is the folder's name; its classes are the class folders' names in sorted order (spaces and any
script are fine: they are shown as text). Files that are not images (a README, a spreadsheet, a nested folder) are
skipped and counted; an image lying where class folders belong is refused, since its class is unknown.
``dataset.toml`` beside the class folders may say ``modality = "chest X-ray"``, ``source = "..."`` and
``input_size = 128``; any other key is refused.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from core.dataset_info import IGNORED_FILES, IMAGE_EXTENSIONS, DatasetError, DatasetInfo

DESCRIPTION_FILE = "dataset.toml"
TEST_FRACTION = 0.2
MIN_CLASSES = 2
# Every class needs images on both sides of each carve (test, then validation) and a few to learn from.
MIN_IMAGES_PER_CLASS = 10
DEFAULT_INPUT_SIZE = 128
INPUT_SIZES = (16, 1024)
# A dataset's name becomes a folder under the checkpoint root and a link's ?dataset= value.
NAME = re.compile(r"[^\W_][\w.-]{0,63}")
DESCRIPTION_FIELDS = {"modality": str, "source": str, "input_size": int}
TEXT_LIMIT = 200


def visible(entry: os.DirEntry | Path) -> bool:
    return not entry.name.startswith(".") and entry.name.lower() not in IGNORED_FILES


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def layout_of(folder: Path) -> str:
    """"split" when the folder has train/ and test/, "flat" when it has neither; a folder with one of them is
    refused (its other split would be read as a class)."""
    has = {s for s in ("train", "test") if (folder / s).is_dir()}
    if has == {"train", "test"}:
        return "split"
    if has:
        (present,), (absent,) = has, {"train", "test"} - has
        raise DatasetError(f"{folder} has {present}/ but no {absent}/: add {absent}/<class>/ folders, or put the "
                           f"class folders directly in {folder.name}/ (a test split is then carved)")
    return "flat"


def class_folders(folder: Path) -> list[str]:
    """The class folders' names in sorted order; an image lying among them is refused."""
    try:
        entries = [e for e in os.scandir(folder) if visible(e)]
    except OSError as err:
        raise DatasetError(f"{folder}: {err.strerror or err}") from err
    stray = sorted(e.name for e in entries if not e.is_dir() and is_image_name(e.name))
    if stray:
        shown = ", ".join(stray[:3]) + (" ..." if len(stray) > 3 else "")
        raise DatasetError(f"{folder}: {len(stray)} images lie where class folders belong ({shown}); move each into "
                           "a folder named after its class")
    return sorted(e.name for e in entries if e.is_dir())


def images_in(class_dir: Path) -> tuple[list[str], int]:
    """The image file names in one class folder (sorted) and how many other entries were skipped."""
    try:
        entries = [e for e in os.scandir(class_dir) if visible(e)]
    except OSError as err:
        raise DatasetError(f"{class_dir}: {err.strerror or err}") from err
    images = sorted(e.name for e in entries if is_image_name(e.name) and e.is_file())
    return images, len(entries) - len(images)


def read_description(folder: Path) -> dict:
    """``dataset.toml``'s fields, checked one by one (an absent file is an empty description)."""
    path = folder / DESCRIPTION_FILE
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as err:
        raise DatasetError(f"{path} cannot be read: {err}; fix it or remove it") from err
    unknown = sorted(set(data) - set(DESCRIPTION_FIELDS))
    if unknown:
        raise DatasetError(f"{path}: unknown field(s) {unknown}; it may set {sorted(DESCRIPTION_FIELDS)}")
    for key, kind in DESCRIPTION_FIELDS.items():
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            raise DatasetError(f"{path}: {key} must be {'a whole number' if kind is int else 'text'}, "
                               f"got {data[key]!r}")
    for key in ("modality", "source"):
        if key in data and not 0 < len(data[key].strip()) <= TEXT_LIMIT:
            raise DatasetError(f"{path}: {key} must be 1 to {TEXT_LIMIT} characters")
    if "input_size" in data and not INPUT_SIZES[0] <= data["input_size"] <= INPUT_SIZES[1]:
        raise DatasetError(f"{path}: input_size must be {INPUT_SIZES[0]} to {INPUT_SIZES[1]}, got {data['input_size']}")
    return data


def check_name(name: str, taken: set[str] = frozenset()) -> None:
    if not NAME.fullmatch(name):
        raise DatasetError(f"{name!r} cannot name a dataset: rename the folder to letters, digits, '-', '_' or '.' "
                           "(at most 64, starting with a letter or digit)")
    if name in taken:
        raise DatasetError(f"{name!r} is a built-in dataset's name: rename the folder (e.g. my_{name})")


def read_folder(folder: str | os.PathLike, taken: set[str] = frozenset()) -> DatasetInfo:
    """The folder as a `DatasetInfo` (``user=True``), or a `DatasetError` saying what to change.

    Args:
        taken: names the folder may not have (the built-in datasets').
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder of images; give DIR with DIR/<class>/<image> or "
                           "DIR/{train,test}/<class>/<image>")
    check_name(folder.name, taken)
    layout = layout_of(folder)
    splits = ("train", "test") if layout == "split" else ("",)
    classes = class_folders(folder / splits[0])
    if len(classes) < MIN_CLASSES:
        raise DatasetError(f"{folder / splits[0]} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'});"
                           f" a classifier needs at least {MIN_CLASSES}")
    for split in splits[1:]:
        other = class_folders(folder / split)
        if other != classes:
            raise DatasetError(f"{folder / split} has class folders {other}, {splits[0]}/ has {classes}: make them "
                               "the same")
    for split in splits:
        for name in classes:
            images, _ = images_in(folder / split / name)
            least = MIN_IMAGES_PER_CLASS if split != "test" else 1
            if len(images) < least:
                raise DatasetError(f"{folder / split / name} holds {len(images)} images; every class needs at least "
                                   f"{least} there (images end in {', '.join(sorted(IMAGE_EXTENSIONS))})")
    description = read_description(folder)
    return DatasetInfo(folder.name, tuple(classes), description.get("modality", "user images"),
                       description.get("source", str(folder)),
                       int(description.get("input_size", DEFAULT_INPUT_SIZE)), layout=layout, user=True)


def from_checkpoints(folder: Path, classes: list[str], input_size: int, taken: set[str] = frozenset()) -> DatasetInfo:
    """A dataset known only from its checkpoints' metadata (its images are elsewhere): name, classes and size."""
    check_name(folder.name, taken)
    if len(classes) < MIN_CLASSES:
        raise DatasetError(f"{folder}: its models have {len(classes)} class(es); a classifier needs {MIN_CLASSES}")
    return DatasetInfo(folder.name, tuple(classes), "known from its checkpoints (images not here)", str(folder),
                       int(input_size), user=True)
