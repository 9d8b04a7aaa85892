"""Training on several processes (``torchrun``): shards, identical weights on every rank, rank 0's checkpoints, resume."""

import os
import subprocess
import sys

import pytest
import torch

from core import checkpoints, distributed
from core.augment import state_fingerprint
from core.recipe import Stage, TrainConfig
from core.train import RANK_DIGESTS_ENV, train_stage

pytestmark = pytest.mark.usefixtures("single_thread")

TEACHER_RUN = ["--dataset", "phantom", "--teacher-arch", "resnet18", "--stage", "teacher", "--epochs", "1",
               "--input-size", "32", "--max-per-class", "12", "--batch-size", "8", "--threads", "1", "--no-eval"]


def torchrun(out, *extra) -> subprocess.CompletedProcess:
    """``core.train`` on 2 CPU processes (gloo), each writing the digest of its final weights."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", RANK_DIGESTS_ENV: "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               "-m", "core.train", *TEACHER_RUN, "--out", str(out), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_shards_of_two_ranks_are_disjoint_and_cover_the_order():
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    first, second = distributed.shard(order, 0, 2), distributed.shard(order, 1, 2)
    assert len(first) == len(second) == 5 and not set(first.tolist()) & set(second.tolist())
    assert sorted(first.tolist() + second.tolist()) == list(range(10))
    odd = order[:9]  # padded with its first item, as DistributedSampler does: equal steps on both ranks
    first, second = distributed.shard(odd, 0, 2), distributed.shard(odd, 1, 2)
    assert len(first) == len(second) == 5 and set(first.tolist()) | set(second.tolist()) == set(odd.tolist())
    assert second[-1] == odd[0]
    with pytest.raises(ValueError, match="rank 2"):
        distributed.shard(order, 2, 2)


@pytest.mark.parametrize("balance", [False, True])
def test_every_rank_draws_the_same_epoch_order_and_takes_its_share(monkeypatch, balance):
    targets = torch.tensor([0] * 60 + [1] * 6 + [2] * 2)
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        torch.manual_seed(rank)  # the global random state may differ between ranks; the order may not
        shares.append(distributed.epoch_order(targets, balance, seed=3, epoch=1))
    whole = distributed.sample_order(targets, balance, torch.Generator().manual_seed(distributed.derived_seed(3, 1)))
    assert torch.equal(torch.stack(shares, 1).flatten(), whole)  # rank r holds items r, r + 2, ...
    if not balance:
        assert sorted(whole.tolist()) == list(range(len(targets)))
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    assert not torch.equal(distributed.epoch_order(targets, balance, 3, 2), shares[0])  # a new order each epoch


def test_one_process_records_world_size_one(tmp_path):
    cfg = TrainConfig(dataset="phantom", input_size=32, max_per_class=12, batch_size=16, depth=3, student_epochs=1)
    result = train_stage(cfg, Stage("label_only_s0", "student", 0, "label_only"), tmp_path / "s")
    assert result.meta.train["world_size"] == 1 and checkpoints.load_meta(result.path).train["world_size"] == 1
    assert torch.load(tmp_path / "s" / "state.pt", weights_only=True)["settings"]["world_size"] == 1


def test_torchrun_two_processes_train_identical_weights_rank_zero_saves_and_resume_reuses(tmp_path):
    done = torchrun(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (done.stderr + done.stdout).count("teacher epoch 1:") == 1  # rank 0 logs, the other rank is quiet
    run = tmp_path / "teacher"
    digests = [(run / f"rank{r}.sha256").read_text().strip() for r in (0, 1)]
    model, meta = checkpoints.load(run / "best.pt")
    assert digests[0] == digests[1] == state_fingerprint(model)  # every rank ended with the weights rank 0 saved
    assert meta.train["world_size"] == 2 and len(meta.train["history"]) == 1
    assert meta.train["train_images"] == 48 and meta.train["batch_size"] == 8
    assert not list(run.glob(".*.tmp"))

    stamps = {name: (run / name).stat().st_mtime_ns for name in ("best.pt", "best.json", "state.pt")}
    for r in (0, 1):
        (run / f"rank{r}.sha256").unlink()
    again = torchrun(tmp_path, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {name: (run / name).stat().st_mtime_ns for name in stamps} == stamps  # nothing trained or rewritten
    assert not list(run.glob("rank*.sha256")) and "teacher epoch" not in again.stderr + again.stdout
