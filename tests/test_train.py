"""The one training recipe: the loop, resume, early stopping, teacher logits, hooks, the CLI."""

import dataclasses
import subprocess
import sys

import pytest
import torch
from torch import nn

import core.stage_setup
import core.train
import core.train.cli
from core import checkpoints, distributed
from core.augment import augmented_views, teacher_logits_table
from core.evaluate import evaluate_checkpoints
from core.inference import to_model_input
from core.models import build_student
from core.recipe import Stage, TrainConfig, default_stages, epoch_size
from core.train import run_stages, train_stage

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = dict(dataset="phantom", input_size=32, max_per_class=30, batch_size=32, teacher_arch="resnet18")
LABEL_ONLY = Stage("label_only_s0", "student", 0, "label_only")


def kd_stage(alpha=0.5, temperature=4.0, name="student_s0", seed=0):
    return Stage(name, "student", seed, "kd", {"alpha": alpha, "temperature": temperature})


@pytest.fixture(scope="module")
def small_teacher(tmp_path_factory):
    """A resnet18 teacher trained for one epoch on 120 phantom images (shared by the tests of this module)."""
    torch.set_num_threads(1)
    cfg = TrainConfig(teacher_epochs=1, **SMALL)
    return run_stages(cfg, tmp_path_factory.mktemp("teacher"), [Stage("teacher", "teacher")])["teacher"].model


def test_short_training_run_beats_chance_clearly(tmp_path):
    seen = []
    cfg = TrainConfig(dataset="phantom", depth=4, student_epochs=8, patience=8)
    result = train_stage(cfg, LABEL_ONLY, tmp_path / "s", on_epoch_end=seen.append)
    assert [r["epoch"] for r in seen] == list(range(1, len(seen) + 1))
    report = evaluate_checkpoints({"student": tmp_path / "s" / "best.pt"}, n_boot=50)["models"]["student"]
    assert report["accuracy"] > 0.55, report["accuracy"]  # chance is 0.25
    assert result.meta.kd["loss"] == "label_only" and result.meta.role == "student"


def test_distillation_caches_teacher_logits_once(tmp_path, small_teacher):
    cache = tmp_path / "logits.pt"
    cfg = TrainConfig(student_epochs=1, depth=3, teacher_logits=str(cache), **SMALL)
    train_stage(cfg, kd_stage(), tmp_path / "s1", small_teacher)
    first = torch.load(cache, weights_only=True)
    assert first["logits"].shape == (120, 4, 4)  # every view (image, mirror, 2 jittered) of every image
    stamp = cache.stat().st_mtime_ns
    train_stage(cfg, kd_stage(), tmp_path / "s2", small_teacher)
    assert cache.stat().st_mtime_ns == stamp  # reused, not recomputed
    assert not small_teacher.training and all(p.requires_grad for p in small_teacher.parameters())


def test_cached_logits_of_a_mirrored_image_are_the_mirror_images_row(small_teacher):
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = [0.4, 0.4, 0.4], [0.2, 0.2, 0.2]
    views = augmented_views(images, 3, seed=0)
    assert torch.equal(views[:, 0], images) and torch.equal(views[:, 1], images.flip(-1))
    assert torch.equal(views, augmented_views(images, 3, seed=0))  # a seed gives the same views
    table = teacher_logits_table(small_teacher, views, mean, std)
    with torch.no_grad():
        plain = small_teacher(to_model_input(images, mean, std))
        mirrored = small_teacher(to_model_input(images.flip(-1), mean, std))
        jittered = small_teacher(to_model_input(views[:, 2], mean, std))
    assert torch.allclose(table[:, 0], plain, atol=1e-5) and torch.allclose(table[:, 1], mirrored, atol=1e-5)
    assert torch.allclose(table[:, 2], jittered, atol=1e-5)
    assert not torch.allclose(plain, mirrored, atol=1e-3)  # the flip matters for these images


