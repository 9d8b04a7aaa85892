"""Train-and-distil page helper: the recipe of `core.train` run in a temporary folder, then a quick test.

Everything is written to a fresh temporary directory that is deleted afterwards, however the run ends (done,
failed, stopped, its worker killed; a killed server's, by the next run): the shipped checkpoints and the app's cached
models are never touched (`core.train` distils from a private copy of the teacher it is given).

The page runs it as a `TrainingJob`: in a child process (`explorer.train_worker`) with one torch thread at a
lower CPU priority, at most ``$KD_APP_TRAINERS`` (default 1) at a time for the whole server, so that one
session's training leaves the other sessions' pages responsive (``benchmarks/training_slowdown.py`` measures by
how much).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
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

from core.catalog import get_info
from core.evaluate import evaluate_checkpoints
from core.layout import dataset_folder
from core.models import count_parameters
from core.recipe import Stage, TrainConfig, default_stages
from core.roles import DISTILLED, LABEL_ONLY, TEACHER, role
from core.shipping import has_shipped_checkpoints, ship_models
from core.train import run_stages
from explorer.runtime import ServerSlots, count_setting


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
            on_stage: Callable[[str], None] | None = None, out: str | None = None) -> dict:
    """Run the recipe (teacher unless ``shipped_teacher`` is given, distilled and label-only students)
    and evaluate each model on a capped, class-balanced test subset.

    Args:
        cfg: the recipe with the page's caps (seeds ``(0,)``; ``resume`` is irrelevant in a fresh folder).
        shipped_teacher: a loaded teacher to distil from instead of training one (never modified).
        on_epoch_end: ``(role, epoch record)`` after every epoch, for live curves.
        on_stage: called with the role when a model starts training.
        out: the run folder, made and removed by the caller (`TrainingJob`'s process, which outlives a killed
            worker); without it, a temporary folder of its own, removed at the end.

    Returns:
        ``{"runs": {role: {"history", "stopped", "test_accuracy", "parameters", "seconds"}}, "test_images",
        "seconds", "config"}``.
    """
    own_folder = out is None
    out = new_run_folder() if own_folder else out
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
        kept = keep_for_user_dataset(cfg, {shown[n]: r.path for n, r in results.items()})
    finally:
        if own_folder:
            shutil.rmtree(out, ignore_errors=True)
    runs = {shown[name]: {"history": r.history, "stopped": r.stopped,
                          "test_accuracy": report["models"][shown[name]]["accuracy"],
                          "parameters": count_parameters(r.model), "seconds": ended[name]}
            for name, r in results.items()}
    test_images = int(report["models"][next(iter(runs))]["n"])
    return {"runs": runs, "config": cfg, "test_images": test_images, "seconds": time.perf_counter() - started,
            "kept": kept}


def keep_for_user_dataset(cfg: TrainConfig, paths: dict[str, Path]) -> str:
    """A user's dataset trained here with no models yet: its models go where the app finds them (a new dataset
    replaces nothing, `core.shipping`); what happened, as a sentence ("" for a built-in dataset)."""
    if not get_info(cfg.dataset, cfg.root).user:
        return ""
    target = dataset_folder(cfg.dataset)
    if has_shipped_checkpoints(target):
        return (f"{cfg.dataset} already had models; they were kept, and these were not (the command line replaces "
                f"them: python -m core.train --data DIR --force).")
    ship_models({r: paths[r.shipped] for r in (TEACHER, DISTILLED, LABEL_ONLY) if r.shipped in paths}, target)
    return f"Kept: these are now {cfg.dataset}'s models, on every page."


# ---------------------------------------------------------------------------------------------- run folders
# A run folder is ``<temporary folder>/kd-explorer-train-<pid>-<random>``, <pid> the process that made it and
# removes it (the server; a killed worker cannot clean up after itself). A server that dies (kill -9, a crash)
# leaves its folders behind: the next run started on the machine removes them.

RUN_PREFIX = "kd-explorer-train-"
_OWNED = re.compile(re.escape(RUN_PREFIX) + r"(?P<pid>\d+)-[^/]+$")
_EARLIER = re.compile(re.escape(RUN_PREFIX) + r"[a-z0-9_]{8}$")  # an earlier version's folders: no owner named
EARLIER_STALE_S = 86400.0  # a page run takes minutes; such a folder untouched for a day is no live run's


def new_run_folder() -> str:
    """A fresh run folder owned by this process."""
    return tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's process
        return True
    except (ProcessLookupError, OverflowError):  # none, or a number no process can have
        return False
    return True


def _last_touched(folder: Path) -> float:
    return max((p.stat().st_mtime for p in [folder, *folder.rglob("*")]), default=0.0)


def remove_dead_runs(where: str | None = None) -> list[str]:
    """Remove the run folders whose owner process is gone (and an earlier version's, once stale); their names."""
    removed = []
    for folder in sorted(Path(where or tempfile.gettempdir()).glob(f"{RUN_PREFIX}*")):
        try:
            if folder.is_symlink() or not folder.is_dir():
                continue
            owned = _OWNED.match(folder.name)
            if owned:
                dead = not _process_alive(int(owned["pid"]))
            else:
                dead = bool(_EARLIER.match(folder.name)) and time.time() - _last_touched(folder) > EARLIER_STALE_S
        except OSError:  # it went away meanwhile, or cannot be read: not ours to judge
            continue
        if dead:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def write_failure_message(where: str, reason: str) -> str:
    """The page's message for a run whose files could not be written in the temporary folder ``where`` (a full
    disk, a quota): its run folder is gone, so it cannot be resumed, only run again once there is room."""
    return (f"could not write the run's files in {where}: {reason}. Nothing was kept (the run's "
            "temporary folder is removed); free space there, or start the app with TMPDIR set to a folder on a disk "
            "with room, and press Train again")


# ---------------------------------------------------------------------------------------------- the job

# The server's training runs: at most $KD_APP_TRAINERS at once, the others waiting their turn in the order they asked
# (the same queue as the slow explanations', `explorer.runtime.ServerSlots`).
TRAINING_RUNS = ServerSlots(count_setting("KD_APP_TRAINERS", 1))
WORKER = [sys.executable, "-m", "explorer.train_worker"]  # + the message pipe's descriptor
POLL_S = 0.2  # how often a job looks at its stop button and its session
STDERR_LINES = 20  # the worker's last lines of standard error, for the message when it dies
STDERR_LINE_CHARS = 2000  # of each (a progress bar redrawn in place is one very long line)
ERROR_CHARS = 300  # of the line the page shows
# A progress bar's redraw: "decoding phantom train:  40%|####      | 4/10 [00:01<00:01, 3.9img/s]" or "5it [00:01, ...]"
_PROGRESS_BAR = re.compile(r"\d%\||\[(\d+:)?\d+:\d\d[<,\]]")


def last_error_line(lines) -> str:
    """The worker's last line of standard error that says something: not blank, not a progress bar."""
    for line in reversed(list(lines)):
        for part in reversed(line.split("\r")):
            part = part.strip()
            if part and not _PROGRESS_BAR.search(part):
                return part if len(part) <= ERROR_CHARS else part[:ERROR_CHARS - 3] + "..."
    return ""


def exit_message(returncode: int, errors) -> str:
    """Why a worker that sent no result ended: its exit, and its last error line."""
    if returncode < 0:
        try:
            how = f"was killed (signal {signal.Signals(-returncode).name})"
        except ValueError:
            how = f"was killed (signal {-returncode})"
    else:
        how = f"ended unexpectedly (exit code {returncode})"
    last = last_error_line(errors)
    return f"the training process {how}" + (f": {last}" if last else "")


class _LeftTheLine(Exception):
    """A queued run stopped before its turn came."""


class TrainingJob:
    """One Train-page run, in a child process, that the page polls.

    Its state is ``queued`` (other runs hold the server's training slots; ``ahead`` says how many runs are before
    it: running, or asked earlier), ``running``, then ``done``
    (``result`` is `run_all`'s), ``failed`` (``error`` says why) or ``stopped``: by `stop`, or because its session
    is gone for good (``alive``, asked while it waits and while it runs, said no), so that a closed tab's run
    neither starts nor keeps the slot. ``histories`` grows by one record per epoch, for live curves;
    ``role`` is the model being trained, ``pid`` the child process's. The run folder is removed however the run
    ends; the state is set last, once the process has ended and its folder is gone.
    """

    def __init__(self, key: str, cfg: TrainConfig, teacher_path: str | None = None,
                 classes: list[str] | None = None, alive: Callable[[], bool] | None = None):
        self.key, self.cfg, self.teacher_path, self.classes = key, cfg, teacher_path, classes
        self.state, self.role, self.result, self.error, self.pid = "queued", None, None, None, None
        self.ahead: int | None = None  # runs before it in the server's line, while it waits (None: not yet asked)
        self.histories: dict[str, list[dict]] = {}
        self._alive = alive
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

    def _ended(self) -> bool:
        """Whether the run is to end: stopped, or its session gone (then it is stopped)."""
        if not self._stop.is_set() and self._alive is not None:
            try:
                gone = not self._alive()
            except Exception:  # a question about the session that fails is no reason to end a run
                gone = False
            if gone:
                self._stop.set()
        return self._stop.is_set()

    def _run(self) -> None:
        try:
            with TRAINING_RUNS.held(self._waiting, POLL_S):
                self.ahead = 0
                if self._ended():
                    state = "stopped"
                else:
                    state, self.result, self.error = self._in_run_folder()
        except _LeftTheLine:
            state = "stopped"
        except Exception as err:  # a failed run must not leave the page waiting
            state, self.error = "failed", f"{type(err).__name__}: {err}"
        self.state = state  # last: its slot, or its place in the line, is already given up

    def _waiting(self, ahead: int) -> None:
        """Called while the run waits for a slot: the runs ahead of it, for the page; a run stopped, or whose
        session is gone, leaves the line."""
        self.ahead = ahead
        if self._ended():
            raise _LeftTheLine

    def _in_run_folder(self) -> tuple[str, dict | None, str | None]:
        remove_dead_runs()
        try:
            folder = new_run_folder()
        except OSError as err:
            return "failed", None, write_failure_message(tempfile.gettempdir(), err.strerror or str(err))
        try:
            return self._in_process(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _in_process(self, folder: str) -> tuple[str, dict | None, str | None]:
        read_fd, write_fd = os.pipe()
        spec = json.dumps({"recipe": asdict(self.cfg), "teacher_path": self.teacher_path,
                           "classes": self.classes, "out": folder})
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            process = subprocess.Popen([*WORKER, str(write_fd)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, pass_fds=(write_fd,), cwd=root, env=env)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the child holds its own copy: end of file once it exits
        self.pid, self.state = process.pid, "running"
        errors: deque[str] = deque(maxlen=STDERR_LINES)
        drain = threading.Thread(target=lambda: errors.extend(line[-STDERR_LINE_CHARS:].decode("utf-8", "replace")
                                                              for line in process.stderr), daemon=True)
        drain.start()
        stopper = threading.Thread(target=self._end_on_stop, args=(process,), daemon=True)
        stopper.start()
        try:
            try:
                process.stdin.write(spec.encode("utf-8"))
                process.stdin.close()
            except OSError:  # it died before reading its recipe: its exit and error output say why
                pass
            with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as messages:
                outcome = self._follow(messages, folder)
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait()
            drain.join(5)
        if outcome is not None:
            return outcome
        if self._stop.is_set():
            return "stopped", None, None
        return "failed", None, exit_message(process.returncode, errors)

    def _follow(self, messages, folder: str) -> tuple[str, dict | None, str | None] | None:
        """Read the worker's messages until its result, its error or the end of the pipe (None)."""
        for line in messages:  # one JSON object per line, until the worker closes the pipe
            try:
                message = json.loads(line)
                kind = message["kind"]
            except (ValueError, TypeError, KeyError):  # cut short by its death: its exit says why
                return None
            if kind == "stage":
                self.role = message["role"]
            elif kind == "epoch":
                with self._lock:
                    self.histories.setdefault(message["role"], []).append(message["record"])
            elif kind == "done":
                return "done", {**message["result"], "config": self.cfg}, None
            elif message.get("write_failure"):
                return "failed", None, write_failure_message(str(Path(folder).parent), message["write_failure"])
            else:
                return "failed", None, message["message"]
        return None

    def _end_on_stop(self, process) -> None:
        while process.poll() is None:
            if self._ended():
                process.terminate()
                return
            time.sleep(POLL_S)
