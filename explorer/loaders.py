"""Cached access to checkpoints, datasets and images for the pages.

Each cache matches how long its contents live and whether callers may change them:

* models are `st.cache_resource`: one shared object per checkpoint file for all sessions. They
  are read-only: nothing trains them or leaves hooks on them. Code that attaches hooks (feature
  maps, explainers) holds ``loaded.lock`` while it does.
* datasets are `st.cache_resource` too (lazy readers, never mutated);
* arrays, images and reports (``results.json``) are `st.cache_data` (copied per call, so callers may
  modify them); files are keyed by path and modification time, so a rewritten file is read again. The pages
  read ``results.json`` through its record (`core.results_record.ShippedResults`); only the faithfulness study
  is taken from its raw JSON, since a file may hold the study alone.

Models are keyed as the app keys them everywhere (URLs, session state, charts): by their shipped file stem
(`core.roles.Role.shipped`: teacher, student, student_label_only). Where the files are is `core.layout`; what
their metadata says, without loading weights, is `explorer.listing` (no torch).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st
import torch
from PIL import Image

from core import checkpoints, predictions
from core.checkpoints import CheckpointMeta, file_sha256
from core.catalog import DATASETS, DatasetError
from core.data import load_dataset
from core.images import open_image, to_rgb
from core.layout import PREDICTIONS_FILE, checkpoint_file, dataset_folder, results_file
from core.results_record import ShippedResults
from core.roles import DISTILLED, SHIPPED, TEACHER
from core.teacher_evidence import HEAD_FILE, attach_shipped_head
from explorer import listing, runtime

runtime.configure_torch()  # the first page that can load a model sets torch's threads, before any model runs
runtime.configure_server()


def model_versions(models: dict[str, "LoadedModel"]) -> tuple:
    """``((role, path, mtime), ...)`` of loaded models: part of the key of every result computed with them."""
    return tuple(m.version for _, m in sorted(models.items()))


def describe_versions(versions: tuple) -> str:
    """`model_versions` in words: "student student.pt, teacher teacher.pt"."""
    return ", ".join(f"{role} {Path(path).name}" for role, path, _ in versions)


def checkpoint_digests(dataset: str) -> dict[str, str | None]:
    """sha256 of each shipped checkpoint of a dataset by role (None where the file is missing)."""
    folder = dataset_folder(dataset)
    out = {}
    for role in SHIPPED:
        path = checkpoint_file(folder, role)
        out[role.shipped] = file_digest(str(path), path.stat().st_mtime) if path.is_file() else None
    return out


def head_digest(dataset: str) -> str | None:
    """sha256 of the student's evidence head shipped for a dataset (None where there is none)."""
    path = dataset_folder(dataset) / HEAD_FILE
    return file_digest(str(path), path.stat().st_mtime) if path.is_file() else None


@dataclass
class LoadedModel:
    """A shared, read-only model with its metadata and the lock to hold while hooks are attached."""

    model: torch.nn.Module
    meta: CheckpointMeta
    path: str
    role: str
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    head_note: str | None = None  # why an evidence head shipped beside the student is not attached

    @property
    def version(self) -> tuple:
        """``(role, path, (mtime, head mtime))``: the key under which a result computed with this model is cached,
        so that a rewritten checkpoint, or a retrained evidence head beside it, is computed with again."""
        return self.role, self.path, _mtimes(self.path)


def _mtimes(path: str) -> tuple[float | None, float | None]:
    """Modification times of a checkpoint and of the evidence head beside it (None where a file is missing)."""
    files = (Path(path), Path(path).parent / HEAD_FILE)
    return tuple(f.stat().st_mtime if f.is_file() else None for f in files)


@st.cache_resource(max_entries=8, show_spinner="Loading model ...")
def _load_checkpoint(path: str, role: str, mtimes: tuple, classes: tuple[str, ...]) -> LoadedModel:
    # mtimes is part of the cache key: a retrained checkpoint or evidence head replaces the cached model.
    model, meta = checkpoints.load(path, expected_classes=list(classes))
    note = attach_shipped_head(model, path) if role == DISTILLED.shipped else None
    return LoadedModel(model.eval(), meta, path, role, head_note=note)


