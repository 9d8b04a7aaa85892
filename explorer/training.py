"""Train-and-distil page helper: the recipe of `core.train` run in a temporary folder, then a quick test.

Everything is written to a fresh temporary directory that is deleted afterwards: the shipped
checkpoints and the app's cached models are never touched (`core.train` distils from a private
copy of the teacher it is given).

The page runs it as a `TrainingJob`: in a child process (`explorer.train_worker`) with one torch thread at a
lower CPU priority, at most ``$KD_APP_TRAINERS`` (default 1) at a time for the whole server, so that one
session's training leaves the other sessions' pages responsive (``benchmarks/training_slowdown.py`` measures by
how much).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from torch import nn

from core.evaluate import evaluate_checkpoints
from core.models import count_parameters
from core.recipe import Stage, TrainConfig, default_stages
from core.roles import role
from core.train import run_stages


def shown_role(stage: Stage) -> str:
    """The key the app shows a stage's model under, its role's shipped file stem: the stage ``label_only_s0`` ->
    ``student_label_only``."""
    return role(stage.model).shipped


def run_key(cfg: TrainConfig, shipped_version: tuple | None) -> str:
    """Everything a training result depends on (the whole recipe, and the shipped teacher it distils, if any)."""
    return json.dumps({"recipe": asdict(cfg), "shipped_teacher": shipped_version}, sort_keys=True, default=str)


def models_trained(cfg: TrainConfig, shipped_teacher: bool) -> int:
    """How many models `run_all` trains for this recipe (no teacher when the shipped one is distilled)."""
    return len(default_stages(cfg, teacher=not shipped_teacher))


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

    stages = default_stages(cfg, teacher=shipped_teacher is None)
    shown = {stage.name: shown_role(stage) for stage in stages}

    def starting(stage: Stage) -> None:
        stage_started[stage.name] = time.perf_counter()
        if on_stage:
            on_stage(shown[stage.name])

    try:
        results = run_stages(cfg, out, stages, teacher=shipped_teacher, on_stage=starting,
                             on_epoch_end=(lambda name, record: on_epoch_end(shown[name], record))
                             if on_epoch_end else None)
        ended = {name: r.history[-1]["seconds"] if r.history else 0.0 for name, r in results.items()}
        test_cap = max(8, int(cfg.max_per_class or 16) // 2)
        report = evaluate_checkpoints({shown[n]: r.path for n, r in results.items()}, n_boot=200,
                                      max_per_class=test_cap)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    runs = {shown[name]: {"history": r.history, "stopped": r.stopped,
                          "test_accuracy": report["models"][shown[name]]["accuracy"],
                          "parameters": count_parameters(r.model), "seconds": ended[name]}
            for name, r in results.items()}
    test_images = int(report["models"][next(iter(runs))]["n"])
    return {"runs": runs, "config": cfg, "test_images": test_images, "seconds": time.perf_counter() - started}


_SLOTS = threading.BoundedSemaphore(max(1, int(os.environ.get("KD_APP_TRAINERS") or 1)))
STDERR_LINES = 20  # the worker's last lines of standard error, for the message when it dies


class TrainingJob:
    """One Train-page run, in a child process, that the page polls.

    Its state is ``queued`` (another run holds the server's training slot), ``running``, then ``done``
    (``result`` is `run_all`'s), ``failed`` (``error`` says why) or ``stopped``. ``histories`` grows by one
    record per epoch, for live curves; ``role`` is the model being trained, ``pid`` the child process's.
    """

    def __init__(self, key: str, cfg: TrainConfig, teacher_path: str | None = None,
                 classes: list[str] | None = None):
        self.key, self.cfg, self.teacher_path, self.classes = key, cfg, teacher_path, classes
        self.state, self.role, self.result, self.error, self.pid = "queued", None, None, None, None
        self.histories: dict[str, list[dict]] = {}
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="kd-train-job", daemon=True)

    def start(self) -> "TrainingJob":
        self._thread.start()
        return self

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "stopped")

    def stop(self) -> None:
        """Stop the run (its child process is ended); the job ends ``stopped``."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the job to finish; returns whether it has."""
        self._thread.join(timeout)
        return self.finished

    def snapshot(self) -> dict[str, list[dict]]:
        """A copy of the curves so far (the job's thread keeps appending)."""
        with self._lock:
            return {role: list(records) for role, records in self.histories.items()}

    def _run(self) -> None:
        with _SLOTS:
            if self._stop.is_set():
                self.state = "stopped"
                return
            read_fd, write_fd = os.pipe()
            spec = json.dumps({"recipe": asdict(self.cfg), "teacher_path": self.teacher_path,
                               "classes": self.classes})
            root = str(Path(__file__).resolve().parents[1])
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
            try:
                process = subprocess.Popen([sys.executable, "-m", "explorer.train_worker", str(write_fd)],
                                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.PIPE, pass_fds=(write_fd,), cwd=root, env=env)
            finally:
                os.close(write_fd)  # the child holds its own copy: end of file once it exits
            self.pid, self.state = process.pid, "running"
            errors: deque[str] = deque(maxlen=STDERR_LINES)
            drain = threading.Thread(target=lambda: errors.extend(line.decode("utf-8", "replace").rstrip()
                                                                  for line in process.stderr), daemon=True)
            drain.start()
            try:
                process.stdin.write(spec.encode("utf-8"))
                process.stdin.close()
                with os.fdopen(read_fd, "r", encoding="utf-8") as messages:
                    self._follow(process, messages, errors)
            finally:
                if process.poll() is None:
                    process.terminate()
                process.wait()
                drain.join(5)

    def _follow(self, process, messages, errors) -> None:
        stopper = threading.Thread(target=self._end_on_stop, args=(process,), daemon=True)
        stopper.start()
        for line in messages:  # one JSON object per line, until the worker closes the pipe
            message = json.loads(line)
            kind = message["kind"]
            if kind == "stage":
                self.role = message["role"]
            elif kind == "epoch":
                with self._lock:
                    self.histories.setdefault(message["role"], []).append(message["record"])
            elif kind == "done":
                self.result, self.state = {**message["result"], "config": self.cfg}, "done"
                return
            else:
                self.error, self.state = message["message"], "failed"
                return
        if self._stop.is_set():
            self.state = "stopped"
            return
        process.wait()
        last = next((line for line in reversed(errors) if line.strip()), "")
        self.error = f"the training process ended unexpectedly (exit code {process.returncode})" + \
            (f": {last}" if last else "")
        self.state = "failed"

    def _end_on_stop(self, process) -> None:
        while process.poll() is None:
            if self._stop.wait(0.2):
                process.terminate()
                return
