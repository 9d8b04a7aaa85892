"""Train-and-distil page on phantom: tiny runs finish fast, show curves and results, touch no shipped model."""

import hashlib
import sys
import tempfile

import pytest
import torch

from core.layout import checkpoint_root
from explorer import loaders, train_view, training
from tests.apptest_support import (as_read, assert_ok, finish_training, fresh_streamlit_caches,  # noqa: F401
                                   has_chart, open_page, texts)
from tests.test_training_job import another_sessions_run


def digest_checkpoints() -> dict[str, str]:
    folder = checkpoint_root()
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def small_settings(at) -> None:
    at.slider(key="train_epochs").set_value(2)
    at.slider(key="train_per_class").set_value(8)
    at.slider(key="train_cap").set_value(20)
    at.select_slider(key="train_size").set_value(32)


def test_training_a_teacher_and_two_students_reports_all_three():
    before = digest_checkpoints()
    at = open_page("train")
    assert_ok(at)
    assert at.selectbox(key="train_arch").value == "resnet18"
    small_settings(at)
    at.button(key="train_run").click().run()
    assert_ok(at)
    assert at.button(key="train_run").disabled, "a second run could start while the first one trains"
    assert "Training runs in its own process" in texts(at)
    finish_training(at)
    assert_ok(at)
    assert not at.button(key="train_run").disabled
    labels = [m.label for m in at.metric]
    assert labels == ["Teacher test accuracy", "Student (distilled) test accuracy",
                      "Student (labels only) test accuracy"]
    # 8 training images per class cap the test subset at max(8, 8 // 2) = 8 per class: 32 images, so every
    # accuracy shown is a multiple of 1/32
    assert "Results on 32 test images" in texts(at)
    for metric in at.metric:
        hits = float(metric.value.rstrip("%")) / 100 * 32
        assert abs(hits - round(hits)) < 0.03, metric.value
    assert has_chart(at, "train_curves")
    assert "2 of 2 epochs" in texts(at)  # each model ran all its planned epochs (a cut one says "cut short")
    assert digest_checkpoints() == before, "training wrote into the checkpoint folder"


def test_distilling_the_shipped_teacher_leaves_the_cached_model_unchanged():
    at = open_page("train")
    teacher = loaders.load_model("phantom", "teacher")
    state = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    at.radio(key="train_source").set_value("distil the shipped teacher").run()
    at.slider(key="train_epochs").set_value(1)
    at.slider(key="train_per_class").set_value(8)
    at.checkbox(key="train_label_only").set_value(False)
    at.button(key="train_run").click().run()
    finish_training(at)
    assert_ok(at)
    assert [m.label for m in at.metric] == ["Student (distilled) test accuracy"]
    assert loaders.load_model("phantom", "teacher") is teacher
    assert not teacher.model.training
    assert all(torch.equal(v, state[k]) for k, v in teacher.model.state_dict().items())


