"""Checkpoint metadata, the JSON beside every ``.pt`` (`CheckpointMeta`, every field validated), and atomic
file writes: all of it without torch, so the app's Home reads what is shipped before any page imports torch.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.roles import KINDS

log = logging.getLogger(__name__)

# The registered architectures (`core.models.MODELS`) with the keyword arguments their constructors take, known
# here without importing torch (a test checks that both say the same).
ARCHITECTURES = {"densenet121": ("num_classes",), "resnet18": ("num_classes",),
                 "student": ("num_classes", "depth", "widths", "dropout", "pooled")}
# Any other architecture is a torchvision classification CNN by name, without arguments (`core.torchvision_teachers`),
# known here by the shape of its name only: whether torchvision has it is checked when the model is built.
TORCHVISION_NAME = re.compile(r"[a-z][a-z0-9_]{1,63}")
MAX_META_BYTES = 16 * 1024 * 1024  # the shipped metadata is < 100 KiB; a larger file is refused unread
MAX_CLASSES = 100_000
INPUT_SIZES = (8, 4096)  # 8 is `core.images.MIN_SIDE`, the smallest image anything here accepts
MIN_STD = 1e-6  # a smaller std overflows float32 normalisation (and 1e-50 is 0.0 in float32)
SEED_RANGE = (0, 2**32 - 1)  # what every seeding call accepts (numpy's takes 32 bits; torch's, 64)
WEIGHT_DTYPES = ("float32", "float16", "bfloat16")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded, with the reason."""


class StateWriteError(OSError):
    """A file that could not be written (disk full, no permission, ...); the previous file is intact."""


@dataclass
class CheckpointMeta:
    """Everything needed to rebuild, feed and judge a model.

    ``mean``/``std`` are the per-channel normalisation used in training; `core.inference` applies
    exactly these. ``metrics`` holds the evaluation report (`core.evaluate`).
    """

    arch: str
    num_classes: int
    classes: list[str]
    input_size: int
    mean: list[float]
    std: list[float]
    role: str = "teacher"  # "teacher" or "student"
    dataset: str = ""
    arch_args: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    kd: dict[str, Any] | None = None
    seed: int = 0
    data_fingerprint: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    weights_dtype: str = "float32"
    notes: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> "CheckpointMeta":
        """Validate every field (type and range, see `validate_fields`) and build the metadata.

        Fields with a default may be missing; unknown keys are ignored, so metadata written by a newer
        version with extra fields still loads.

        Raises:
            CheckpointError: naming the first field that is missing, of the wrong type or out of range.
        """
        if not isinstance(data, dict):
            raise CheckpointError(f"metadata must be a JSON object, got {_json_type(data)}")
        fields = dataclasses.fields(cls)
        missing = [f.name for f in fields
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in data]
        if missing:
            raise CheckpointError(f"metadata lacks required field(s): {', '.join(repr(m) for m in missing)}")
        known = {f.name for f in fields}
        validate_fields({k: v for k, v in data.items() if k in known})
        return cls(**{k: v for k, v in data.items() if k in known})


def _json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value!r}".lower()
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    if isinstance(value, (list, dict)):
        text = json.dumps(value, default=str)
        return f"{'array' if isinstance(value, list) else 'object'} {text[:60]}{' ...' if len(text) > 60 else ''}"
    return type(value).__name__