def load_model(dataset: str, role: str) -> LoadedModel | None:
    """The shipped model of ``role`` for ``dataset``, or None when there is no such checkpoint.

    Raises:
        CheckpointError: the file exists but cannot be loaded, or its classes are not the dataset's
            (`core.catalog.DATASETS`), in the same order (the page shows the message).
    """
    path = listing.checkpoint_paths(dataset).get(role)
    if path is None:
        return None
    return _load_checkpoint(str(path), role, _mtimes(str(path)), tuple(DATASETS[dataset].classes))


def load_pair(dataset: str) -> tuple[LoadedModel | None, LoadedModel | None]:
    """(teacher, distilled student) of a dataset; either may be None."""
    return load_model(dataset, TEACHER.shipped), load_model(dataset, DISTILLED.shipped)


def load_models(dataset: str) -> dict[str, LoadedModel]:
    """Every shipped model of a dataset that exists, by role, in the roles table's order; raises as `load_model`."""
    loaded = {r.shipped: load_model(dataset, r.shipped) for r in SHIPPED}
    return {role: m for role, m in loaded.items() if m is not None}


def shipped_predictions(dataset: str) -> dict | None:
    """The shipped test predictions of the checkpoints shipped now (`core.predictions.load`: ``labels`` and
    ``probs`` by role, only for the roles whose checkpoint the file was made with), without running a model; None
    where there is no usable file or the test split cannot be read."""
    shas = tuple(sorted((name, sha) for name, sha in checkpoint_digests(dataset).items() if sha))
    path = dataset_folder(dataset) / PREDICTIONS_FILE
    return _shipped_predictions(dataset, shas, path.stat().st_mtime if path.is_file() else None)


@st.cache_data(max_entries=8, show_spinner=False)
def _shipped_predictions(dataset: str, shas: tuple, mtime: float | None) -> dict | None:
    # the checkpoints' digests and the file's mtime are the key: a new file or checkpoint is read again
    try:
        ds = split(dataset, "test")
        return predictions.load(dataset_folder(dataset), dict(shas), np.asarray(ds.targets), len(ds.classes))
    except (predictions.PredictionsError, DatasetError, OSError):
        return None


def first_clear_image(dataset: str) -> int:
    """The first test image that every model the shipped predictions cover (teacher and students) classifies right;
    0 where there is none or no usable file. A page opens on a clear case, not on a mistake it would have to explain
    first."""
    found = shipped_predictions(dataset)
    if not found:
        return 0
    right = np.logical_and.reduce([p.argmax(1) == found["labels"] for p in found["probs"].values()])
    return int(np.argmax(right)) if right.any() else 0


@st.cache_data(max_entries=32, show_spinner=False)
def file_digest(path: str, mtime: float) -> str:
    """sha256 of a file (a checkpoint), read again only when its mtime changes."""
    return file_sha256(path)


@st.cache_data(max_entries=16, show_spinner=False)
def _read_json(path: str, mtime: float) -> dict:
    # mtime is part of the cache key: a rewritten file is read again.
    return json.loads(Path(path).read_text(encoding="utf-8"))


def results_json(dataset: str, protocol: str = "official") -> dict | None:
    """The parsed JSON of a dataset's ``results.json`` on ``protocol``, or None (no file, or one that is not a
    JSON object). The official split's file sits beside the checkpoints (``<root>/<dataset>/results.json``),
    another protocol's in its own folder (``<root>/<dataset>/pooled/results.json``).

    Only the faithfulness study is read from it (`explorer.faithfulness_view.shipped_study`): everything else
    through `results`.
    """
    path = results_file(dataset_folder(dataset, protocol))
    try:
        data = _read_json(str(path), path.stat().st_mtime)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# What `core.faithfulness_study.write_study` leaves where no reproduce ran: a results.json of the study alone.
STUDY_ONLY = frozenset({"dataset", "faithfulness"})


