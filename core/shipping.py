"""When a run may replace shipped work, and how the replaced files are kept: one rule for `core.reproduce`, the
faithfulness study (`core.faithfulness_study`) and the timing table (`core.bench`).

A dataset folder's shipped files change only when the new run has at least what made them: the budget (input size,
epochs, training images per class, the alpha/T grid) and the training data for the checkpoints; the images, steps,
methods and models for the study; the images, repeats, methods and time budget for the timing table. Otherwise the
run is refused before it starts, in one line naming what is less; ``--force`` ships it anyway. A trial run (training
images capped per class, as the smoke budget is) never replaces shipped checkpoints without ``--force``: it writes
into its own run folder (`core.reproduce`). What a run replaces is moved, never deleted, into
``<dataset folder>/earlier/replaced-<UTC time>/`` (`core.layout.replaced_folder`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from core.budgets import Budget
from core.layout import checkpoint_file, replaced_folder, results_file, shipped_checkpoints
from core.metadata import CheckpointError, load_meta, meta_path
from core.results_record import ShippedResults
from core.roles import TEACHER, Role
from core.study_record import FaithfulnessStudy, StudySettings


class ShippingRefused(ValueError):
    """A run would replace shipped work with less; the message names what is less and how to ship anyway."""


def at_least(name: str, new: float | None, shipped: float | None) -> str | None:
    """``name`` as a shortfall when ``new`` is less than ``shipped`` (None: no cap, i.e. all), else None."""
    if new is None or (shipped is not None and new >= shipped):
        return None
    return f"{name} {_number(new)} (shipped: {'all' if shipped is None else _number(shipped)})"


def _number(value: float) -> str:
    return "all" if value == math.inf else str(int(value)) if float(value).is_integer() else f"{value:g}"


def missing(name: str, new: Iterable[str], shipped: Iterable[str]) -> str | None:
    """``name`` as a shortfall when the new run leaves out some of the shipped ones, else None."""
    left_out = [x for x in shipped if x not in set(new)]
    return f"{name} without {', '.join(left_out)}" if left_out else None


def refuse_lesser(what: str, where: Path, less: list[str | None], force: bool) -> None:
    """Raise `ShippingRefused` when ``less`` names anything and ``force`` is off (one line, with the way out)."""
    less = [x for x in less if x]
    if less and not force:
        raise ShippingRefused(f"{where}: not replaced, this run has less than the {what} there ({'; '.join(less)}). "
                              "Pass --force to replace it anyway; the replaced files are kept under earlier/.")


def keep_replaced(folder: Path, names: Iterable[str | Path]) -> Path | None:
    """Move each of ``names`` (relative to ``folder``) that exists into a new ``earlier/replaced-<UTC time>/`` of
    ``folder``, keeping its relative path: one rename each, on the same disk, so nothing is copied or deleted.

    Returns that folder, or None when none of the files existed (nothing made)."""
    present = [Path(name) for name in names if (folder / name).is_file()]
    if not present:
        return None
    kept = _new_replaced_folder(folder)
    for name in present:
        (kept / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder / name, kept / name)
    return kept


def _new_replaced_folder(folder: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1, 1000):  # two runs within one second each keep their own folder
        candidate = replaced_folder(folder, stamp if n == 1 else f"{stamp}-{n}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"{replaced_folder(folder, stamp)}: too many replaced folders of this second")


# --------------------------------------------------------------------------- what each kind of shipped work holds

def shipped_results(folder: Path) -> tuple[ShippedResults | None, str | None]:
    """The results record in a dataset folder, and why it cannot be compared with (unreadable); (None, None) when
    there is none (no file, or a file holding only a faithfulness study, `core.faithfulness_study.write_study`)."""
    path = results_file(folder)
    if not path.is_file():
        return None, None
    try:
        if "budget" not in json.loads(path.read_text(encoding="utf-8")):
            return None, None
        return ShippedResults.read(path), None
    except (OSError, ValueError) as err:  # ResultsFileError is a ValueError, as is a JSON error
        return None, f"its {path.name} cannot be read ({err})"


def has_shipped_checkpoints(folder: Path) -> bool:
    """Whether a dataset folder holds shipped checkpoints or their results (a study alone does not count)."""
    results, unreadable = shipped_results(folder)
    return bool(shipped_checkpoints(folder)) or results is not None or unreadable is not None


def checkpoint_shortfalls(folder: Path, budget: Budget, grid: bool,
                          fingerprint_at: Callable[[int], str]) -> list[str]:
    """What a `core.reproduce` run of ``budget`` (with or without its alpha/T grid) has less of than the checkpoints
    shipped in ``folder``. ``fingerprint_at(input size)``: the run's training data fingerprint at that size (the
    phantom's pixels depend on it), compared with the shipped teacher's at the teacher's size."""
    results, unreadable = shipped_results(folder)
    less = [unreadable]
    teacher = checkpoint_file(folder, TEACHER)
    meta = None
    if meta_path(teacher).is_file():
        try:
            meta = load_meta(teacher)
        except CheckpointError as err:
            less.append(f"its teacher's metadata cannot be read ({err})")
    shipped = results.budget if results is not None else None
    if shipped is None and meta is not None:  # checkpoints shipped without results: what the teacher says
        train = meta.train or {}
        shipped = Budget(input_size=meta.input_size, teacher_epochs=train.get("teacher_epochs") or 0, grid_epochs=0,
                         student_epochs=0, max_per_class=train.get("max_per_class"))
    if shipped is not None:
        less += [at_least("input size", budget.input_size, shipped.input_size),
                 at_least("teacher epochs", budget.teacher_epochs, shipped.teacher_epochs),
                 at_least("student epochs", budget.student_epochs, shipped.student_epochs),
                 at_least("training images per class", _cap(budget.max_per_class), _cap(shipped.max_per_class))]
    if results is not None and results.grid:
        less.append(at_least("grid epochs", budget.grid_epochs, shipped.grid_epochs) if grid else
                    f"the alpha/T grid: none (shipped: {len(results.grid)} settings)")
    if meta is not None and meta.data_fingerprint and fingerprint_at(meta.input_size) != meta.data_fingerprint:
        less.append("other training data (its fingerprint differs from the shipped teacher's)")
    return [x for x in less if x]


