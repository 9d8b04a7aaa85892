"""Train-and-distil page helper: the recipe of `core.train` run in a temporary folder, then a quick test.

Everything is written to a fresh temporary directory that is deleted afterwards: the shipped
checkpoints and the app's cached models are never touched (`core.train` distils from a private
copy of the teacher it is given).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict
from typing import Callable

from torch import nn

from core.evaluate import evaluate_checkpoints
from core.models import count_parameters
from core.recipe import Stage, TrainConfig
from core.train import run_stages

# Stage names of the recipe's first seed -> the roles the app shows (`explorer.roles.ROLE_LABELS`).
STAGE_ROLES = {"teacher": "teacher", "student_s0": "student", "label_only_s0": "student_label_only"}


def run_key(cfg: TrainConfig, shipped_version: tuple | None) -> str:
    """Everything a training result depends on (the whole recipe, and the shipped teacher it distils, if any)."""
    return json.dumps({"recipe": asdict(cfg), "shipped_teacher": shipped_version}, sort_keys=True, default=str)


def computed_for(key: str) -> str:
    settings = json.loads(key)
    r = settings["recipe"]
    teacher = "the shipped teacher" if settings["shipped_teacher"] else f"a new {r['teacher_arch']} teacher"
    return (f"Computed for {r['dataset']}: {teacher}, {r['input_size']} px, {r['teacher_epochs']} epoch(s), "
            f"{r['max_per_class']} training images per class, alpha {r['loss_args'].get('alpha')}, "
            f"T {r['loss_args'].get('temperature')}, student depth {r['depth']}.")


def run_all(cfg: TrainConfig, shipped_teacher: nn.Module | None = None,
            on_epoch_end: Callable[[str, dict], None] | None = None,
            on_stage: Callable[[str], None] | None = None) -> dict:
    """Run the recipe (teacher unless ``shipped_teacher`` is given, distilled and label-only students)
    and evaluate each model on a capped, class-balanced test subset.

    Args:
        cfg: the recipe with the page's caps (seeds ``(0,)``; ``resume`` is irrelevant in a fresh folder).
        shipped_teacher: a loaded teacher to distil from instead of training one (never modified).
        on_epoch_end: ``(role, epoch record)`` after every epoch, for live curves.
        on_stage: called with the role when a model starts training.

    Returns:
        ``{"runs": {role: {"history", "stopped", "test_accuracy", "parameters", "seconds"}}, "test_images",
        "seconds", "config"}``.
    """
    out = tempfile.mkdtemp(prefix="kd-explorer-train-")
    started = time.perf_counter()
    stage_started: dict[str, float] = {}

    def starting(stage: Stage) -> None:
        stage_started[stage.name] = time.perf_counter()
        if on_stage:
            on_stage(STAGE_ROLES[stage.name])

    try:
        results = run_stages(cfg, out, teacher=shipped_teacher, on_stage=starting,
                             on_epoch_end=(lambda name, record: on_epoch_end(STAGE_ROLES[name], record))
                             if on_epoch_end else None)
        ended = {name: r.history[-1]["seconds"] if r.history else 0.0 for name, r in results.items()}
        test_cap = max(8, int(cfg.max_per_class or 16) // 2)
        report = evaluate_checkpoints({STAGE_ROLES[n]: r.path for n, r in results.items()}, n_boot=200,
                                      max_per_class=test_cap)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    runs = {STAGE_ROLES[name]: {"history": r.history, "stopped": r.stopped,
                                "test_accuracy": report["models"][STAGE_ROLES[name]]["accuracy"],
                                "parameters": count_parameters(r.model), "seconds": ended[name]}
            for name, r in results.items()}
    test_images = int(report["models"][next(iter(runs))]["n"])
    return {"runs": runs, "config": cfg, "test_images": test_images, "seconds": time.perf_counter() - started}
