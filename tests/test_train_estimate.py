"""The Train page's time estimate: the recipe's steps times a measured step, each model capped at the time cap, with
the measured overheads (`explorer.train_estimate`), on step times made up here; and the page shows it."""

import math

from core.catalog import dataset_status
from core.recipe import TrainConfig
from explorer import train_estimate as te
from tests.apptest_support import fresh_streamlit_caches, open_page  # noqa: F401


def fake_timer(arch, num_classes, size, batch, depth):
    return {"resnet18": 0.5, "student": 0.05}[arch]


def recipe(**kw):
    base = dict(dataset="phantom", teacher_arch="resnet18", teacher_epochs=4, student_epochs=3, max_per_class=40,
                input_size=64, batch_size=32, time_cap_s=None, label_only=True)
    return TrainConfig(**{**base, **kw})


def test_the_estimate_is_the_steps_times_the_step_with_the_overheads():
    cfg = recipe()
    counts = dataset_status("phantom")["counts"]["train"].values()
    images = int(sum(min(n, 40) for n in counts) * (1 - cfg.val_fraction))
    steps = math.ceil(images / 32)
    found = te.estimate(cfg, 4, shipped_teacher=False, timer=fake_timer)
    assert found.steps_per_epoch == steps
    teacher, student = 4 * steps * 0.5 * te.OVERHEAD, 3 * steps * 0.05 * te.OVERHEAD
    assert math.isclose(found.per_model["teacher"], teacher)
    assert math.isclose(found.per_model["student"], student) and math.isclose(found.per_model["student_label_only"],
                                                                             student)
    assert math.isclose(found.seconds, teacher + 2 * student + te.FIXED_S)
    assert "teacher (resnet18) 500 ms, student 50 ms" in found.sentence() and not found.capped


def test_the_time_cap_bounds_each_model_and_is_said():
    found = te.estimate(recipe(time_cap_s=2.0, teacher_epochs=20), 4, shipped_teacher=False, timer=fake_timer)
    assert found.per_model["teacher"] == 2.0 and found.capped == ("teacher",)
    assert "the time cap stops the teacher before its last epoch" in found.sentence()


def test_distilling_the_shipped_teacher_times_only_the_students():
    found = te.estimate(recipe(), 4, shipped_teacher=True, timer=fake_timer)
    assert set(found.per_model) == {"student", "student_label_only"} and list(found.step_seconds) == ["student"]


def test_the_train_page_predicts_before_it_trains():
    at = open_page("train", {"dataset": "phantom"})
    assert not at.exception
    [said] = [c.value for c in at.caption if "Press Train" in c.value]
    assert "Predicted: about" in said and "one training step measured on this server: teacher (resnet18)" in said