def results(dataset: str, protocol: str = "official") -> ShippedResults | None:
    """The record of the ``results.json`` that `core.reproduce` shipped for ``dataset`` on ``protocol``, or None
    when it shipped none (no file, or a file of the faithfulness study alone).

    Raises:
        ResultsFileError: the file holds results this code cannot read: not JSON, a newer version, a field
            missing or of the wrong kind (the page shows the message).
    """
    path = results_file(dataset_folder(dataset, protocol))
    if not path.is_file():
        return None
    data = results_json(dataset, protocol)  # None here: not a JSON object, which the record refuses by name
    if data is not None and set(data) <= STUDY_ONLY:
        return None
    return ShippedResults.from_json(data, path)


def dataset_input_size(name: str) -> int:
    """Side at which samples are shown: the teacher's input size if shipped, else the registry's (as
    `explorer.listing.status` read it from the metadata for the sidebar, not read again)."""
    return listing.status(name)["input_size"]


@st.cache_resource(max_entries=8, show_spinner=False)
def split(name: str, split_name: str = "test", input_size: int | None = None):
    """A lazily decoded dataset split (shared, read-only). Raises `DatasetError` if unavailable."""
    return load_dataset(name, split_name, input_size=input_size or dataset_input_size(name))


def targets(name: str, split_name: str = "test") -> list[int]:
    return list(split(name, split_name).targets)


@st.cache_data(max_entries=512, show_spinner=False)
def sample_image(name: str, index: int, split_name: str = "test", full_size: bool = False) -> Image.Image:
    """Item ``index`` as an RGB PIL image: the file at its own size (``full_size``) or as the model sees it."""
    ds = split(name, split_name)
    if full_size and hasattr(ds, "path"):
        return to_rgb(open_image(ds.path(index)))
    pixels, _ = ds[index]
    return Image.fromarray((pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), "RGB")


@st.cache_data(max_entries=512, show_spinner=False)
def thumbnail(name: str, index: int, side: int = 128) -> Image.Image | None:
    """A test item resized to ``side`` pixels for grids (small phantom images are enlarged); None when its
    file cannot be read (a grid shows the others)."""
    try:
        return sample_image(name, index).resize((side, side), Image.Resampling.BILINEAR)
    except DatasetError:
        return None


def readable_items(name: str, indices: list[int], split_name: str = "test") -> tuple[torch.Tensor, list[int], list[int]]:
    """The decoded items at ``indices``, leaving out files that cannot be read.

    Returns:
        ``(float batch (N, 3, H, W), indices kept, indices skipped)``.

    Raises:
        DatasetError: not one of the items can be read.
    """
    ds = split(name, split_name)
    kept, skipped, pixels = [], [], []
    for i in indices:
        try:
            pixels.append(ds[i][0])
            kept.append(i)
        except DatasetError:
            skipped.append(i)
    if not pixels:
        raise DatasetError(f"none of the {len(indices)} chosen {name} {split_name} images can be read")
    return torch.stack(pixels), kept, skipped


@st.cache_data(max_entries=256, show_spinner=False)
def sample_mask(name: str, index: int, split_name: str = "test") -> np.ndarray | None:
    """Lesion mask of a phantom item (bool H x W) or None for datasets without masks."""
    ds = split(name, split_name)
    return ds.mask(index) if hasattr(ds, "mask") else None


def first_per_class(name: str, per_class: int, split_name: str = "test") -> dict[int, list[int]]:
    """The first ``per_class`` item indices of every class (a stable sample grid)."""
    picked: dict[int, list[int]] = {}
    for i, t in enumerate(targets(name, split_name)):
        if len(picked.setdefault(int(t), [])) < per_class:
            picked[int(t)].append(i)
    return picked


def spread_over_classes(name: str, n: int, split_name: str = "test") -> list[int]:
    """About ``n`` item indices spread evenly over the classes: the first ``n // classes`` (at least one) of each,
    class after class."""
    per_class = max(1, n // len(split(name, split_name).classes))
    return [i for picked in first_per_class(name, per_class, split_name).values() for i in picked]


def images_available(name: str) -> bool:
    """Whether the dataset's images can be read here (always true for the phantom)."""
    try:
        split(name, "test")
        return True
    except (DatasetError, OSError):
        return False
