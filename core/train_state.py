"""What a stage's loop carries from one epoch to the next (`LoopState`) and its ``state.pt``.

The state is written atomically after every epoch and read back to continue an interrupted run. Its keys are
the ones runs have always written (model, optimizer, scheduler, best_model, history, best_val, bad_epochs, epoch,
rng, settings), so run folders written before stay resumable. A state made with other settings is refused:
continuing it would write metadata describing a run that never happened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from core import checkpoints
from core.recipe import recorded_settings

__all__ = ["LoopState", "resumable_state", "restore", "save", "finished"]

# What a failed state write tells the user of a command line to do: python -m core.train continues a run folder
# only when asked to (the same command again would train the stage afresh); python -m core.reproduce always does.
# (The app's Train page writes in a temporary folder, which is gone after a failure: it says so itself.)
RESUME_HINT = ("free some space, then run python -m core.train again with --resume added (python -m core.reproduce: "
               "the same command); the stage continues from its last completed epoch")



class NonFiniteLoss(ValueError):
    """A loss that is no longer a finite number: the weights have diverged, and the stage stops without a best.pt."""


@dataclass
class LoopState:
    """The epochs so far: their records, the best validation loss with its weights, and the epochs without gain."""

    history: list[dict] = field(default_factory=list)
    best_val: float = math.inf
    bad_epochs: int = 0
    best_model: dict | None = None  # the state dict of the best validation epoch
    next_epoch: int = 0  # 0-based

    @property
    def stopped(self) -> str:
        """Why the run stopped before its last epoch ("" while it goes on or when it ran them all)."""
        return self.history[-1].get("stop", "") if self.history else ""

    @property
    def elapsed_s(self) -> float:
        """Seconds the stage has trained so far, over any interruptions."""
        return self.history[-1]["seconds"] if self.history else 0.0

    def score(self, val_loss: float, model: nn.Module) -> None:
        """Keep the weights of a validation loss better than the best by more than 1e-4, else count an epoch
        without gain."""
        if val_loss < self.best_val - 1e-4:
            self.best_val, self.bad_epochs = val_loss, 0
            self.best_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1

    def close_epoch(self, record: dict) -> None:
        self.history.append(record)
        self.next_epoch += 1


def resumable_state(state_path: Path, settings: dict) -> dict:
    """The saved state of a run, refused (ValueError) when it was made with other settings."""
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    # a state written before world_size was recorded came from one process
    saved = recorded_settings({"world_size": 1, **(state.get("settings") or {})})
    changed = sorted(k for k in settings if saved.get(k) != settings[k])
    if changed:
        raise ValueError(f"{state_path}: made with other settings ({', '.join(changed)} differ: "
                         f"{', '.join(f'{k} {saved.get(k)!r} now {settings[k]!r}' for k in changed)}); "
                         "use a new run folder or the same settings")
    return state


def restore(state_path: Path, settings: dict, model: nn.Module, optimizer, scheduler) -> LoopState:
    """Load a run's saved state into its model, optimiser, schedule and the global random state; its loop state."""
    state = resumable_state(state_path, settings)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return LoopState(state["history"], state["best_val"], state["bad_epochs"], state["best_model"], state["epoch"] + 1)


def save(state_path: Path, loop: LoopState, settings: dict, model: nn.Module, optimizer, scheduler) -> None:
    """Write the state after an epoch (atomically: a kill mid-write leaves the previous state intact)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "best_model": loop.best_model, "history": loop.history, "best_val": loop.best_val,
             "bad_epochs": loop.bad_epochs, "epoch": loop.next_epoch - 1, "rng": torch.get_rng_state(),
             "settings": settings}
    checkpoints.atomic_write_bytes(state_path, lambda handle: torch.save(state, handle), resume_hint=RESUME_HINT)


def finished(state: dict) -> bool:
    """A stage is finished when its last epoch ran or it stopped early."""
    history = state.get("history") or []
    return bool(history) and (bool(history[-1].get("stop")) or len(history) >= state["settings"]["epochs"])
