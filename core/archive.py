"""A zip of the user's images unpacked safely into the data root as a dataset (the app's upload on a share link).

Everything is checked before a byte is written: every entry stays inside the folder it is unpacked to (no ``..``, no
absolute or drive path), no links, no nested archives, no encrypted entries, at most `MAX_FILES` files and
`MAX_UNPACKED_BYTES` as the archive declares them. While unpacking, the bytes actually written are counted against
the declared sizes (an archive that lies about them is stopped). The folder is unpacked into a hidden temporary
folder of the data root, read as a dataset (`core.folder_datasets`), and only then renamed into place: a refused or
broken archive leaves nothing behind, and a dataset already there is never replaced.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from core.catalog import BUILT_IN, register_folder, resolve_root
from core.dataset_info import DatasetError, DatasetInfo
from core.folder_datasets import check_name, read_folder

MAX_ARCHIVE_BYTES = 200 * 2**20
MAX_FILES = 20_000
MAX_UNPACKED_BYTES = 2 * 2**30
ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst")
# What archivers add that is never data (macOS resource forks, Finder and Explorer litter).
LITTER = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")
CHUNK = 2**20


def _parts(name: str) -> tuple[str, ...]:
    """An entry's path parts, refused where it would leave the folder it is unpacked to."""
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if posix.startswith("/") or (parts and len(parts[0]) == 2 and parts[0][1] == ":") or ".." in parts:
        raise DatasetError(f"the archive's entry {name!r} points outside its folder; make the zip again from the "
                           "folder itself")
    return tuple(p for p in parts if p not in ("", "."))


def _entries(archive: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """The archive's files (litter and folders left out), each checked."""
    kept, declared = [], 0
    for info in archive.infolist():
        parts = _parts(info.filename)
        if not parts or any(p in LITTER for p in parts) or info.is_dir():
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DatasetError(f"the archive holds a link ({info.filename}); links are not unpacked: zip the files")
        if info.flag_bits & 0x1:
            raise DatasetError(f"{info.filename} is encrypted; zip the images without a password")
        if parts[-1].lower().endswith(ARCHIVE_SUFFIXES):
            raise DatasetError(f"the archive holds another archive ({info.filename}); unpack it and zip the images")
        declared += info.file_size
        kept.append((info, parts))
        if len(kept) > MAX_FILES:
            raise DatasetError(f"the archive holds more than {MAX_FILES:,} files; a dataset for this app needs fewer")
        if declared > MAX_UNPACKED_BYTES:
            raise DatasetError(f"the archive unpacks to more than {MAX_UNPACKED_BYTES / 2**30:.0f} GiB; use fewer or "
                               "smaller images")
    if not kept:
        raise DatasetError("the archive holds no files")
    return kept


def _copy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    """One entry, its written bytes held to its declared size (a lying header is a bomb's trick)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with archive.open(info) as src, open(dest, "xb") as out:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise DatasetError(f"{info.filename} unpacks to more than the archive says; it is not unpacked")
            out.write(chunk)


def unpack_dataset(source: str | os.PathLike | BinaryIO, name_hint: str, root: str | os.PathLike | None = None,
                   size: int | None = None) -> DatasetInfo:
    """Unpack a zip of one dataset into ``<data root>/<name>`` and register it.

    The dataset's name is the archive's one top-level folder, or ``name_hint`` (the zip's file name without its
    suffix) when the class folders are at the top. ``size``: the upload's size in bytes, checked first.

    Raises:
        DatasetError: saying what is wrong and what to do; nothing is left in the data root.
    """
    if size is not None and size > MAX_ARCHIVE_BYTES:
        raise DatasetError(f"the archive is {size / 2**20:.0f} MiB; at most {MAX_ARCHIVE_BYTES / 2**20:.0f} MiB")
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise DatasetError(f"not a zip archive ({err})") from err
    with archive:
        entries = _entries(archive)
        tops = {parts[0] for _, parts in entries}
        wrapped = len(tops) == 1 and all(len(parts) > 1 for _, parts in entries)
        name = next(iter(tops)) if wrapped else Path(name_hint).stem
        check_name(name, BUILT_IN)
        data_root = resolve_root(root)
        final = data_root / name
        if final.exists():
            raise DatasetError(f"a folder named {name!r} is in the data root already; rename the zip's folder")
        try:
            data_root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=data_root))
        except OSError as err:
            raise DatasetError(f"the data root {data_root} cannot be written ({err.strerror or err})") from err
        try:
            for info, parts in entries:
                _copy(archive, info, staging / name / Path(*(parts[1:] if wrapped else parts)))
            read_folder(staging / name, BUILT_IN)  # refused here: nothing reaches the data root
            os.rename(staging / name, final)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as err:
            raise DatasetError(f"the archive cannot be unpacked ({err})") from err
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return register_folder(final)
