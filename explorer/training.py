"""Train-and-distil page helper: the recipe of `core.train` run in a temporary folder, then a quick test.

Everything is written to a fresh temporary directory that is deleted afterwards: the shipped
checkpoints and the app's cached models are never touched (`core.train` distils from a private
copy of the teacher it is given).

The page runs it as a `TrainingJob`: in a child process with one torch thread at a lower CPU priority,
at most ``$KD_APP_TRAINERS`` (default 1) at a time for the whole server, so that one session's training
leaves the other sessions' pages responsive (``benchmarks/train_worker.py`` measures by how much).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import asdict
from typing import Callable

from torch import nn

from core import checkpoints
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


WORKER_NICENESS = 10  # added to the server's: the pages' own work is scheduled first
_SLOTS = threading.BoundedSemaphore(max(1, int(os.environ.get("KD_APP_TRAINERS") or 1)))


def _work(cfg: TrainConfig, teacher_path: str | None, classes: list[str] | None, out: "queue.Queue") -> None:
    """The child process: run `run_all` and send ``(kind, ...)`` messages (stage, epoch, done or error)."""
    import torch

    os.nice(WORKER_NICENESS)
    torch.set_num_threads(1)
    try:
        teacher = checkpoints.load(teacher_path, expected_classes=classes)[0].eval() if teacher_path else None
        result = run_all(cfg, teacher, lambda role, record: out.put(("epoch", role, record)),
                         lambda role: out.put(("stage", role)))
        result["worker"] = {"pid": os.getpid(), "niceness": os.nice(0), "threads": torch.get_num_threads()}
        out.put(("done", result))
    except Exception as err:  # the page shows it; a failed run must not leave the session waiting
        message = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
        out.put(("error", message))


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
        self.started = time.perf_counter()
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
            context = multiprocessing.get_context("spawn")  # never fork a server that runs threads
            messages = context.Queue()
            process = context.Process(target=_work, args=(self.cfg, self.teacher_path, self.classes, messages),
                                      name="kd-train-worker", daemon=True)
            process.start()
            self.pid, self.state = process.pid, "running"
            try:
                self._follow(process, messages)
            finally:
                if process.is_alive():
                    process.terminate()
                process.join()
                messages.close()

    def _follow(self, process, messages) -> None:
        while True:
            try:
                kind, *payload = messages.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    self.state = "stopped"
                    return
                if not process.is_alive() and messages.empty():
                    self.error = f"the training process ended unexpectedly (exit code {process.exitcode})"
                    self.state = "failed"
                    return
                continue
            if kind == "stage":
                self.role = payload[0]
            elif kind == "epoch":
                with self._lock:
                    self.histories.setdefault(payload[0], []).append(payload[1])
            elif kind == "done":
                self.result, self.state = payload[0], "done"
                return
            else:
                self.error, self.state = payload[0], "failed"
                return
