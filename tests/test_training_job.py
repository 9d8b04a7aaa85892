"""The Train page's background job: a child process at a lower priority with one torch thread, one at a time
for the server, that can be stopped and that reports a failure instead of leaving the page waiting."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from core.recipe import TrainConfig, default_stages
from explorer import train_worker, training
from explorer.training import TrainingJob


def tiny(epochs: int = 1, cap: float = 20.0) -> TrainConfig:
    return TrainConfig(dataset="phantom", teacher_arch="resnet18", teacher_epochs=epochs, student_epochs=epochs,
                       max_per_class=8, input_size=32, depth=3, time_cap_s=cap, label_only=False)


def test_a_job_trains_in_a_child_process_at_a_lower_priority_with_one_thread():
    job = TrainingJob("k", tiny()).start()
    assert job.wait(600), job.state
    assert job.state == "done", job.error
    worker = job.result["worker"]
    assert worker["pid"] == job.pid and worker["pid"] != os.getpid()
    assert worker["threads"] == 1
    assert worker["niceness"] >= min(19, os.nice(0) + train_worker.WORKER_NICENESS)
    assert set(job.result["runs"]) == {"teacher", "student"}
    # the live curves the page drew are the ones the finished run reports
    assert job.snapshot() == {role: run["history"] for role, run in job.result["runs"].items()}


def another_sessions_run() -> contextlib.ExitStack:
    """Another session's run holding the server's only training slot until the stack is closed."""
    other = contextlib.ExitStack()
    other.enter_context(training.TRAINING_RUNS.held())
    return other


def test_a_job_waits_for_the_servers_training_slot_and_can_be_stopped_while_it_waits():
    other = another_sessions_run()
    try:
        job = TrainingJob("k", tiny()).start()
        assert not job.wait(1.0)
        assert job.state == "queued" and job.pid is None
        job.stop()
    finally:
        other.close()
    assert job.wait(60) and job.state == "stopped"
    assert job.pid is None, "a stopped job that never ran started a process"


def test_stopping_a_running_job_ends_its_process():
    job = TrainingJob("k", tiny(epochs=20, cap=300)).start()
    while not job.snapshot() and not job.finished:  # running, first epoch done
        job.wait(0.2)
    assert job.state == "running", job.error
    job.stop()
    assert job.wait(60) and job.state == "stopped"
    with pytest.raises(ProcessLookupError):
        os.kill(job.pid, 0)


def test_a_teacher_that_cannot_be_loaded_fails_the_job_with_its_reason(tmp_path):
    broken = tmp_path / "teacher.pt"
    broken.write_bytes(b"not a checkpoint")
    job = TrainingJob("k", tiny(), str(broken), ["a", "b"]).start()
    assert job.wait(600)
    assert job.state == "failed" and job.result is None
    assert str(tmp_path / "teacher") in job.error, job.error  # the message names the file at fault


@pytest.mark.parametrize("label_only, shipped, expected", [(True, False, 3), (True, True, 2), (False, False, 2),
                                                           (False, True, 1)])
def test_the_page_states_how_many_models_a_run_trains(label_only, shipped, expected):
    # teacher (unless the shipped one is distilled), the distilled student, and the label-only one if asked
    cfg = TrainConfig(dataset="phantom", label_only=label_only)
    assert training.models_trained(cfg, shipped) == expected


def test_each_stage_is_shown_under_its_shipped_models_key():
    cfg = TrainConfig(dataset="phantom", seeds=(0,))
    assert [training.shown_role(s) for s in default_stages(cfg)] == ["teacher", "student", "student_label_only"]


# --------------------------------------------------------------------------- hostile workers (no real training)
# A fake worker speaks the real worker's protocol (spec on standard input, JSON lines on the file descriptor it is
# given): it writes a file into the run folder the page made for it, then (once any error output is written) says
# it trains the teacher, and ends as the case says. Each case is one line: how it ends, and what the job must report.

FAKE_START = """
import json, os, signal, sys, time
out = os.fdopen(int(sys.argv[1]), "w", buffering=1)
spec = json.loads(sys.stdin.read())
with open(os.path.join(spec["out"], "partial.bin"), "wb") as handle:
    handle.write(bytes(1 << 20))
"""
STAGE = "out.write(json.dumps({'kind': 'stage', 'role': 'teacher'}) + '\\n')\n"
BAR = "\\rdecoding phantom train: {i}0%|#{i}| {i}/9 [00:0{i}<00:09,  1.00img/s]"
SLEEPS = STAGE + "time.sleep(600)\n"
BAR_THEN_SLEEP = f"for i in range(10):\n    sys.stderr.write(f'{BAR}')\nsys.stderr.flush()\n{SLEEPS}"
ERROR_BAR_KILLED = ("sys.stderr.write('Traceback (most recent call last):\\nRuntimeError: the real reason\\n')\n"
                    f"for i in range(10):\n    sys.stderr.write(f'{BAR}')\nsys.stderr.flush()\n"
                    "os.kill(os.getpid(), signal.SIGKILL)\n")
HALF_MESSAGE = "out.write('{\"kind\": \"epo'); out.flush(); os._exit(3)\n"


@pytest.fixture
def run_folders(tmp_path, monkeypatch):
    """The system's temporary folder, for these tests ``tmp_path``: where the page makes its run folders."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def fake_worker(monkeypatch, body: str) -> None:
    monkeypatch.setattr(training, "WORKER", [sys.executable, "-c", FAKE_START + body])


def left(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(training.RUN_PREFIX))


def training_started(job: TrainingJob, limit_s: float = 120) -> None:
    """Wait until the fake worker has written into its run folder and said so."""
    deadline = time.monotonic() + limit_s
    while job.role is None and not job.finished and time.monotonic() < deadline:
        job.wait(0.1)
    assert job.state == "running" and job.role == "teacher", (job.state, job.error)