def _bad(name: str, rule: str, value: Any) -> CheckpointError:
    return CheckpointError(f"metadata field {name!r} must be {rule}, got {_json_type(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int with hundreds of digits
        return False


def _check_int(data: dict, name: str, lo: int, hi: int) -> None:
    value = data[name]
    if not _is_int(value) or not lo <= value <= hi:
        raise _bad(name, f"an integer from {lo} to {hi}", value)


def _check_str(data: dict, name: str, choices: tuple[str, ...] | None = None) -> None:
    value = data[name]
    if not isinstance(value, str):
        raise _bad(name, "a string", value)
    if choices is not None and value not in choices:
        raise _bad(name, f"one of {', '.join(choices)}", value)


def _check_dict(data: dict, name: str, nullable: bool = False) -> None:
    value = data[name]
    if not (isinstance(value, dict) or (nullable and value is None)):
        raise _bad(name, "an object" + (" or null" if nullable else ""), value)


def _check_triple(data: dict, name: str, min_value: float | None = None) -> None:
    value = data[name]
    rule = "an array of 3 finite numbers" + (f" of at least {min_value:g}" if min_value is not None else "")
    if not isinstance(value, list) or len(value) != 3 or not all(_is_finite_number(v) for v in value):
        raise _bad(name, rule, value)
    if min_value is not None and min(value) < min_value:
        raise _bad(name, rule, value)


def validate_fields(data: dict) -> None:
    """Check the type and range of every `CheckpointMeta` field present in ``data`` (a parsed JSON object).

    The rules: ``arch`` a registered architecture whose constructor takes every key of ``arch_args``;
    ``num_classes`` an integer (not a boolean) from 1 to `MAX_CLASSES`; ``classes`` exactly
    ``num_classes`` distinct non-empty strings; ``input_size`` an integer in `INPUT_SIZES`; ``mean`` and
    ``std`` 3 finite numbers each, ``std`` at least `MIN_STD`; ``role`` one of `core.roles.KINDS`;
    ``weights_dtype`` one of `WEIGHT_DTYPES`; ``seed`` an integer in `SEED_RANGE`; ``dataset``,
    ``data_fingerprint``, ``created``, ``notes`` strings; ``arch_args``, ``train``, ``metrics`` objects,
    ``versions`` an object of strings, ``kd`` an object or null.

    Raises:
        CheckpointError: whose message names the field (quoted) and says what it must be.
    """
    if "arch" in data:
        _check_str(data, "arch")
        if data["arch"] not in ARCHITECTURES and not TORCHVISION_NAME.fullmatch(data["arch"]):
            raise CheckpointError(f"metadata field 'arch': unknown architecture {data['arch']!r}; "
                                  f"known: {', '.join(sorted(ARCHITECTURES))} and torchvision's classification CNNs")
    if "num_classes" in data:
        _check_int(data, "num_classes", 1, MAX_CLASSES)
    if "classes" in data:
        classes = data["classes"]
        if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
            raise _bad("classes", "an array of non-empty strings", classes)
        if len(set(classes)) != len(classes):
            duplicates = sorted(c for c, n in collections.Counter(classes).items() if n > 1)
            raise CheckpointError(f"metadata field 'classes' names a class twice: {duplicates}")
        if "num_classes" in data and len(classes) != data["num_classes"]:
            raise CheckpointError(f"metadata field 'classes' has {len(classes)} class names for "
                                  f"'num_classes' = {data['num_classes']} outputs")
    if "input_size" in data:
        _check_int(data, "input_size", *INPUT_SIZES)
    if "mean" in data:
        _check_triple(data, "mean")
    if "std" in data:
        _check_triple(data, "std", MIN_STD)
    for name in ("dataset", "data_fingerprint", "created", "notes"):
        if name in data:
            _check_str(data, name)
    if "role" in data:
        _check_str(data, "role", KINDS)
    if "weights_dtype" in data:
        _check_str(data, "weights_dtype", WEIGHT_DTYPES)
    if "seed" in data:
        _check_int(data, "seed", *SEED_RANGE)
    for name in ("arch_args", "train", "metrics", "versions"):
        if name in data:
            _check_dict(data, name)
    if "kd" in data:
        _check_dict(data, "kd", nullable=True)
    if "versions" in data and not all(isinstance(v, str) for v in data["versions"].values()):
        raise _bad("versions", "an object of strings", data["versions"])
    if "arch" in data and "arch_args" in data:
        accepted = ARCHITECTURES.get(data["arch"], ("num_classes",))  # a torchvision CNN takes no arguments
        unknown = sorted(set(data["arch_args"]) - set(accepted))
        if unknown and data["arch"] not in ARCHITECTURES:
            raise CheckpointError(f"metadata field 'arch': unknown architecture {data['arch']!r} with arch_args "
                                  f"{unknown}: the registered ones are {', '.join(sorted(ARCHITECTURES))}, and a "
                                  "torchvision CNN by name takes no arguments")
        if unknown:
            raise CheckpointError(f"metadata field 'arch_args': architecture {data['arch']!r} has no argument(s) "
                                  f"{unknown}; it takes {sorted(accepted)}")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def meta_path(weights_path: str | Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (read in chunks): the identity of a checkpoint that another records."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# `atomic_write_bytes` writes ``.<name>.<8 random characters>.tmp`` (tempfile.mkstemp) beside ``<name>``.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def _write_failure(err: BaseException) -> OSError | None:
    """The OSError behind a failed write: ``err`` itself, one it was raised from (torch wraps them in
    RuntimeError), or None when the failure is not about the file system (a bug in the writer)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__
    return None


def atomic_write_bytes(path: str | Path, write, resume_hint: str | None = None) -> None:
    """Write via a temporary file in the same folder and rename, so a crash never leaves half a file.

    Args:
        write: called with the open binary handle of the temporary file.
        resume_hint: what the user can do after a failed write (e.g. the command that resumes), put in
            the error message.

    Raises:
        StateWriteError: the file system refused (disk full, quota, permission, ...): one error that
            says which file, why, that the previous file is intact and, if given, ``resume_hint``. The
            temporary file is removed. Any other exception of ``write`` propagates unchanged.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; shipped files must be readable by everyone
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            try:
                Path(tmp).unlink(missing_ok=True)
            except OSError:
                log.warning("could not remove the temporary file %s", tmp)
        cause = _write_failure(err) if isinstance(err, Exception) else None
        if cause is None:
            raise
        reason = cause.strerror or str(cause) or type(cause).__name__
        previous = (f"the previous {path.name} is intact" if path.exists()
                    else "no previous file existed and none was created")
        message = f"could not write {path}: {reason}; {previous}"
        if resume_hint:
            message += f". To resume: {resume_hint}"
        error = StateWriteError(message)
        error.errno = cause.errno  # (filename is left unset: OSError would then reformat the message)
        raise error from None


def atomic_write_text(path: str | Path, text: str, resume_hint: str | None = None) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode("utf-8")), resume_hint=resume_hint)


