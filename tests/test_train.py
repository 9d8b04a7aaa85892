"""Training, distillation, resume and the CLI on the built-in phantom dataset."""

import subprocess
import sys

import pytest
import torch

from core import checkpoints
from core.evaluate import evaluate_checkpoints
from core.train import TrainConfig, distill, fit

SMALL = dict(dataset="phantom", input_size=32, max_per_class=30, batch_size=32, threads=2)


def test_short_training_run_beats_chance_clearly(tmp_path):
    torch.manual_seed(0)
    seen = []
    cfg = TrainConfig(dataset="phantom", role="student", depth=4, epochs=8, loss="label_only", alpha=1.0,
                      out=str(tmp_path / "s"), threads=2, patience=8)
    teacher_stand_in = torch.nn.Identity()  # unused by the label-only loss
    result = distill(cfg, teacher_stand_in, on_epoch_end=seen.append)
    assert [r["epoch"] for r in seen] == list(range(1, len(seen) + 1))
    report = evaluate_checkpoints({"student": tmp_path / "s" / "best.pt"}, n_boot=50)["models"]["student"]
    assert report["accuracy"] > 0.55, report["accuracy"]  # chance is 0.25
    assert result.meta.kd["loss"] == "label_only" and result.meta.role == "student"


def test_distillation_caches_teacher_logits_once(tmp_path):
    teacher = fit(TrainConfig(arch="resnet18", epochs=1, out=str(tmp_path / "t"), **SMALL)).model
    cache = tmp_path / "logits.pt"
    cfg = dict(epochs=1, alpha=0.5, temperature=4.0, teacher_logits=str(cache), depth=3, **SMALL)
    distill(TrainConfig(out=str(tmp_path / "s1"), **cfg), teacher)
    first = torch.load(cache, weights_only=True)
    assert first["logits"].shape == (120, 2, 4)  # every image and its mirror image
    stamp = cache.stat().st_mtime_ns
    distill(TrainConfig(out=str(tmp_path / "s2"), **cfg), teacher)
    assert cache.stat().st_mtime_ns == stamp  # reused, not recomputed
    assert not teacher.training and all(p.requires_grad for p in teacher.parameters())  # caller's model untouched


def test_attention_transfer_runs_with_teacher_on_the_fly(tmp_path):
    teacher = fit(TrainConfig(arch="resnet18", epochs=1, out=str(tmp_path / "t"), **SMALL)).model
    result = distill(TrainConfig(out=str(tmp_path / "s"), epochs=1, depth=4, attention_beta=100.0, **SMALL), teacher)
    assert result.meta.kd["attention_beta"] == 100.0 and result.history[0]["train_loss"] > 0


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    cfg = dict(role="student", loss="label_only", alpha=1.0, depth=3, epochs=3, patience=9,
               out=str(tmp_path / "run"), **SMALL)

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        distill(TrainConfig(**cfg), torch.nn.Identity(), on_epoch_end=stop_after_two)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 2  # epochs counted from 0
    resumed = distill(TrainConfig(resume=True, **cfg), torch.nn.Identity())
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == state["history"]
    model, meta = checkpoints.load(tmp_path / "run" / "best.pt")
    assert meta.train["history"] == resumed.history and meta.input_size == 32


def test_time_cap_stops_early(tmp_path):
    result = distill(TrainConfig(role="student", loss="label_only", alpha=1.0, depth=3, epochs=5, time_cap_s=1e-9,
                                 out=str(tmp_path / "cap"), **SMALL), torch.nn.Identity())
    assert len(result.history) == 1 and "time cap" in result.stopped


@pytest.mark.parametrize("module", ["core.train", "core.evaluate", "core.reproduce", "core.fetch"])
def test_cli_help(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage" in out.stdout.lower() and "--" in out.stdout
