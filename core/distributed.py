"""Several training processes (``torchrun``): the process group, who this process is, and each rank's share.

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; `init` joins the group it describes (backend
nccl when CUDA is available, gloo on CPU). Without ``torchrun`` (no ``WORLD_SIZE``, or 1) nothing is
started and every helper answers for a single process: rank 0 of 1, `barrier` and `all_sum` do nothing,
`shard` returns the whole order. Nothing here imports from the rest of ``core``.
"""

from __future__ import annotations

import hashlib
import math
import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["launched_world_size", "init", "shutdown", "active", "rank", "world_size", "is_main", "device",
           "barrier", "all_sum", "all_max", "broadcast_buffers", "wrap", "shard", "derived_seed"]


def launched_world_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init() -> bool:
    """Join the process group ``torchrun`` describes; True when several processes train together.

    With CUDA each process uses the GPU of its ``LOCAL_RANK`` (backend nccl), else the CPU (gloo).
    """
    if launched_world_size() <= 1 or active():
        return active()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def shutdown() -> None:
    """Leave the process group (nothing without one)."""
    if active():
        dist.destroy_process_group()


def active() -> bool:
    """Whether this process belongs to a process group (`init`, or a caller's own)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes files shared by all."""
    return rank() == 0


def device() -> torch.device:
    """Where this process trains: its GPU under nccl, else the CPU (a single process always trains on the CPU)."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every process got here (e.g. rank 0 finished writing a file the others read)."""
    if not active():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def _all_reduce(values: list[float], op) -> list[float]:
    if not active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device())
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sums over every process: the same numbers on every rank."""
    return _all_reduce(values, dist.ReduceOp.SUM)


def all_max(values: list[float]) -> list[float]:
    """Element-wise maxima over every process: the same numbers on every rank."""
    return _all_reduce(values, dist.ReduceOp.MAX)


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm statistics) to every rank.

    DistributedDataParallel averages gradients, so weights agree, but each rank's last forward pass
    updates its own running statistics; after this, validation and the saved state are the same everywhere.
    """
    if active():
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def wrap(model: nn.Module) -> nn.Module:
    """The module to train through: DistributedDataParallel around ``model`` in a group, else ``model`` itself.

    Keep using ``model`` for state dicts, evaluation and saving: its parameter names have no ``module.`` prefix.
    """
    if not active():
        return model
    on_gpu = device().type == "cuda"
    return nn.parallel.DistributedDataParallel(model, device_ids=[device()] if on_gpu else None)


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """One rank's share of an epoch's sample order, as `torch.utils.data.DistributedSampler` deals it.

    The order is padded with its own first items to a multiple of ``world_size``, then rank ``r`` takes
    items ``r, r + world_size, ...``: every rank gets ``ceil(len(order) / world_size)`` items (the same
    number of steps everywhere, so no rank waits for a gradient that never comes), and together they
    cover the order.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of 0..{world_size - 1}")
    total = math.ceil(len(order) / world_size) * world_size
    repeats = math.ceil(total / max(len(order), 1))
    padded = order.repeat(repeats)[:total] if len(order) else order
    return padded[rank:total:world_size]


def derived_seed(*parts: int) -> int:
    """A seed for ``torch.manual_seed`` made from several integers (seed, epoch, rank), unrelated for any two."""
    digest = hashlib.sha256(":".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_order(targets: torch.Tensor, balance: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """One epoch's sample order: a permutation, or draws with weights 1 / class count (with replacement)."""
    if not balance:
        return torch.randperm(len(targets), generator=generator)
    counts = torch.bincount(targets)
    return torch.multinomial(1.0 / counts[targets].double(), len(targets), replacement=True, generator=generator)


def epoch_order(targets: torch.Tensor, balance: bool, seed: int, epoch: int) -> torch.Tensor:
    """This process's sample order for one epoch (0-based).

    One process draws it from the global random state (saved with the state, so a resumed run goes
    on as the interrupted one would have). Several processes draw the full order from a generator
    seeded by (seed, epoch), the same on every rank as with `torch.utils.data.DistributedSampler`,
    and each takes its `shard`; class-balanced draws are sharded the same way.
    """
    if not active():
        return sample_order(targets, balance)
    generator = torch.Generator().manual_seed(derived_seed(seed, epoch))
    return shard(sample_order(targets, balance, generator), rank(), world_size())


def seed_epoch_draws(seed: int, epoch: int) -> None:
    """With several processes, seed this rank's augmentation and view draws of one epoch by (seed, epoch, rank):
    ranks draw differently from each other, and a resumed epoch draws as it would have without the stop."""
    if active():
        torch.manual_seed(derived_seed(seed, epoch, rank()))
