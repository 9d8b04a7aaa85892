"""Hostile command lines: each refused up front with one line and exit 2, or stopped with one line and exit 1.

* ``IMPOSSIBLE_SETTINGS`` / ``IMPOSSIBLE_RECIPES`` / ``RUN_FAILURES``: the training command line and its recipe;
* ``SHIPPING_COMMAND_SETTINGS``: the numbers of the commands that ship work (reproduce, the study, the timing table);
* the reproduction's run failures.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from PIL import Image

from core.catalog import DATASETS
from core.train.cli import main as train_main

ROOT = Path(__file__).resolve().parents[1]
NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------- the training command line

# Settings no run can use: refused before anything is trained or written, not after the teacher has trained.
IMPOSSIBLE_SETTINGS = [
    ("--batch-size", "0"), ("--batch-size", "-3"),
    ("--seeds", "-1"), ("--seeds", str(2**32)), ("--seeds", "0 0"),
    ("--input-size", "100000"), ("--input-size", "8"), ("--input-size", "0"),
    ("--input-size", "24"),  # the default DenseNet-121 teacher pools 24 px to nothing
    ("--lr", "inf"), ("--lr", "nan"), ("--lr", "0"), ("--lr", "-0.1"),
    ("--epochs", "0"), ("--student-epochs", "0"), ("--student-epochs", "-2"),
    ("--threads", "0"), ("--threads", "-1"),
    ("--alpha", "1.5"), ("--alpha", "-0.5"), ("--alpha", "nan"),
    ("--temperature", "0"), ("--temperature", "-4"), ("--temperature", "inf"), ("--temperature", "nan"),
    ("--max-per-class", "0"), ("--patience", "0"), ("--depth", "99"), ("--depth", "2"), ("--pooled-blocks", "-1"),
    ("--attention-beta", "inf"), ("--attention-beta", "-1"),
]


# The same refusals for the recipe itself, which the app's Train page and core.reproduce build too: (setting, value).
IMPOSSIBLE_RECIPES = [
    ("batch_size", 0), ("batch_size", 2.5), ("batch_size", True), ("teacher_epochs", 0), ("student_epochs", -1),
    ("patience", 0), ("teacher_patience", 0), ("views", 0), ("max_per_class", 0), ("threads", 0),
    ("pooled_blocks", -1), ("data_seed", -1), ("data_seed", 2**32), ("seeds", (0, 2**32)), ("seeds", (1, 1)),
    ("input_size", 15), ("input_size", 1025), ("input_size", 24), ("depth", 9),
    ("lr", NAN), ("lr", INF), ("lr", 0.0), ("lr", -1e-3), ("weight_decay", -1e-4), ("weight_decay", NAN),
    ("val_fraction", 0.0), ("val_fraction", 1.0), ("val_fraction", NAN), ("attention_beta", INF),
    ("smoothing_control", 1.0), ("smoothing_control", NAN), ("teacher_label_smoothing", 1.0),
    ("time_cap_s", 0.0), ("time_cap_s", NAN), ("alpha", 1.01), ("alpha", NAN), ("temperature", 0.0),
    ("temperature", INF), ("temperature", NAN), ("loss", "kdd"), ("schedule", "linear"), ("teacher_arch", "vgg"),
]


@pytest.mark.parametrize("setting, value", IMPOSSIBLE_RECIPES, ids=[f"{s}={v!r}" for s, v in IMPOSSIBLE_RECIPES])
def test_the_recipe_refuses_impossible_settings(setting, value):
    from core.recipe import SettingError, TrainConfig

    loss_args = {"alpha": 0.5, "temperature": 4.0}
    kwargs = {"loss_args": {**loss_args, setting: value}} if setting in loss_args else {setting: value}
    with pytest.raises(SettingError) as err:
        TrainConfig(**kwargs)
    assert err.value.setting == setting and str(err.value).startswith(f"{setting}: "), str(err.value)
    assert "\n" not in str(err.value)


def _run_train_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``python -m core.train ARGV`` in this process: its exit code and standard error."""
    with pytest.raises(SystemExit) as stop:
        train_main(argv)
    return stop.value.code, capsys.readouterr().err


@pytest.mark.parametrize("option, value", IMPOSSIBLE_SETTINGS, ids=[f"{o} {v}" for o, v in IMPOSSIBLE_SETTINGS])
def test_training_command_line_refuses_impossible_settings(tmp_path, monkeypatch, capsys, option, value):
    monkeypatch.chdir(tmp_path)  # where the default run folder, runs/phantom, would go
    code, err = _run_train_cli([option, *value.split()], capsys)
    assert code == 2 and "Traceback" not in err, err
    assert err.startswith("usage:") and err.count("error:") == 1, err
    assert err.strip().splitlines()[-1].startswith(f"python -m core.train: error: argument {option}: "), err
    assert list(tmp_path.iterdir()) == []


def _diverging_rate(tmp_path: Path, monkeypatch) -> list[str]:
    return ["--lr", "1e30"]


def _out_is_a_file(tmp_path: Path, monkeypatch) -> list[str]:
    (tmp_path / "taken").write_text("a file, not a folder")
    return ["--out", str(tmp_path / "taken")]


