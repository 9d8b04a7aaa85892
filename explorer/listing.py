"""What is on disk for each dataset, from files and metadata alone: its images (counted, not decoded), its
shipped checkpoints and their metadata. Nothing here imports torch, so Home and the sidebar draw before any
page needs a model. Where the files are is `core.layout`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.catalog import BUILT_IN, DATASETS, FOLDER_PROBLEMS, dataset_status, discover
from core.layout import dataset_folder, shipped_checkpoints
from core.metadata import CheckpointError, load_meta
from core.roles import TEACHER

DEFAULT_DATASET = "phantom"


def dataset_names() -> list[str]:
    """Every dataset the app can show: the built-in ones (the default first), then the user's folders of images
    under the data root and folders of checkpoints under the checkpoint root, found again on every run so that a
    dataset trained a moment ago is in the picker (a scan of folder names, not of images)."""
    discover()
    user = sorted(n for n in DATASETS if n not in BUILT_IN)
    return [DEFAULT_DATASET] + [n for n in DATASETS if n in BUILT_IN and n != DEFAULT_DATASET] + user


def folder_problems() -> dict[str, str]:
    """Why each folder under the data or checkpoint root that looks like a dataset is not one (by folder name)."""
    return {n: reason for n, reason in FOLDER_PROBLEMS.items() if n not in DATASETS}


def checkpoint_paths(dataset: str) -> dict[str, Path]:
    """Shipped checkpoints of a dataset that exist, keyed as the app keys models: by shipped file stem (teacher,
    student, student_label_only)."""
    return {role.shipped: path for role, path in shipped_checkpoints(dataset_folder(dataset)).items()}


def _test_accuracy(metrics: dict) -> float | None:
    """The test accuracy a checkpoint's metrics block records, or None where it has none that is a fraction (the
    metadata check takes any JSON object here; a card shows only a number it can read)."""
    test = metrics.get("test")
    value = test.get("accuracy") if isinstance(test, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:  # NaN fails 0 <= v
        return None
    return float(value)


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def status(name: str) -> dict:
    """`core.catalog.dataset_status` plus the checkpoints found for the dataset, their test accuracy, and the side
    at which its images are shown (the teacher's input size, else the registry's)."""
    info = dataset_status(name)
    paths = checkpoint_paths(name)
    info["checkpoints"] = {role: str(p) for role, p in paths.items()}
    metas, info["checkpoint_errors"] = {}, {}
    for role, path in paths.items():
        try:
            metas[role] = load_meta(path)
        except CheckpointError as err:  # shown on this dataset's card; the other datasets keep working
            info["checkpoint_errors"][role] = str(err)
    info["test_accuracy"] = {role: _test_accuracy(m.metrics) for role, m in metas.items()}
    teacher = metas.get(TEACHER.shipped)
    info["input_size"] = int(teacher.input_size) if teacher else DATASETS[name].input_size
    return info