def spy_student_inputs(monkeypatch) -> list:
    """Record every training batch the students built by core.train see."""
    seen = []

    def spying_student(num_classes, **kwargs):
        model = build_student(num_classes, **kwargs)
        model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()) if m.training else None)
        return model

    monkeypatch.setattr(core.stage_setup, "build_student", spying_student)
    return seen


def test_both_arms_of_a_seed_see_the_same_augmented_images_in_the_same_order(tmp_path, small_teacher,
                                                                              monkeypatch):
    seen = spy_student_inputs(monkeypatch)
    cfg = TrainConfig(student_epochs=2, depth=3, **SMALL)
    train_stage(cfg, LABEL_ONLY, tmp_path / "lo")
    label_only, seen[:] = list(seen), []
    train_stage(cfg, kd_stage(), tmp_path / "kd", small_teacher)
    assert len(seen) == len(label_only) == 8  # 2 epochs of 4 batches
    assert all(torch.equal(a, b) for a, b in zip(seen, label_only))
    seen.clear()
    train_stage(cfg, Stage("label_only_s1", "student", 1, "label_only"), tmp_path / "lo1")
    assert not torch.equal(seen[0], label_only[0])  # another seed, another order
    meta = checkpoints.load_meta(tmp_path / "kd" / "best.pt")
    assert "4 fixed views" in meta.train["augmentation"] and meta.train["loss"] == {"kd": {"alpha": 0.5,
                                                                                           "temperature": 4.0}}


def test_kd_step_uses_the_teacher_logits_of_the_image_the_student_sees(tmp_path, small_teacher, monkeypatch):
    seen_inputs, seen_teacher = spy_student_inputs(monkeypatch), []
    real_build_loss = core.stage_setup.build_loss

    def spying_loss(spec):
        loss = real_build_loss(spec)
        original = loss.__call__

        class Spy(type(loss)):
            def __call__(self, batch):
                seen_teacher.append(batch.teacher_logits.detach().clone())
                return original(batch)

        loss.__class__ = Spy
        return loss

    monkeypatch.setattr(core.stage_setup, "build_loss", spying_loss)
    cfg = TrainConfig(student_epochs=1, depth=3, **SMALL)
    train_stage(cfg, kd_stage(), tmp_path / "s", small_teacher)
    assert len(seen_inputs) == len(seen_teacher) == 4  # 120 images in batches of 32
    with torch.no_grad():
        for x, logits in zip(seen_inputs, seen_teacher):
            assert torch.allclose(small_teacher(x), logits, atol=1e-4)


def test_kd_and_label_only_from_one_seed_differ_and_alpha_one_is_label_only(tmp_path, small_teacher):
    cfg = TrainConfig(student_epochs=1, depth=3, **SMALL)
    label_only = train_stage(cfg, LABEL_ONLY, tmp_path / "lo").model.state_dict()
    kd = train_stage(cfg, kd_stage(alpha=0.5), tmp_path / "kd", small_teacher).model.state_dict()
    hard = train_stage(cfg, kd_stage(alpha=1.0), tmp_path / "kd1", small_teacher).model.state_dict()
    assert any(not torch.equal(label_only[k], kd[k]) for k in label_only)
    assert all(torch.equal(label_only[k], hard[k]) for k in label_only)


def test_early_stopping_keeps_the_best_validation_weights(tmp_path, monkeypatch):
    scripted = iter([1.0, 0.5, 0.9, 0.95, 0.97])
    snapshots = []

    def scripted_val_loss(model, images, targets, mean, std):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted), 0.0

    monkeypatch.setattr(core.train, "evaluate_loss", scripted_val_loss)
    cfg = TrainConfig(student_epochs=5, depth=3, patience=2, **SMALL)
    result = train_stage(cfg, LABEL_ONLY, tmp_path / "s")
    assert len(result.history) == 4 and "early stop" in result.stopped  # epochs 3 and 4 did not improve
    saved, _ = checkpoints.load(tmp_path / "s" / "best.pt")
    best = snapshots[1]
    assert all(torch.equal(best[k], v) for k, v in saved.state_dict().items())
    assert any(not torch.equal(snapshots[-1][k], v) for k, v in saved.state_dict().items())


