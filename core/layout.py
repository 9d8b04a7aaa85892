"""Where things live on disk: the one module that knows the layout of shipped checkpoints and of run folders.

Shipped, per dataset (``<checkpoint root>/<dataset>/``, another split's in ``<dataset>/<protocol>/``)::

    teacher.pt, student.pt, student_label_only.pt   each with its metadata <name>.json beside it
    results.json      every number of `core.reproduce`, and the faithfulness study
    predictions.npz   the test split's probabilities (`core.predictions`)
    ood.json, ood.npz the upload check (`core.ood`)
    timing/bench.json the explainer timing table (`core.bench`)
    earlier/*.json    superseded results kept for the record (rendered as earlier rows by `core.results`)
    earlier/replaced-<UTC time>/   every file a run replaced, as it was (`core.shipping`; not rendered)

A run (``runs/<dataset>/`` by default)::

    <stage>/best.pt, <stage>/state.pt    one folder per stage: ``teacher``, ``student_s0``, ``label_only_s0`` ...
    teacher_logits.pt                    the teacher's logits on the training views, shared by the students
    shipped/<stage>.pt                   the float16 copies `core.reproduce` evaluates and ships
    unshipped/<dataset>/                 what a trial run writes instead of shipping (a checkpoint root's layout)

The checkpoint root is ``$KD_CHECKPOINTS`` if set (tests point it at a temporary folder), else the repository's
``checkpoints/``; it is read on every call so that a test can redirect it. Nothing here imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.roles import SHIPPED, Role

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.npz"
TIMING_FILE = Path("timing") / "bench.json"
BEST_FILE, STATE_FILE = "best.pt", "state.pt"
TEACHER_LOGITS_FILE = "teacher_logits.pt"
SHIPPED_RUN_FOLDER = "shipped"
UNSHIPPED_RUN_FOLDER = "unshipped"
EARLIER_FOLDER = "earlier"


def checkpoint_root() -> Path:
    """Folder holding ``<dataset>/<shipped role>.pt``."""
    return Path(os.environ.get("KD_CHECKPOINTS") or REPO_ROOT / "checkpoints")


def in_checkpoint_root(path: str | Path) -> bool:
    """Whether ``path`` lies in the checkpoint root (or the repository's ``checkpoints/``): shipped work, which
    a run replaces only by the rule of `core.shipping`."""
    path = Path(path).resolve()
    return any(path.is_relative_to(root.resolve()) for root in (checkpoint_root(), REPO_ROOT / "checkpoints"))


def dataset_folder(dataset: str, protocol: str = "official", root: str | Path | None = None) -> Path:
    """Folder of one dataset's shipped files: ``<root>/<dataset>``, another split's in ``<dataset>/<protocol>``."""
    folder = Path(root if root is not None else checkpoint_root()) / dataset
    return folder if protocol == "official" else folder / protocol


def checkpoint_file(folder: str | Path, role: Role) -> Path:
    """A shipped role's checkpoint in a dataset folder."""
    if role.shipped is None:
        raise ValueError(f"the {role.noun} is not shipped as a checkpoint")
    return Path(folder) / f"{role.shipped}.pt"


def shipped_checkpoints(folder: str | Path) -> dict[Role, Path]:
    """The shipped checkpoints that exist in a dataset folder, by role, in the table's order."""
    paths = {r: checkpoint_file(folder, r) for r in SHIPPED}
    return {r: p for r, p in paths.items() if p.is_file()}


def results_file(folder: str | Path) -> Path:
    return Path(folder) / RESULTS_FILE


def timing_file(folder: str | Path) -> Path:
    return Path(folder) / TIMING_FILE


def replaced_folder(folder: str | Path, stamp: str) -> Path:
    """Where the files a run replaced in a dataset folder are kept: a sub-folder of ``earlier/``, whose own
    ``*.json`` files are the results rows `core.results` renders, so its name never ends in ``.json``."""
    return Path(folder) / EARLIER_FOLDER / f"replaced-{stamp}"


def stage_folder(runs: str | Path, stage: str) -> Path:
    """One stage's run folder (its ``best.pt`` and resumable ``state.pt``)."""
    return Path(runs) / stage
