"""Train-and-distil page helper: teacher, distilled student and label-only student in a temporary folder.

Everything is written to a fresh temporary directory that is deleted afterwards: the shipped
checkpoints and the app's cached models are never touched (`core.train.distill` works on a copy
of the teacher it is given).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

from core.data import load_dataset, materialize
from core.models import count_parameters
from core.train import TrainConfig, distill, evaluate_loss, fit

RUNS = {"teacher": "Teacher", "student": "Student (distilled)", "student_label_only": "Student (labels only)"}


@dataclass
class TrainSettings:
    """What the page's widgets choose."""

    dataset: str = "phantom"
    arch: str = "resnet18"
    epochs: int = 8
    max_per_class: int = 120
    input_size: int = 64
    alpha: float = 0.5
    temperature: float = 4.0
    depth: int = 5
    time_cap_s: float = 60.0
    label_only: bool = True


def run_all(s: TrainSettings, shipped_teacher=None,
            on_epoch_end: Callable[[str, dict], None] | None = None,
            on_stage: Callable[[str], None] | None = None) -> dict:
    """Train (or reuse) a teacher, distil a student, optionally train a label-only student; evaluate all.

    Args:
        shipped_teacher: a loaded teacher model to distil from instead of training one (never modified).
        on_epoch_end: ``(run name, epoch record)`` after every epoch, for live curves.
        on_stage: called with the run name when a run starts.

    Returns:
        ``{"runs": {name: {"history", "stopped", "test_accuracy", "parameters", "seconds"}}, "settings": ...}``.
    """
    out = tempfile.mkdtemp(prefix="kd-explorer-train-")
    started = time.perf_counter()
    common = dict(dataset=s.dataset, epochs=int(s.epochs), input_size=int(s.input_size), batch_size=32,
                  max_per_class=int(s.max_per_class), time_cap_s=float(s.time_cap_s), patience=max(3, int(s.epochs)))
    test = materialize(load_dataset(s.dataset, "test", input_size=int(s.input_size)), progress=False,
                       max_per_class=max(8, int(s.max_per_class) // 2))
    runs = {}

    def run(name, train):
        if on_stage:
            on_stage(name)
        t0 = time.perf_counter()
        result = train(lambda record: on_epoch_end(name, record) if on_epoch_end else None)
        _, acc = evaluate_loss(result.model, test.images, test.targets, result.meta.mean, result.meta.std)
        runs[name] = {"history": result.history, "stopped": result.stopped, "test_accuracy": acc,
                      "parameters": count_parameters(result.model), "seconds": time.perf_counter() - t0}
        return result

    try:
        if shipped_teacher is None:
            teacher = run("teacher", lambda cb: fit(TrainConfig(arch=s.arch, out=f"{out}/teacher", **common), cb)).model
        else:
            teacher = shipped_teacher
        student_cfg = dict(depth=int(s.depth), temperature=float(s.temperature), **common)
        run("student", lambda cb: distill(TrainConfig(alpha=float(s.alpha), loss="kd", out=f"{out}/student",
                                                      **student_cfg), teacher, cb))
        if s.label_only:
            run("student_label_only", lambda cb: distill(TrainConfig(alpha=1.0, loss="label_only",
                                                                     out=f"{out}/label_only", **student_cfg),
                                                         teacher, cb))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"runs": runs, "settings": s, "test_images": len(test), "seconds": time.perf_counter() - started}