def test_a_one_cycle_student_runs_its_whole_schedule(tmp_path, monkeypatch):
    # Under one-cycle the rate peaks mid-run, where validation loss is at its noisiest; stopping there keeps
    # the first epoch's weights (phantom seeds ended at chance that way). Only the annealed end is worth keeping.
    scripted = iter([1.0, 2.0, 2.5, 2.4, 0.8])
    monkeypatch.setattr(core.train, "evaluate_loss", lambda *args: (next(scripted), 0.0))
    cfg = TrainConfig(student_epochs=5, depth=3, patience=2, schedule="onecycle", **SMALL)
    result = train_stage(cfg, LABEL_ONLY, tmp_path / "s")
    assert len(result.history) == 5 and not result.stopped
    assert result.meta.train["best_val_loss"] == 0.8


@pytest.mark.parametrize("beta", [0.0, 100.0])
def test_hooks_are_registered_only_for_attention_transfer(tmp_path, small_teacher, monkeypatch, beta):
    registered = []
    real = nn.Module.register_forward_hook

    def counting(self, *args, **kwargs):
        registered.append(type(self).__name__)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "register_forward_hook", counting)
    cfg = TrainConfig(student_epochs=1, depth=4, attention_beta=beta, **SMALL)
    result = train_stage(cfg, kd_stage(), tmp_path / "s", small_teacher)
    if beta == 0:
        assert registered == []
    else:
        assert len(registered) > 0 and result.meta.kd["attention_beta"] == beta
        assert result.history[0]["train_loss"] > 0


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_where_it_stopped_and_refuses_other_settings(tmp_path):
    cfg = TrainConfig(depth=3, student_epochs=3, patience=9, **SMALL)

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_stage(cfg, LABEL_ONLY, tmp_path / "run", on_epoch_end=stop_after_two)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 2  # epochs counted from 0
    # a state written before the pooling could be chosen: it was made with the default
    del state["settings"]["pooled_blocks"]
    torch.save(state, tmp_path / "run" / "state.pt")
    for changed in (dict(lr=1e-3), dict(input_size=48), dict(student_epochs=4), dict(pooled_blocks=2)):
        with pytest.raises(ValueError, match="other settings"):
            train_stage(TrainConfig(**{**cfg.__dict__, **changed}), LABEL_ONLY, tmp_path / "run")
    with pytest.raises(ValueError, match="seed"):
        train_stage(cfg, Stage("label_only_s0", "student", 1, "label_only"), tmp_path / "run")
    resumed = train_stage(cfg, LABEL_ONLY, tmp_path / "run")
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == state["history"]
    assert resumed.history[2]["seconds"] >= state["history"][1]["seconds"]  # time adds up over the stop
    model, meta = checkpoints.load(tmp_path / "run" / "best.pt")
    assert meta.train["history"] == resumed.history and meta.input_size == 32


def test_a_student_with_fewer_pooled_blocks_is_trained_saved_and_loaded_as_such(tmp_path):
    cfg = TrainConfig(depth=3, pooled_blocks=1, student_epochs=1, **SMALL)
    train_stage(cfg, LABEL_ONLY, tmp_path / "run")
    model, meta = checkpoints.load(tmp_path / "run" / "best.pt")
    assert meta.arch_args == {"depth": 3, "pooled": 1}
    _, maps = model.forward_intermediates(torch.zeros(1, 3, 32, 32))
    assert maps["block3"].shape[-1] == 8  # 32 px: the stride-2 first block, one pooling
    with pytest.raises(ValueError, match="pooled_blocks"):
        TrainConfig(depth=3, pooled_blocks=-1)


