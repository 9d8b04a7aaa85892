"""The Train page's background job: a child process at a lower priority with one torch thread, one at a time
for the server, that can be stopped and that reports a failure instead of leaving the page waiting."""

from __future__ import annotations

import os

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


def test_a_job_waits_for_the_servers_training_slot_and_can_be_stopped_while_it_waits():
    training._SLOTS.acquire()  # another session's run holds the only slot
    try:
        job = TrainingJob("k", tiny()).start()
        assert not job.wait(1.0)
        assert job.state == "queued" and job.pid is None
        job.stop()
    finally:
        training._SLOTS.release()
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