def _out_inside_a_file(tmp_path: Path, monkeypatch) -> list[str]:
    (tmp_path / "taken").write_text("a file, not a folder")
    return ["--out", str(tmp_path / "taken" / "run")]


def _looping_link_in_the_data(tmp_path: Path, monkeypatch) -> list[str]:
    for split in ("train", "test"):
        for name in DATASETS["brain_tumor"].classes:
            folder = tmp_path / "data" / "brain_tumor" / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("L", (24, 24), 40 * i).save(folder / f"{i}.png")
    looping = tmp_path / "data" / "brain_tumor" / "train" / "glioma" / "x.png"
    looping.symlink_to(looping)
    return ["--dataset", "brain_tumor", "--root", str(tmp_path / "data")]


def _full_disk(tmp_path: Path, monkeypatch) -> list[str]:
    def no_space(obj, handle, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)  # the first file a teacher stage writes is its state.pt
    return []


def _missing_teacher(tmp_path: Path, monkeypatch) -> list[str]:
    return ["--stage", "student", "--teacher", str(tmp_path / "no_such_teacher.pt")]


# Runs that cannot go on: (setup returning extra options, exit code, what the error line says).
RUN_FAILURES = [
    (_diverging_rate, 1, "loss became"),
    (_out_is_a_file, 2, "argument --out: cannot write the run folder"),
    (_out_inside_a_file, 2, "argument --out: cannot write the run folder"),
    (_looping_link_in_the_data, 1, "x.png: Too many levels of symbolic links"),
    (_full_disk, 1, "No space left on device"),
    (_missing_teacher, 1, "checkpoint file not found"),
]


@pytest.mark.parametrize("setup, code, says", RUN_FAILURES, ids=[f.__name__.strip("_") for f, _, _ in RUN_FAILURES])
def test_a_training_run_that_cannot_go_on_stops_with_one_line(tmp_path, monkeypatch, capsys, single_thread, setup,
                                                                code, says):
    small = ["--teacher-arch", "resnet18", "--input-size", "32", "--max-per-class", "8", "--batch-size", "16",
             "--epochs", "1", "--depth", "3", "--stage", "teacher", "--no-eval", "--out", str(tmp_path / "run")]
    got, err = _run_train_cli(small + setup(tmp_path, monkeypatch), capsys)
    last = err.strip().splitlines()[-1]
    assert got == code and "Traceback" not in err, err
    assert last.startswith("python -m core.train: error: ") and says in last, err
    assert list(tmp_path.rglob("best.pt")) == [] and list(tmp_path.rglob("*.tmp")) == []


def test_a_full_disk_says_how_to_resume(tmp_path, monkeypatch, capsys, single_thread):
    # python -m core.train without --resume trains a stage afresh: "the same command again" would start over
    argv = ["--teacher-arch", "resnet18", "--input-size", "32", "--max-per-class", "8", "--epochs", "1",
            "--stage", "teacher", "--no-eval", "--out", str(tmp_path / "run")]
    _, err = _run_train_cli(argv + _full_disk(tmp_path, monkeypatch), capsys)
    assert "state.pt" in err and "--resume" in err, err



# --------------------------------------------------------------------------- the shipping commands' numbers

# Counts the reproduction, the faithfulness study and the timing table cannot use (``--images 0`` once meant "all",
# ``--steps 0`` divided by zero): refused by the parser, before any model is loaded or any file written.
SHIPPING_COMMAND_SETTINGS = [
    ("core.reproduce", ["phantom"], "--teacher-epochs", "0"), ("core.reproduce", ["phantom"], "--teacher-epochs", "-2"),
    ("core.reproduce", ["phantom"], "--threads", "0"),
    ("core.faithfulness_study", ["phantom"], "--images", "0"), ("core.faithfulness_study", ["phantom"], "--images", "-5"),
    ("core.faithfulness_study", ["phantom"], "--steps", "0"), ("core.faithfulness_study", ["phantom"], "--steps", "-1"),
    ("core.faithfulness_study", ["phantom"], "--slow-images", "0"),
    ("core.faithfulness_study", ["phantom"], "--sanity-images", "0"),
    ("core.faithfulness_study", ["phantom"], "--threads", "0"), ("core.faithfulness_study", ["phantom"], "--seed", "-1"),
    ("core.bench", [], "--images", "0"), ("core.bench", [], "--repeats", "0"), ("core.bench", [], "--warmup", "-1"),
    ("core.bench", [], "--budget", "-1"), ("core.bench", [], "--budget", "nan"), ("core.bench", [], "--threads", "0"),
    ("core.bench", [], "--input-size", "0"), ("core.bench", [], "--student-depth", "0"),
    ("core.bench", [], "--images", "two"),
]


@pytest.mark.parametrize("module, head, option, value", SHIPPING_COMMAND_SETTINGS,
                         ids=[f"{m.split('.')[1]} {o} {v}" for m, _, o, v in SHIPPING_COMMAND_SETTINGS])