@pytest.mark.parametrize("batch_size", [16, 512], ids=["training_loss", "validation_loss"])
def test_a_diverging_stage_stops_without_a_best_checkpoint(tmp_path, batch_size):
    # batches of 512: one step per epoch, so the training loss is that of the weights before the step that broke
    # them, and only the validation loss shows it
    cfg = TrainConfig(depth=3, student_epochs=3, lr=1e30, **{**SMALL, "batch_size": batch_size})
    with pytest.raises(core.train.NonFiniteLoss, match="loss became (nan|inf) in epoch 1") as err:
        train_stage(cfg, LABEL_ONLY, tmp_path / "run")
    assert "learning rate" in str(err.value)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []


def test_a_stage_that_diverges_later_keeps_the_state_of_its_last_finite_epoch(tmp_path, monkeypatch):
    scripted = iter([1.0, float("nan")])
    monkeypatch.setattr(core.train, "evaluate_loss", lambda *args: (next(scripted), 0.5))
    cfg = TrainConfig(depth=3, student_epochs=3, **SMALL)
    with pytest.raises(core.train.NonFiniteLoss, match="validation loss became nan in epoch 2"):
        train_stage(cfg, LABEL_ONLY, tmp_path / "run")
    assert not (tmp_path / "run" / "best.pt").exists()
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert [r["val_loss"] for r in state["history"]] == [1.0]


def test_time_cap_stops_early(tmp_path):
    cfg = TrainConfig(depth=3, student_epochs=5, time_cap_s=1e-9, **SMALL)
    result = train_stage(cfg, LABEL_ONLY, tmp_path / "cap")
    assert len(result.history) == 1 and "time cap" in result.stopped


def test_run_stages_trains_the_recipe_and_reuses_finished_stages(tmp_path, monkeypatch):
    cfg = TrainConfig(teacher_epochs=1, student_epochs=1, depth=3, seeds=(0, 1), **SMALL)
    assert [s.name for s in default_stages(cfg)] == ["teacher", "student_s0", "label_only_s0", "student_s1",
                                                     "label_only_s1"]
    started = []
    first = run_stages(cfg, tmp_path, on_stage=lambda stage: started.append(stage.name),
                       on_epoch_end=lambda name, record: started.append((name, record["epoch"])))
    assert started[:2] == ["teacher", ("teacher", 1)] and len(first) == 5
    assert first["student_s1"].meta.seed == 1 and first["student_s1"].meta.kd["alpha"] == 0.5
    trained = []
    monkeypatch.setattr(core.train, "train_stage", lambda *a, **k: trained.append(a) or None)
    again = run_stages(cfg, tmp_path)
    assert trained == [] and set(again) == set(first)
    assert all(torch.equal(again[n].model.state_dict()[k], first[n].model.state_dict()[k])
               for n in first for k in first[n].model.state_dict())


def test_unknown_or_misspelt_loss_settings_fail_before_training():
    with pytest.raises(ValueError, match="temprature"):
        TrainConfig(loss_args={"alpha": 0.5, "temprature": 4.0})
    with pytest.raises(ValueError, match="unknown loss"):
        TrainConfig(loss="kdd")
    with pytest.raises(ValueError, match="alpha"):
        TrainConfig(loss_args={"alpha": 1.5})


