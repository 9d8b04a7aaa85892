"""The Train page's time estimate, from this server's measured speed rather than a promise: one training step of
each model the run trains, at the chosen size and batch, timed here (cached per architecture, size and batch), times
the steps of its epochs, each model capped at the run's time cap. Augmentation, validation, the students' teacher
logits, reading the images and testing the models come on top (`OVERHEAD`, `FIXED_S`, measured); the run's own
times, shown after it, check the estimate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import streamlit as st
import torch
import torch.nn.functional as F

from core.catalog import dataset_status
from core.models import build_student, build_teacher
from core.recipe import Stage, TrainConfig, default_stages
from core.roles import TEACHER
from explorer.names import role_label
from explorer.training import shown_role

# What a run spends beyond its timed steps: each step's augmentation and batching, the validation pass of every epoch
# and the students' teacher logits (a factor on the steps), and reading the images and testing the models at the end
# (seconds). Measured on the page's default phantom recipe (resnet18, 64 px, 4 epochs, 2-core EPYC, one thread, the
# machine otherwise busy): the teacher took 1.9x its steps' time, each student 1.5x, and the run 11 s more.
OVERHEAD = 1.8
FIXED_S = 10.0


@dataclass(frozen=True)
class Estimate:
    """Predicted seconds of a run, in all and per model (by its shown role), and the step times they come from."""

    seconds: float
    per_model: dict[str, float]
    step_seconds: dict[str, float]
    steps_per_epoch: int
    capped: tuple[str, ...]  # the models the time cap stops before their last epoch

    def sentence(self) -> str:
        steps = ", ".join(f"{name} {1000 * s:.0f} ms" for name, s in self.step_seconds.items())
        their = "its" if len(self.capped) == 1 else "their"
        capped = f"; the time cap stops the {', '.join(self.capped)} before {their} last epoch" if self.capped else ""
        return (f"Predicted: about {self.seconds:.0f} s in all ({self.steps_per_epoch} steps per epoch; one training "
                f"step measured on this server: {steps}{capped}; reading the images and testing the models "
                "included).")


def training_images(cfg: TrainConfig) -> int:
    """The training images the recipe uses: at most ``max_per_class`` of each class, less the validation share."""
    counts = dataset_status(cfg.dataset, cfg.root)["counts"].get("train", {})
    kept = sum(min(n, cfg.max_per_class) if cfg.max_per_class else n for n in counts.values())
    return max(1, int(kept * (1 - cfg.val_fraction)))


@st.cache_data(max_entries=16, show_spinner="Timing one training step of each model on this server ...")
def step_seconds(arch: str, num_classes: int, size: int, batch: int, depth: int) -> float:
    """Wall time of one training step (forward, backward, update) of ``arch`` ("student": the student of ``depth``
    blocks) on a random batch, after one untimed step."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_student(num_classes, depth=depth) if arch == "student" else build_teacher(arch, num_classes)
        x, y = torch.randn(batch, 3, size, size), torch.randint(num_classes, (batch,))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.0)
    model.train()

    def step() -> None:
        optimiser.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimiser.step()

    step()
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def estimate(cfg: TrainConfig, num_classes: int, shipped_teacher: bool, timer=step_seconds) -> Estimate:
    """The run's predicted time (``timer``: seconds of one step of an architecture, `step_seconds`)."""
    stages: list[Stage] = default_stages(cfg, teacher=not shipped_teacher)
    images = training_images(cfg)  # one scan of the data folder
    batch = min(cfg.batch_size, images)
    steps = math.ceil(images / batch)
    per_model, step_of, capped = {}, {}, []
    for stage in stages:
        teacher = stage.role == TEACHER.kind
        arch = cfg.teacher_arch if teacher else "student"
        step_of.setdefault(arch, timer(arch, num_classes, cfg.input_size, batch, cfg.depth))
        epochs = cfg.teacher_epochs if teacher else cfg.student_epochs
        seconds = epochs * steps * step_of[arch] * OVERHEAD
        if cfg.time_cap_s is not None and seconds > cfg.time_cap_s:
            seconds = cfg.time_cap_s
            capped.append(role_label(shown_role(stage)).lower())
        per_model[shown_role(stage)] = seconds
    names = {cfg.teacher_arch: f"teacher ({cfg.teacher_arch})", "student": "student"}
    return Estimate(sum(per_model.values()) + FIXED_S, per_model, {names[a]: s for a, s in step_of.items()}, steps,
                    tuple(capped))