def kill(job: TrainingJob) -> None:
    os.kill(job.pid, signal.SIGKILL)


# how the run is ended from outside (None: the worker ends by itself), and what the job then says
ENDINGS = [
    ("stop", SLEEPS, TrainingJob.stop, "stopped", None),
    ("kill -9 after a progress bar", BAR_THEN_SLEEP, kill, "failed",
     "the training process was killed (signal SIGKILL)"),
    ("error line, progress bar, killed", ERROR_BAR_KILLED, None, "failed",
     "the training process was killed (signal SIGKILL): RuntimeError: the real reason"),
    ("half a message, then exit", STAGE + HALF_MESSAGE, None, "failed", "the training process ended unexpectedly (exit code 3)"),
]


@pytest.mark.parametrize("body, end, state, error", [e[1:] for e in ENDINGS], ids=[e[0] for e in ENDINGS])
def test_a_run_that_is_stopped_or_dies_leaves_no_folder_and_says_why(run_folders, monkeypatch, body, end, state,
                                                                      error):
    fake_worker(monkeypatch, body)
    job = TrainingJob("k", tiny()).start()
    try:
        if end is not None:
            training_started(job)
            assert [p.parent.name for p in run_folders.glob("*/partial.bin")] == left(run_folders) != []
            end(job)
        assert job.wait(60), job.state
    finally:
        job.stop()
    assert (job.state, job.error) == (state, error)
    assert left(run_folders) == [], "the run folder was left behind"
    with pytest.raises(ProcessLookupError):
        os.kill(job.pid, 0)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def aged(folder, days: float):
    then = time.time() - days * 86400
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (then, then))
    return folder


def test_the_next_start_removes_what_dead_servers_left_and_nothing_else(run_folders, monkeypatch):
    def made(name: str, days: float = 0.0):
        folder = run_folders / name
        (folder / "teacher").mkdir(parents=True)
        (folder / "teacher" / "state.pt").write_bytes(bytes(1024))
        return aged(folder, days)

    made(f"{training.RUN_PREFIX}{dead_pid()}-k2j4x8_q")  # its server was killed (kill -9, a crash)
    made(f"{training.RUN_PREFIX}abcd1234", days=2)  # left by an earlier version of the app, untouched for two days
    kept = [made(f"{training.RUN_PREFIX}1-a1b2c3d4", days=2).name,  # a live process's run (pid 1 is alive)
            made(f"{training.RUN_PREFIX}efgh5678").name,  # an earlier version's run, written to just now
            made("kd-explorer-other").name]
    (run_folders / f"{training.RUN_PREFIX}99999999-file").write_text("not a folder: not ours")
    kept.append(f"{training.RUN_PREFIX}99999999-file")
    fake_worker(monkeypatch, STAGE)
    job = TrainingJob("k", tiny()).start()
    assert job.wait(60) and job.state == "failed", job.state
    assert sorted(p.name for p in run_folders.iterdir()) == sorted(kept)


class Session:
    """A browser tab's session as the job sees it: there until gone for good."""

    def __init__(self):
        self.connected = True

    def __call__(self) -> bool:
        return self.connected


def test_a_queued_run_whose_session_is_gone_never_starts(run_folders, monkeypatch):
    fake_worker(monkeypatch, SLEEPS)
    session = Session()
    other = another_sessions_run()
    try:
        job = TrainingJob("k", tiny(), alive=session).start()
        assert not job.wait(1.5) and job.state == "queued", "a queued run of a live session was dropped"
        session.connected = False  # the tab is closed
        assert job.wait(30), job.state
    finally:
        other.close()
    assert job.state == "stopped" and job.pid is None, "a run of a closed session started"
    assert left(run_folders) == []
    assert training.TRAINING_RUNS.ahead() == 0, "the job kept the server's training slot or its place in line"


def wait_for(condition, limit_s: float = 30) -> bool:
    deadline = time.monotonic() + limit_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_queued_runs_start_in_the_order_they_asked_and_know_how_many_runs_are_ahead(run_folders, monkeypatch):
    fake_worker(monkeypatch, SLEEPS)
    other, jobs = another_sessions_run(), []
    try:
        for place in (1, 2, 3):  # each asks once the one before it is in line
            jobs.append(TrainingJob(f"k{place}", tiny()).start())
            assert wait_for(lambda: jobs[-1].ahead == place), (place, jobs[-1].ahead)
        assert [job.state for job in jobs] == ["queued"] * 3
    finally:
        other.close()
    try:
        for n, job in enumerate(jobs):
            training_started(job)
            waiting = jobs[n + 1:]
            assert all(wait_for(lambda: w.ahead == place) for place, w in enumerate(waiting, start=1))
            assert [w.state for w in waiting] == ["queued"] * len(waiting) and all(w.pid is None for w in waiting)
            job.stop()
            assert job.wait(60) and job.state == "stopped"
    finally:
        for job in jobs:
            job.stop()
    assert all(job.wait(60) for job in jobs) and training.TRAINING_RUNS.ahead() == 0


def test_a_running_job_whose_session_is_gone_ends_its_process_and_folder(run_folders, monkeypatch):
    fake_worker(monkeypatch, SLEEPS)
    session = Session()
    job = TrainingJob("k", tiny(), alive=session).start()
    try:
        training_started(job)
        session.connected = False
        assert job.wait(60), job.state
    finally:
        job.stop()
    assert job.state == "stopped"
    assert left(run_folders) == []
    with pytest.raises(ProcessLookupError):
        os.kill(job.pid, 0)
