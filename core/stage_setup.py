"""What one stage of the recipe trains with, built once before its first epoch (`StageSetup`, `setup_stage`):
the decoded splits, the model, its loss, the teacher's private copy and logit table, the optimiser and schedule.

`core.train`'s loop reads only this record; nothing here runs an epoch.
"""

from __future__ import annotations

import copy
import functools
import math
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from core import distributed
from core.augment import augmented_views, cached_teacher_logits, channel_stats, state_fingerprint
from core.data import InMemoryDataset, load_dataset, materialize
from core.distill import attention_pairs, build_loss
from core.models import build_student, build_teacher
from core.recipe import Stage, TrainConfig, stage_settings


@dataclass(frozen=True)
class StageSetup:
    """What a stage's epochs use, built once before the first: data, models, loss, optimiser and schedule."""

    stage: Stage
    settings: dict  # what a resumed run must share with this one (`stage_settings` and the world size)
    patience: int  # epochs without validation gain before stopping
    train_ds: object  # the training split as loaded (its data fingerprint goes into the metadata)
    train: InMemoryDataset  # its decoded uint8 copy
    val: InMemoryDataset
    mean: list[float]
    std: list[float]
    spec: dict  # the loss, as `build_loss` takes it
    loss_fn: Callable
    model: nn.Module  # what is evaluated and saved
    net: nn.Module  # what batches go through: `model`, wrapped for DistributedDataParallel under torchrun
    teacher: nn.Module | None  # a private frozen copy, when the loss reads the teacher
    n_views: int
    views: torch.Tensor | None  # a student's fixed augmented views of every training image
    logits_table: torch.Tensor | None  # the teacher's logits of every view, when the loss reads them from a table
    attention_paths: tuple[list[str], list[str]]  # student and teacher layers attention transfer compares
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device

    @property
    def student(self) -> bool:
        return self.stage.role == "student"

    @property
    def epochs(self) -> int:
        return self.settings["epochs"]

    @property
    def size(self) -> int:
        return self.settings["input_size"]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _private_teacher(teacher: nn.Module) -> nn.Module:
    """A frozen copy: the caller's teacher may be shared (a cached app model) and is never touched."""
    teacher = copy.deepcopy(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@functools.lru_cache(maxsize=4)
def _split(dataset: str, split: str, root: str | None, size: int, seed: int, val_fraction: float, val_carve: str,
           protocol: str, max_per_class: int | None):
    """A decoded, resized uint8 copy of a split, kept for the process: every stage of a recipe reads the same."""
    ds = load_dataset(dataset, split, root=root, input_size=size, seed=seed, val_fraction=val_fraction,
                      protocol=protocol, val_carve=val_carve)
    return ds, materialize(ds, max_per_class=max_per_class)


@functools.lru_cache(maxsize=1)
def _views(fingerprint: str, count: int, seed: int, images: torch.Tensor) -> torch.Tensor:
    return augmented_views(images, count, seed)


def _shared_teacher_logits(cache: str | None, teacher: nn.Module, views: torch.Tensor, mean, std,
                           key: dict) -> torch.Tensor:
    """`cached_teacher_logits`; with several processes and a cache file, rank 0 computes and writes it while
    the others wait, then read it (without a cache file every rank computes its own table)."""
    if not cache or not distributed.active():
        return cached_teacher_logits(cache, teacher, views, mean, std, key)
    table = cached_teacher_logits(cache, teacher, views, mean, std, key) if distributed.is_main() else None
    distributed.barrier()
    return table if table is not None else cached_teacher_logits(cache, teacher, views, mean, std, key)


def setup_stage(cfg: TrainConfig, stage: Stage, teacher: nn.Module | None, pretrained_weights: str | None) -> StageSetup:
    """Data, model, loss, the teacher's copy and logits, optimiser and schedule of one stage, on this process's device.

    Raises:
        ValueError: a loss that needs a teacher and none given.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    student = stage.role == "student"
    # another world size deals other shards and another total batch: not the same run
    settings = {**stage_settings(cfg, stage), "world_size": distributed.world_size()}
    size = settings["input_size"]
    key = (cfg.root, size, cfg.data_seed, cfg.val_fraction, cfg.val_carve, cfg.protocol, cfg.max_per_class)
    (train_ds, train), (_, val) = _split(cfg.dataset, "train", *key), _split(cfg.dataset, "val", *key)
    mean, std = channel_stats(train.images)
    set_seed(stage.seed)
    if student:
        spec = cfg.loss_spec(stage.loss, stage.loss_args)
        model = build_student(len(train.classes), depth=cfg.depth, pooled=cfg.pooled_blocks)
    else:
        spec = cfg.teacher_loss_spec()
        model = build_teacher(cfg.teacher_arch, len(train.classes), pretrained_weights)
    loss_fn = build_loss(spec)
    if loss_fn.uses_teacher and teacher is None:
        raise ValueError(f"stage {stage.name}: the {stage.loss} loss needs a teacher")
    teacher = _private_teacher(teacher) if loss_fn.uses_teacher else None
    n_views = cfg.views if cfg.augment else 1
    views = _views(train.fingerprint, n_views, cfg.data_seed, train.images) if student else None
    # feature terms need the teacher's activations of the same batch (the layers are probed on the CPU)
    attention_paths = attention_pairs(model, teacher, size) if loss_fn.uses_features else ([], [])
    device = distributed.device()
    model, teacher = model.to(device), teacher.to(device) if teacher is not None else None
    logits_table = None
    if loss_fn.uses_teacher and not loss_fn.uses_features:
        cache_key = {"data": train.fingerprint, "views": n_views, "view_seed": cfg.data_seed, "input_size": size,
                     "teacher": state_fingerprint(teacher)}
        logits_table = _shared_teacher_logits(cfg.teacher_logits, teacher, views, mean, std, cache_key)
    net = distributed.wrap(model)
    optimizer, scheduler = _optimiser(cfg, model, settings["epochs"], len(train))
    return StageSetup(stage, settings, _patience(cfg, stage, settings["epochs"]), train_ds, train, val, mean, std,
                      spec, loss_fn, model, net, teacher, n_views, views, logits_table, attention_paths, optimizer,
                      scheduler, device)


def _patience(cfg: TrainConfig, stage: Stage, epochs: int) -> int:
    if stage.role != "student":
        return cfg.teacher_patience or epochs
    # One-cycle peaks its rate mid-run, where validation loss is noisiest: a student stopped there keeps an
    # early, barely trained epoch. It goes to the end of its schedule (the best validation weights are kept).
    return epochs if cfg.schedule == "onecycle" else cfg.patience


def _optimiser(cfg: TrainConfig, model: nn.Module, epochs: int, n: int):
    """AdamW and its learning-rate schedule: one-cycle stepped per batch, or cosine decay stepped per epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "onecycle":
        steps = math.ceil(math.ceil(n / distributed.world_size()) / cfg.batch_size)  # per process: its shard of n
        return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr,
                                                              total_steps=epochs * steps + 1, pct_start=0.25)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
