"""Checkpoints: a plain state dict (``.pt``) plus its metadata as JSON (``.json``) beside it.

Weights are loaded with ``torch.load(weights_only=True)``: a checkpoint can never run code, and a
file that is anything but a flat dict of tensors is refused with a clear message.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.models import MODELS, build_model


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded, with the reason."""


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
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in data]
        if missing:
            raise CheckpointError(f"metadata lacks required fields: {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})


def library_versions() -> dict[str, str]:
    import numpy
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus"}


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


def atomic_write_bytes(path: str | Path, write) -> None:
    """Write via a temporary file in the same folder and rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; shipped files must be readable by everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode("utf-8")))


def save(model: nn.Module, meta: CheckpointMeta, path: str | Path, half: bool | None = None) -> Path:
    """Save weights (state dict only) and metadata atomically; returns the weights path.

    Args:
        half: store float tensors in float16 (halves the size); defaults to ``meta.weights_dtype``.
    """
    path = Path(path)
    half = meta.weights_dtype == "float16" if half is None else half
    meta.weights_dtype = "float16" if half else "float32"
    meta.versions = meta.versions or library_versions()
    meta.created = meta.created or now_iso()
    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone()
             for k, v in model.state_dict().items()}
    atomic_write_bytes(path, lambda handle: torch.save(state, handle))
    atomic_write_text(meta_path(path), meta.to_json())
    return path


def load_meta(path: str | Path) -> CheckpointMeta:
    """Read and validate the JSON metadata beside a checkpoint."""
    mpath = meta_path(path)
    if not mpath.is_file():
        raise CheckpointError(f"{mpath}: metadata file is missing (every .pt needs its .json)")
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{mpath}: metadata is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{mpath}: metadata must be a JSON object")
    meta = CheckpointMeta.from_dict(data)
    if meta.arch not in MODELS:
        raise CheckpointError(f"{mpath}: unknown architecture {meta.arch!r}; known: {', '.join(sorted(MODELS))}")
    if len(meta.classes) != meta.num_classes:
        raise CheckpointError(f"{mpath}: {len(meta.classes)} class names for {meta.num_classes} outputs")
    if len(meta.mean) != 3 or len(meta.std) != 3 or min(meta.std) <= 0:
        raise CheckpointError(f"{mpath}: mean/std must be 3 numbers each, std positive")
    return meta


def load(path: str | Path, expected_classes: list[str] | None = None) -> tuple[nn.Module, CheckpointMeta]:
    """Load a checkpoint as ``(model in eval mode, float32, meta)``.

    Raises:
        CheckpointError: missing file, corrupt or non-state-dict content, unknown architecture,
            class list other than ``expected_classes``, or tensors whose names/shapes do not match.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    meta = load_meta(path)
    if expected_classes is not None and list(expected_classes) != list(meta.classes):
        raise CheckpointError(f"{path}: trained for classes {meta.classes}, expected {list(expected_classes)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt zip, pickle with code, truncated file: all unusable
        raise CheckpointError(f"{path}: not a loadable weights-only state dict ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from err
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a plain state dict of tensors, got {type(state).__name__}")
    model = build_model(meta.arch, meta.num_classes, **meta.arch_args)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit {meta.arch}: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    bad = [k for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise CheckpointError(f"{path}: shape mismatch for {bad[0]}: file {tuple(state[bad[0]].shape)}, "
                              f"model {tuple(own[bad[0]].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model.eval(), meta