def remove_stale_temporaries(folder: str | Path, min_age_s: float = 0.0) -> int:
    """Delete the ``.<name>.<random>.tmp`` files an interrupted `atomic_write_bytes` left in ``folder``.

    Only regular files of exactly that pattern directly in ``folder`` are removed (not sub-folders).

    Args:
        min_age_s: keep files modified less than this many seconds ago (a write still in progress in
            another process); 0 removes all.

    Returns:
        How many files were removed (0 for a missing folder).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed, now = 0, time.time()
    for entry in folder.iterdir():
        if not _TEMPORARY.match(entry.name) or entry.is_symlink() or not entry.is_file():
            continue
        try:
            if min_age_s and now - entry.stat().st_mtime < min_age_s:
                continue
            entry.unlink()
            removed += 1
        except FileNotFoundError:
            continue  # removed meanwhile
        except OSError as err:
            log.warning("could not remove the stale temporary file %s: %s", entry, err)
    return removed


def load_meta(path: str | Path) -> CheckpointMeta:
    """Read and validate the JSON metadata beside a checkpoint (every field: `validate_fields`).

    Raises:
        CheckpointError: missing, unreadable, larger than `MAX_META_BYTES`, empty, not UTF-8, not
            JSON, not a JSON object, or a field missing / of the wrong type / out of range (named).
    """
    mpath = meta_path(path)
    if not mpath.is_file():
        raise CheckpointError(f"{mpath}: metadata file is missing (every .pt needs its .json)")
    try:
        if mpath.stat().st_size > MAX_META_BYTES:
            raise CheckpointError(f"{mpath}: metadata file is larger than {MAX_META_BYTES // 2**20} MiB")
        raw = mpath.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{mpath}: metadata cannot be read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{mpath}: metadata is not UTF-8 text (byte {err.start})") from None
    if not text.strip():
        raise CheckpointError(f"{mpath}: metadata file is empty")
    try:
        data = json.loads(text)
    except RecursionError:
        raise CheckpointError(f"{mpath}: metadata is not valid JSON (nested too deeply)") from None
    except ValueError as err:  # JSONDecodeError, or an integer of more than 4300 digits
        raise CheckpointError(f"{mpath}: metadata is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{mpath}: metadata must be a JSON object, got {_json_type(data)}")
    try:
        return CheckpointMeta.from_dict(data)
    except CheckpointError as err:
        raise CheckpointError(f"{mpath}: {err}") from None