def test_shipping_commands_refuse_impossible_counts(tmp_path, monkeypatch, capsys, module, head, option, value):
    import importlib

    monkeypatch.chdir(tmp_path)  # where their default folders (checkpoints/, runs/) would be written
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path / "checkpoints"))
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main([*head, option, value])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err and err.count("error:") == 1, err
    assert f"error: argument {option}: " in err.strip().splitlines()[-1], err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the reproduction's run failures

def _reproduce_missing_data(tmp_path: Path, monkeypatch) -> list[str]:
    return ["brain_tumor", "--root", str(tmp_path / "no_data")]


def _reproduce_runs_inside_a_file(tmp_path: Path, monkeypatch) -> list[str]:
    (tmp_path / "taken").write_text("a file, not a folder")
    return ["phantom", "--runs", str(tmp_path / "taken" / "runs")]


def _reproduce_full_disk(tmp_path: Path, monkeypatch) -> list[str]:
    def no_space(folder, *args, **kwargs):  # the run's first write is its stage folder
        raise OSError(errno.ENOSPC, "No space left on device", str(folder))

    monkeypatch.setattr(Path, "mkdir", no_space)
    return ["phantom"]


def _reproduce_unreadable_kept_stage(tmp_path: Path, monkeypatch) -> list[str]:
    kept = tmp_path / "kept" / "phantom" / "official"
    kept.mkdir(parents=True)
    (kept / "teacher.json").write_text("{not json")
    (kept / "teacher.pt").write_bytes(b"")
    return ["phantom", "--kept", str(tmp_path / "kept")]


def _reproduce_kept_stage_of_another_recipe(tmp_path: Path, monkeypatch) -> list[str]:
    """A teacher kept by a run of the same recipe at 48 px (this run's smoke budget trains at 32)."""
    from core import checkpoints
    from core.budgets import BUDGETS
    from core.models import build_student
    from core.recipe import Stage
    from core.reproduce import recipe, stage_settings, train_fingerprint
    from core.roles import TEACHER

    cfg = recipe("phantom", BUDGETS["smoke"], tmp_path / "runs")
    made = {k: v for k, v in stage_settings(cfg, Stage.of(TEACHER)).items() if k not in ("role", "loss", "loss_args")}
    meta = checkpoints.CheckpointMeta(arch="student", num_classes=4, classes=list(DATASETS["phantom"].classes),
                                      input_size=48, mean=[0.5] * 3, std=[0.25] * 3, role="teacher", dataset="phantom",
                                      arch_args={"depth": 3}, train={**made, "input_size": 48},
                                      data_fingerprint=train_fingerprint(cfg)(cfg.input_size))
    checkpoints.save(build_student(4, depth=3), meta, tmp_path / "kept" / "phantom" / "official" / "teacher.pt")
    return ["phantom", "--kept", str(tmp_path / "kept")]


def _reproduce_timing_without_checkpoints(tmp_path: Path, monkeypatch) -> list[str]:
    return ["phantom", "--only-timing"]


def _reproduce_impossible_kd(tmp_path: Path, monkeypatch) -> list[str]:
    return ["phantom", "--kd", "1.5", "4"]  # once refused only after the teacher had trained


# Runs of python -m core.reproduce that cannot go on: (setup returning its arguments, exit code, what the error line
# says). Like the training command: one line, no traceback, and the shipped folder untouched.
REPRODUCE_FAILURES = [
    (_reproduce_missing_data, 1, "no_data does not exist"),
    (_reproduce_runs_inside_a_file, 1, "Not a directory"),
    (_reproduce_full_disk, 1, "No space left on device"),
    (_reproduce_unreadable_kept_stage, 1, "teacher.json"),
    (_reproduce_kept_stage_of_another_recipe, 2, "the kept teacher stage is not this recipe's: input_size 48 (this "
                                                 "run: 32)"),
    (_reproduce_timing_without_checkpoints, 1, "python -m core.reproduce phantom"),
    (_reproduce_impossible_kd, 2, "argument --kd: alpha: "),
]


@pytest.mark.parametrize("setup, code, says", REPRODUCE_FAILURES,
                         ids=[f.__name__.removeprefix("_reproduce_") for f, _, _ in REPRODUCE_FAILURES])
def test_a_reproduction_that_cannot_go_on_stops_with_one_line(tmp_path, monkeypatch, capsys, single_thread, setup,
                                                               code, says):
    from core.reproduce import main as reproduce_main

    monkeypatch.chdir(tmp_path)
    shipped = tmp_path / "checkpoints"
    monkeypatch.setenv("KD_CHECKPOINTS", str(shipped))
    argv = setup(tmp_path, monkeypatch) + ["--budget", "smoke", "--no-timing", "--out", str(shipped)]
    if "--runs" not in argv:
        argv += ["--runs", str(tmp_path / "runs")]
    if "--only-timing" in argv:
        argv.remove("--no-timing")
    with pytest.raises(SystemExit) as stop:
        reproduce_main(argv)
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert stop.value.code == code and "Traceback" not in err, err
    assert last.startswith("python -m core.reproduce: error: ") and says in last, err
    assert not shipped.exists() and list(tmp_path.rglob("best.pt")) == []
