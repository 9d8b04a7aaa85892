"""Is the image like the training images? The out-of-distribution check of `core.ood`, as the pages show it.

The detector (threshold and feature statistics) is read once per checkpoint version and shared by all
sessions; judging one image is one forward of the teacher, kept per image in `st.cache_data`.
"""

from __future__ import annotations

import streamlit as st
import torch

from core import ood
from core.cam import cam_head
from core.layout import dataset_folder
from core.roles import TEACHER
from explorer.loaders import LoadedModel, checkpoint_digests
from explorer.names import GLOSSARY
from explorer.text import plain

SCORE_NAMES = {"energy": "energy score", "mahalanobis": "Mahalanobis distance of the features"}


@st.cache_resource(max_entries=8, show_spinner=False)
def _detector(folder: str, sha256: str, channels: int, mtime: float):
    # mtime of ood.json is part of the key: a refitted detector is read again.
    return ood.load(folder, sha256, channels)


def detector(dataset: str, teacher: LoadedModel):
    """The teacher's detector, or None without one; `core.ood.OodError` for a broken or stale file."""
    sha = checkpoint_digests(dataset)[TEACHER.shipped]
    channels = cam_head(teacher.model).classifier.in_features
    folder = dataset_folder(dataset)
    file = folder / ood.FILE
    return _detector(str(folder), sha, channels, file.stat().st_mtime if file.is_file() else 0.0)


@st.cache_data(max_entries=64, show_spinner=False)
def _assess(_teacher: LoadedModel, teacher_path: str, sha256: str, image_ident: str, _x: torch.Tensor,
            _detector_value) -> dict:
    with _teacher.lock:
        return ood.assess(_teacher.model, _teacher.meta, _x, _detector_value)


def assess(dataset: str, teacher: LoadedModel, image_ident: str, x: torch.Tensor) -> dict | str | None:
    """The check of one image: a result dict, a message string when the detector cannot be used, or None."""
    try:
        found = detector(dataset, teacher)
    except ood.OodError as err:
        return f"The out-of-distribution check is unavailable: {plain(err)}"
    if found is None:
        return None
    sha = found[0].model_sha256
    return _assess(teacher, str(teacher.path), sha, image_ident, x, found)


def show(dataset: str, teacher: LoadedModel, image_ident: str, x: torch.Tensor, uploaded: bool,
         quiet: bool = False) -> bool:
    """A warning when the image is unlike the training images, else a one-line caption (none when ``quiet``: the
    pages that explain a test image say only what is unusual). Drawn above what the models say of the image;
    returns whether the image is unusual."""
    verdict = assess(dataset, teacher, image_ident, x)
    if verdict is None:
        if uploaded:
            st.caption("No out-of-distribution check ships with these checkpoints (python -m core.ood "
                       f"{dataset} writes one): an image unlike the training data still gets a confident class.")
        return False
    if isinstance(verdict, str):
        if not quiet:
            st.caption(verdict)
        return False
    name = SCORE_NAMES.get(verdict["score"]) or plain(verdict["score"])  # the detector file names its score
    numbers = f"{name} {verdict['value']:.3g}, threshold {verdict['threshold']:.3g}"
    if verdict["unusual"]:
        st.warning(f"This image is unlike the {dataset} training images ({numbers}; 95% of validation images "
                   "score below the threshold). What the models predict and show on this page means little for "
                   "it.", icon=":material/help:")
        return True
    if not quiet:
        st.caption(f"Like the training images ({numbers}). {GLOSSARY['Out-of-distribution score']}")
    return False
