"""What is on disk for each dataset, from files and metadata alone: its images (counted, not decoded), its
shipped checkpoints and their metadata. Nothing here imports torch, so Home and the sidebar draw before any
page needs a model.

Checkpoints are looked up as ``<checkpoint root>/<dataset>/<role>.pt``; the root is
``$KD_CHECKPOINTS`` if set (tests point it at a temporary folder), else ``checkpoints/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core.catalog import dataset_status
from core.metadata import CheckpointError, CheckpointMeta, load_meta
from explorer.roles import ROLES

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = "phantom"


def checkpoint_root() -> Path:
    """Folder holding ``<dataset>/<role>.pt`` (read on every call so tests can redirect it)."""
    return Path(os.environ.get("KD_CHECKPOINTS") or ROOT / "checkpoints")


def checkpoint_paths(dataset: str) -> dict[str, Path]:
    """Shipped checkpoints of a dataset that exist, by role (teacher, student, student_label_only)."""
    folder = checkpoint_root() / dataset
    return {role: folder / f"{role}.pt" for role in ROLES if (folder / f"{role}.pt").is_file()}


def read_meta(path: Path) -> CheckpointMeta | None:
    """Metadata of a checkpoint without loading weights; None if unreadable."""
    try:
        return load_meta(path)
    except CheckpointError:
        return None


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def status(name: str) -> dict:
    """`core.catalog.dataset_status` plus the checkpoints found for the dataset."""
    info = dataset_status(name)
    paths = checkpoint_paths(name)
    info["checkpoints"] = {role: str(p) for role, p in paths.items()}
    metas, info["checkpoint_errors"] = {}, {}
    for role, path in paths.items():
        try:
            metas[role] = load_meta(path)
        except CheckpointError as err:  # shown on this dataset's card; the other datasets keep working
            info["checkpoint_errors"][role] = str(err)
    info["test_accuracy"] = {role: (m.metrics.get("test") or {}).get("accuracy") for role, m in metas.items()}
    return info
