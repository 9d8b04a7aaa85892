"""How much training `core.reproduce` gives each stage: the `Budget` record and the named budgets.

A results file records its budget, so the rendered results name the command that wrote it (`core.results`) and two splits
run with different budgets are not compared. Kept apart from `core.reproduce` so that reading a results file does
not import the training code.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.models import STUDENT_POOLED_BLOCKS


@dataclass(frozen=True)
class Budget:
    """How much training each stage gets; ``cpu`` fits a 2-core machine, ``gpu`` is the paper's 224 px."""

    input_size: int
    teacher_epochs: int
    grid_epochs: int
    student_epochs: int
    batch_size: int = 64
    lr: float = 2e-3
    max_per_class: int | None = None  # training and validation images per class (None: all)
    schedule: str = "cosine"
    progressive: bool = False
    teacher_label_smoothing: float = 0.0
    # of the student's blocks, how many end in pooling: fewer keep its last map finer (better localised)
    student_pooled_blocks: int = STUDENT_POOLED_BLOCKS


# The teacher recipe for a 2-core CPU: progressive resizing (cheap small epochs first), a one-cycle schedule and
# label smoothing; classes are sampled in balance where the training split is skewed (`core.reproduce.SKEW`).
STRONG = dict(schedule="onecycle", progressive=True, teacher_label_smoothing=0.1)
BUDGETS = {
    # 128 px: at 64 px the teacher's last map is 2 x 2 and its class maps cannot point at a lesion. Two pooled
    # blocks: the student's last map is 16 x 16, where its CAM finds the lesion (the measured student frontier).
    "phantom": Budget(input_size=128, teacher_epochs=15, grid_epochs=8, student_epochs=15, batch_size=32,
                      student_pooled_blocks=2, **STRONG),
    "cpu": Budget(input_size=128, teacher_epochs=20, grid_epochs=5, student_epochs=12, batch_size=32, **STRONG),
    "gpu": Budget(input_size=224, teacher_epochs=30, grid_epochs=15, student_epochs=30, batch_size=32, lr=1e-3,
                  **STRONG),
    "smoke": Budget(input_size=32, teacher_epochs=1, grid_epochs=1, student_epochs=1, max_per_class=24),
    # The budget of the checkpoints shipped before the recipe above (kept to name their results).
    "cpu_v1": Budget(input_size=96, teacher_epochs=8, grid_epochs=5, student_epochs=10),
    "phantom_v1": Budget(input_size=64, teacher_epochs=15, grid_epochs=10, student_epochs=15),
}


def default_budget(dataset: str) -> str:
    """The budget `python -m core.reproduce DATASET` runs without ``--budget``."""
    return "phantom" if dataset == "phantom" else "cpu"