@pytest.mark.parametrize("module", ["core.train", "core.evaluate", "core.reproduce", "core.fetch"])
def test_cli_help(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage" in out.stdout.lower() and "--" in out.stdout


# Options that set a TrainConfig field, by the field's name.
RECIPE_OPTIONS = {"dataset", "root", "protocol", "val_carve", "input_size", "max_per_class", "batch_size", "lr",
                  "teacher_arch", "teacher_epochs", "depth", "pooled_blocks", "student_epochs", "patience",
                  "attention_beta", "label_only", "seeds", "resume", "threads", "loss"}


def test_the_command_lines_defaults_are_the_recipes_but_baseline_and_resume():
    args = core.train.cli.build_parser().parse_args([])
    parsed, recipe = vars(args), TrainConfig()
    assert {name for name in parsed if hasattr(recipe, name)} == RECIPE_OPTIONS
    # the README has the label-only student added with --baseline and a run folder continued with --resume
    assert parsed["label_only"] is False and parsed["resume"] is False
    assert recipe.label_only is True and recipe.resume is True
    same = RECIPE_OPTIONS - {"label_only", "resume"}
    assert {name: parsed[name] for name in same} == {name: getattr(recipe, name) for name in same}
    assert {"alpha": parsed["alpha"], "temperature": parsed["temperature"]} == recipe.loss_args
    assert core.train.cli.config_from_args(args) == TrainConfig(label_only=False, resume=False)


def test_the_command_line_follows_the_recipe_when_its_defaults_change(monkeypatch):
    # a default typed into the parser would keep its old value here
    other = {"dataset": "brain_tumor", "root": "elsewhere", "protocol": "pooled", "input_size": 48, "max_per_class": 7,
             "batch_size": 5, "lr": 0.25, "teacher_arch": "resnet18", "teacher_epochs": 3, "depth": 7,
             "pooled_blocks": 2, "student_epochs": 9, "patience": 11, "attention_beta": 2.5, "seeds": (3, 4),
             "threads": 3, "loss": "dist", "loss_args": {"temperature": 2.0}, "val_carve": "scan_ends"}
    assert set(other) == RECIPE_OPTIONS - {"label_only", "resume"} | {"loss_args"}
    assert all(getattr(TrainConfig(), name) != value for name, value in other.items())
    shifted = dataclasses.make_dataclass(
        "ShiftedConfig", [(name, object, dataclasses.field(default_factory=lambda v=value: v))
                          for name, value in other.items()], bases=(TrainConfig,))
    monkeypatch.setattr(core.train.cli, "TrainConfig", shifted)
    cfg = core.train.cli.config_from_args(core.train.cli.build_parser().parse_args([]))
    assert {name: getattr(cfg, name) for name in other} == other


def test_the_command_lines_flag_pairs_set_the_recipe():
    parser = core.train.cli.build_parser()
    on = core.train.cli.config_from_args(parser.parse_args(["--baseline", "--resume", "--epochs", "3", "--seeds", "1", "2",
                                                        "--alpha", "0.3", "--temperature", "8"]))
    assert on.label_only and on.resume and on.teacher_epochs == 3 and on.seeds == (1, 2)
    assert on.loss_args == {"alpha": 0.3, "temperature": 8.0}
    off = core.train.cli.config_from_args(parser.parse_args(["--no-baseline", "--no-resume"]))
    assert not off.label_only and not off.resume
    assert [s.name for s in default_stages(on)] == ["teacher", "student_s1", "label_only_s1", "student_s2",
                                                    "label_only_s2"]
    assert [s.name for s in default_stages(off)] == ["teacher", "student_s0"]
    assert "--no-baseline" in parser.format_help() and "--no-resume" in parser.format_help()


def test_cli_trains_and_evaluates_the_recipe(tmp_path):
    out = subprocess.run([sys.executable, "-m", "core.train", "--dataset", "phantom", "--teacher-arch", "resnet18",
                          "--epochs", "1", "--student-epochs", "1", "--input-size", "32", "--max-per-class", "12",
                          "--depth", "3", "--baseline", "--threads", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert {"teacher", "student_s0", "label_only_s0"} <= {p.name for p in tmp_path.iterdir()}
    assert "student_s0 vs teacher" in out.stdout and "label_only_s0 vs teacher" in out.stdout


def test_progressive_sizes_grow_from_half_to_full_and_stay():
    sizes = [epoch_size(128, e, 20, True) for e in range(20)]
    assert sizes[0] == 64 and sizes[-1] == 128 and sizes == sorted(sizes)
    assert all(s % 16 == 0 for s in sizes) and sizes[12:] == [128] * 8  # full size from 60% of the epochs on
    assert [epoch_size(128, e, 20, False) for e in range(3)] == [128] * 3


def test_teacher_recipe_progressive_onecycle_smoothing_runs_and_resumes(tmp_path):
    cfg = TrainConfig(teacher_epochs=3, progressive=True, schedule="onecycle", teacher_label_smoothing=0.1,
                      **{**SMALL, "input_size": 48})

    def stop_after_one(record):
        if record["epoch"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_stage(cfg, Stage("teacher", "teacher"), tmp_path / "t", on_epoch_end=stop_after_one)
    # a change to the student alone leaves the teacher's run as it was: it resumes
    student_only = TrainConfig(**{**cfg.__dict__, "pooled_blocks": 2, "depth": 4})
    result = train_stage(student_only, Stage("teacher", "teacher"), tmp_path / "t")
    assert [r["input_size"] for r in result.history] == [32, 48, 48]
    lrs = [r["lr"] for r in result.history]
    assert lrs[-1] < 0.01 * cfg.lr and max(lrs) <= cfg.lr  # one cycle ends near zero
    assert result.meta.train["loss"] == {"label_smoothing": {"smoothing": 0.1}} and result.meta.input_size == 48
    assert "on the fly" in result.meta.train["augmentation"]


def test_class_balanced_order_draws_classes_about_equally():
    targets = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    torch.manual_seed(0)
    drawn = torch.bincount(targets[distributed.sample_order(targets, True)], minlength=3)
    assert drawn.sum() == 1000 and drawn.min() > 250  # about a third each instead of 90% / 9% / 1%
    assert torch.equal(torch.sort(distributed.sample_order(targets, False)).values, torch.arange(1000))


def test_a_stage_removes_the_temporary_file_a_killed_state_write_left(tmp_path):
    import os
    import time

    out = tmp_path / "run"
    out.mkdir()
    stale, fresh = out / ".state.pt.abcd1234.tmp", out / ".state.pt.wxyz5678.tmp"
    stale.write_bytes(b"x" * 1000), fresh.write_bytes(b"y")
    old = time.time() - 3600
    os.utime(stale, (old, old))  # a leftover from an hour ago; a fresh one may belong to a live writer
    cfg = TrainConfig(depth=3, student_epochs=1, **SMALL)
    train_stage(cfg, LABEL_ONLY, out)
    assert not stale.exists() and fresh.exists()


def test_a_last_batch_of_one_image_joins_the_batch_before_it():
    assert core.train.batch_bounds(25, 8) == [(0, 8), (8, 16), (16, 25)]
    assert core.train.batch_bounds(24, 8) == [(0, 8), (8, 16), (16, 24)]
    assert core.train.batch_bounds(26, 8) == [(0, 8), (8, 16), (16, 24), (24, 26)]
    assert core.train.batch_bounds(1, 8) == [(0, 1)]
    covered = [i for a, b in core.train.batch_bounds(33, 4) for i in range(a, b)]
    assert covered == list(range(33))


def test_the_command_line_takes_any_distillation_loss_with_its_settings(capsys):
    parser = core.train.cli.build_parser()
    cfg = core.train.cli.config_from_args(parser.parse_args(["--loss", "dkd", "--loss-arg", "beta=2", "--temperature",
                                                             "3"]))
    assert cfg.loss == "dkd" and cfg.loss_args == {"temperature": 3.0, "beta": 2.0}
    assert cfg.loss_spec() == {"dkd": {"temperature": 3.0, "beta": 2.0}}
    assert "label_only" not in core.train.cli.distillation_losses()
    assert {"kd", "dkd", "dist"} <= set(core.train.cli.distillation_losses())
    for argv, says in ((["--loss", "dkd", "--loss-arg", "gamma=1"], "has no argument"),
                       (["--loss", "dist", "--loss-arg", "beta=-1"], "at least 0"),
                       (["--loss-arg", "beta"], "must be NAME=NUMBER"), (["--loss-arg", "beta=inf"], "NAME=NUMBER"),
                       (["--loss", "label_only"], "invalid choice")):
        with pytest.raises(SystemExit) as exit_:
            core.train.cli.main(argv + ["--out", "/nonexistent-never-written"])
        assert exit_.value.code == 2
        assert says in capsys.readouterr().err.strip().splitlines()[-1]
