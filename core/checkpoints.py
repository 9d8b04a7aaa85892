"""Checkpoints: a plain state dict (``.pt``) plus its metadata as JSON (``.json``) beside it.

Weights are loaded with ``torch.load(weights_only=True)``: a checkpoint can never run code, and a
file that is anything but a flat dict of tensors is refused with a clear message. The metadata and the
atomic writes are `core.metadata` (no torch); their names are importable from here too.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
from torch import nn

from core.metadata import (CheckpointError, CheckpointMeta, StateWriteError, atomic_write_bytes, atomic_write_text,
                           file_sha256, load_meta, meta_path, now_iso, remove_stale_temporaries)
from core.models import build_model

__all__ = ["CheckpointError", "CheckpointMeta", "StateWriteError", "atomic_write_bytes", "atomic_write_text",
           "file_sha256", "load_meta", "meta_path", "now_iso", "remove_stale_temporaries", "library_versions",
           "save", "load"]


def library_versions() -> dict[str, str]:
    import numpy
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus"}


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
    described = f"{meta.arch} with arch_args {meta.arch_args}"
    try:
        # Built on the meta device first: hostile arch_args (a width of 10**6) allocate nothing before
        # the weights file, whose size is bounded, has been compared with the model.
        with torch.device("meta"):
            own = build_model(meta.arch, meta.num_classes, **meta.arch_args).state_dict()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot build {described}: {err}") from None
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit {described}: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    bad = [k for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise CheckpointError(f"{path}: shape mismatch for {bad[0]}: file {tuple(state[bad[0]].shape)}, "
                              f"model {tuple(own[bad[0]].shape)} ({described})")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path}: weights are not finite (NaN or inf) in {len(bad)} tensor(s), "
                              f"first {bad[0]}")
    model = build_model(meta.arch, meta.num_classes, **meta.arch_args)
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model.eval(), meta