def test_stopping_a_run_from_the_page_ends_it_without_results(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the page makes its run folder
    at = open_page("train")
    at.slider(key="train_epochs").set_value(20)
    at.slider(key="train_cap").set_value(300)
    at.button(key="train_run").click().run()
    job = at.session_state["_train_job"]
    while job.pid is None and not job.finished:  # the process starts in a run folder made for it
        job.wait(0.1)
    assert len(list(tmp_path.iterdir())) == 1, job.state
    at.button(key="train_stop").click().run()
    assert job.wait(60) and job.state == "stopped"
    at.run()
    assert_ok(at)
    assert not at.metric and not at.button(key="train_run").disabled
    assert "Press Train" in texts(at)
    assert [i.value for i in at.info if i.value.startswith("Stopped")], "the stop is said, with what was kept"
    assert list(tmp_path.iterdir()) == [], "the stopped run's folder was left behind"


# --------------------------------------------------------------------------- hostile runs (a fake worker, no training)

# The real worker with `run_all` replaced by a run whose first state write finds the disk full, the way
# `core.train_state` writes it (with the command line's resume hint).
DISK_FULL_WORKER = """
import errno, sys
from pathlib import Path
from core import checkpoints, train_state
from explorer import train_worker, training

def disk_full(cfg, shipped_teacher=None, on_epoch_end=None, on_stage=None, out=None):
    def write(handle):
        raise OSError(errno.ENOSPC, "No space left on device")
    checkpoints.atomic_write_bytes(Path(out) / "teacher" / "state.pt", write, resume_hint=train_state.RESUME_HINT)

training.run_all = disk_full
sys.exit(train_worker.main())
"""


def run_folders_in(folder, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(folder))


def test_a_full_disk_says_what_to_do_on_the_page_and_leaves_no_folder(tmp_path, monkeypatch):
    run_folders_in(tmp_path, monkeypatch)
    monkeypatch.setattr(training, "WORKER", [sys.executable, "-c", DISK_FULL_WORKER])
    at = open_page("train")
    small_settings(at)
    at.button(key="train_run").click().run()
    finish_training(at)
    assert not at.exception, [e.value for e in at.exception]
    [error] = [as_read(e.value) for e in at.error]
    assert "No space left on device" in error and str(tmp_path) in error and "press Train again" in error, error
    # the run folder is gone: nothing to resume, no command line on this page
    assert "same command" not in error and "--resume" not in error and "intact" not in error, error
    assert list(tmp_path.iterdir()) == []
    assert not at.button(key="train_run").disabled


@pytest.mark.parametrize("connected", [True, False], ids=["open tab", "closed tab"])
def test_a_queued_run_starts_only_while_its_session_is_there(tmp_path, monkeypatch, connected):
    run_folders_in(tmp_path, monkeypatch)
    monkeypatch.setattr(training, "WORKER", [sys.executable, "-c", "import time; time.sleep(600)"])
    monkeypatch.setattr(train_view, "reconnect_window_s", lambda: 0.0)
    seen = []
    monkeypatch.setattr(train_view, "session_connected", lambda session: seen.append(session) or connected)
    started, start = [], training.TrainingJob.start

    def recorded(job):  # a closed tab's job may end, and leave the page's state, before the test looks there
        started.append(job)
        return start(job)

    monkeypatch.setattr(training.TrainingJob, "start", recorded)
    at = open_page("train")
    other = another_sessions_run()
    try:
        at.button(key="train_run").click().run()
        [job] = started
        job.wait(1.5)
        assert seen and all(session for session in seen), "the job does not ask about its own session"
        assert job.state == ("queued" if connected else "stopped"), job.state
        if connected:  # the page says how many runs are ahead of it
            assert "1 run ahead of yours" in train_view.describe(job), train_view.describe(job)
    finally:
        other.close()
    try:
        if connected:
            while job.pid is None and not job.finished:  # it takes the freed slot
                job.wait(0.1)
            assert job.state == "running" and job.pid is not None
    finally:
        job.stop()
    assert job.wait(60) and job.state == "stopped"
    assert (job.pid is None) != connected, "a run of a closed tab started its process"
    assert list(tmp_path.iterdir()) == []


def test_a_disconnected_session_is_there_until_the_server_gives_up_its_reconnect(monkeypatch):
    connected, window = [True], [3600.0]
    monkeypatch.setattr(train_view, "session_connected", lambda session: connected[0])
    monkeypatch.setattr(train_view, "reconnect_window_s", lambda: window[0])
    session = train_view.SessionWatch("a session")
    assert session()
    connected[0] = False  # a network blip: the server keeps the session for a reconnect
    assert session()
    window[0] = 0.0  # the server no longer keeps it: the tab is gone for good
    assert not session()
    connected[0] = True
    assert session()


def test_outside_a_server_the_caller_is_the_session():
    assert train_view.session_connected("no such session")