def _cap(max_per_class: int | None) -> float:
    return math.inf if max_per_class is None else max_per_class


def study_shortfalls(new: StudySettings, new_images: float, shipped: FaithfulnessStudy,
                     shipped_images: float) -> list[str]:
    """What a study of ``new`` settings has less of than the ``shipped`` study. ``new_images``/``shipped_images``:
    the test images each asks for (math.inf: the whole split), a shipped study's at most the images it had."""
    old = shipped.config
    return [x for x in (at_least("images", new_images, min(shipped_images, shipped.images)),
                        at_least("slow-method images", new.slow_images, old.slow_images),
                        at_least("sanity images", new.sanity_images, old.sanity_images),
                        at_least("steps", new.steps, old.steps),
                        missing("methods", new.methods, old.methods),
                        missing("explained models", [r.key for r in new.explained], [r.key for r in old.explained]),
                        # version 2: patches per side and ROAD's shares (a version 1 study has neither)
                        old.patches and at_least("patches per side", new.patches or 0, old.patches),
                        old.road_fractions and at_least("ROAD shares", len(new.road_fractions or ()),
                                                        len(old.road_fractions)))
            if x]


def timing_shortfalls(new: Mapping, shipped: Mapping) -> list[str]:
    """What a `core.bench` configuration has less of than the shipped timing table's (``bench.json``'s config)."""
    less = [at_least("images", new.get("images"), shipped.get("images")),
            at_least("repeats", new.get("repeats"), shipped.get("repeats")),
            at_least("time budget (s)", _budget(new.get("budget_s")), _budget(shipped.get("budget_s"))),
            missing("methods", new.get("methods") or [], shipped.get("methods") or [])]
    if new.get("random_weights") and not shipped.get("random_weights"):
        less.append("random weights instead of the checkpoints")
    return [x for x in less if x]


def _budget(seconds: float | None) -> float:
    return math.inf if not seconds else seconds  # no budget: no limit


# --------------------------------------------------------------------------- a user's dataset, trained by core.train

def user_run_destination(folder: Path, budget: Budget, fingerprint_at: Callable[[int], str], force: bool) -> Path:
    """Where ``python -m core.train`` puts the models of a user's dataset (``<checkpoint root>/<name>/``, found by
    the app), decided before it trains: a new dataset replaces nothing; models already there are replaced only by
    a run with at least their budget and data, or with ``force`` (`ShippingRefused` otherwise)."""
    if has_shipped_checkpoints(folder):
        refuse_lesser("models", folder, checkpoint_shortfalls(folder, budget, False, fingerprint_at), force)
    return folder


def ship_models(models: Mapping[Role, Path], folder: Path) -> Path | None:
    """Copy each role's checkpoint (and its metadata beside it) into ``folder`` under its shipped name, the files it
    replaces moved under ``earlier/`` first. Returns the folder they were kept in (None: nothing replaced)."""
    names = [Path(checkpoint_file(folder, role).name).with_suffix(suffix) for role in models for suffix in (".pt", ".json")]
    kept = keep_replaced(folder, names)
    folder.mkdir(parents=True, exist_ok=True)
    for role, src in models.items():
        for suffix in (".pt", ".json"):
            tmp = checkpoint_file(folder, role).with_suffix(suffix + ".partial")
            shutil.copyfile(Path(src).with_suffix(suffix), tmp)
            os.replace(tmp, checkpoint_file(folder, role).with_suffix(suffix))
    return kept
