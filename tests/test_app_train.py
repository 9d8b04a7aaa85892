"""Train-and-distil page on phantom: tiny runs finish fast, show curves and results, touch no shipped model."""

import hashlib

import torch

from core.layout import checkpoint_root
from explorer import loaders
from tests.apptest_support import (assert_ok, finish_training, fresh_streamlit_caches, has_chart,  # noqa: F401
                                   open_page, texts)


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
    assert "2 epochs" in texts(at)
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


def test_stopping_a_run_from_the_page_ends_it_without_results():
    at = open_page("train")
    at.slider(key="train_epochs").set_value(20)
    at.slider(key="train_cap").set_value(300)
    at.button(key="train_run").click().run()
    job = at.session_state["_train_job"]
    at.button(key="train_stop").click().run()
    assert job.wait(60) and job.state == "stopped"
    at.run()
    assert_ok(at)
    assert not at.metric and not at.button(key="train_run").disabled
    assert "Press Train" in texts(at)
