"""One training recipe: a teacher, a distilled student and a label-only student; ``python -m core.train``.

`core.recipe.TrainConfig` holds every setting of the recipe; `run_stages` runs its stages (teacher, then for
each seed the distilled and the label-only student), each in its own run folder. The command line,
`core.reproduce` and the app's Train page all call `run_stages`; they differ only in the settings
and callbacks they pass. One loop (`train_stage`) serves every stage: AdamW, cosine learning-rate
decay, early stopping on validation loss with the best weights kept, seeds set, and the full state
written atomically after every epoch (`core.train_state`) so that ``resume=True`` continues an interrupted run.
The test split is never read here.

`train_stage` reads top to bottom: `core.stage_setup.setup_stage` builds what the epochs use (`StageSetup`), `_resume` gives the loop
state to start from, `train_epoch` runs one epoch and returns its record, and `_finish` keeps the best weights
and writes them with their metadata (`_stage_meta`).

Under ``torchrun`` (`core.distributed`) the same loop trains with DistributedDataParallel: each process
takes its shard of every epoch's sample order, validation sums are all-reduced so that every rank makes
the same early-stopping decision, and rank 0 alone writes the teacher-logit cache and the checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from core import checkpoints, distributed, train_state
from core.augment import augment_batch, describe_augmentation, state_fingerprint
from core.checkpoints import CheckpointMeta
from core.data import data_fingerprint
from core.distill import LossInputs
from core.hooks import record_activations
from core.inference import resize_batch, to_model_input
from core.layout import BEST_FILE, STATE_FILE, stage_folder
from core.models import count_parameters
from core.stage_setup import StageSetup, set_seed, setup_stage
from core.recipe import Stage, TrainConfig, default_stages, epoch_size, stage_settings
from core.train_state import LoopState, NonFiniteLoss

log = logging.getLogger(__name__)

EpochCallback = Callable[[str, dict], None]

# Set (to anything but "" or "0"), every process writes ``rank<r>.sha256`` (`state_fingerprint` of its final
# model) into the run folder: how a test sees that all ranks ended with the same weights.
RANK_DIGESTS_ENV = "KD_RANK_DIGESTS"


@dataclass
class TrainResult:
    model: nn.Module
    meta: CheckpointMeta
    history: list[dict] = field(default_factory=list)
    stopped: str = ""
    path: Path | None = None  # the best.pt written
    stage: Stage | None = None

    @classmethod
    def loaded(cls, model: nn.Module | None, meta: CheckpointMeta, path: Path, stage: Stage) -> TrainResult:
        """The result of a stage finished earlier, from its checkpoint (model None when its weights are not read)."""
        return cls(model, meta, meta.train.get("history", []), meta.train.get("stopped", ""), path, stage)


def _validate(model: nn.Module, val, mean, std) -> tuple[float, float]:
    """Validation loss and accuracy of the whole split.

    Several processes each evaluate their share of the split and sum over all ranks: every rank
    gets the same numbers, so early stopping stops them all at the same epoch.
    """
    if not distributed.active():
        return evaluate_loss(model, val.images, val.targets, mean, std)
    part = slice(distributed.rank(), None, distributed.world_size())
    images, targets = val.images[part], val.targets[part]
    loss, acc = evaluate_loss(model, images, targets, mean, std)
    loss_sum, correct, count = distributed.all_sum([loss * len(targets), round(acc * len(targets)), len(targets)])
    return loss_sum / max(count, 1), correct / max(count, 1)


def _write_rank_digest(out: Path, model: nn.Module) -> None:
    """``rank<r>.sha256`` of the final model, when `RANK_DIGESTS_ENV` asks for it."""
    if os.environ.get(RANK_DIGESTS_ENV, "") not in ("", "0"):
        checkpoints.atomic_write_text(out / f"rank{distributed.rank()}.sha256", state_fingerprint(model) + "\n")


def train_stage(cfg: TrainConfig, stage: Stage, out: str | Path, teacher: nn.Module | None = None,
                on_epoch_end: Callable[[dict], None] | None = None,
                pretrained_weights: str | None = None, teacher_path: str | Path | None = None) -> TrainResult:
    """Train one stage into ``out`` (``state.pt`` after every epoch, ``best.pt`` and ``best.json`` at the end).

    Args:
        teacher: the model a student learns from (needed when its loss uses the teacher).
        pretrained_weights: a local state dict to start a teacher from.
        teacher_path: the teacher's checkpoint file, whose sha256 the student's metadata records.

    Raises:
        ValueError: a student loss that needs a teacher and none given, or ``resume`` with other settings.
    """
    out = _run_folder(out)
    setup = setup_stage(cfg, stage, teacher, pretrained_weights)
    loop = _resume(cfg, setup, out / STATE_FILE)
    clock = time.perf_counter() - loop.elapsed_s  # a resumed stage's seconds count those before the interruption
    while loop.next_epoch < setup.epochs and not loop.stopped:
        record = train_epoch(cfg, setup, loop.next_epoch, clock)
        loop.score(record["val_loss"], setup.model)
        if reason := _stop_reason(cfg, setup, loop, record):
            record["stop"] = reason
        loop.close_epoch(record)
        if distributed.is_main():
            train_state.save(out / STATE_FILE, loop, setup.settings, setup.model, setup.optimizer, setup.scheduler)
        log.info("%s epoch %d: %s", stage.name, record["epoch"],
                 {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
        if on_epoch_end:
            on_epoch_end(record)
    return _finish(cfg, setup, loop, out, teacher_path)


def _run_folder(out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # a kill during an earlier state write leaves its temporary file behind: nothing else would remove it
    if distributed.is_main():
        checkpoints.remove_stale_temporaries(out, min_age_s=60.0)
    return out


def _resume(cfg: TrainConfig, setup: StageSetup, state_path: Path) -> LoopState:
    """The loop state to start from: an interrupted run's saved one (``cfg.resume``), else a fresh one."""
    if not (cfg.resume and state_path.is_file()):
        set_seed(setup.stage.seed)  # the same batch order for every arm of a seed, whatever building the model drew
        return LoopState()
    loop = train_state.restore(state_path, setup.settings, setup.model, setup.optimizer, setup.scheduler)
    done = loop.next_epoch >= setup.epochs or loop.stopped
    log.info("%s: %s", state_path.parent,
             "already finished" if done else f"resumed at epoch {loop.next_epoch + 1}/{setup.epochs}")
    return loop


def train_epoch(cfg: TrainConfig, setup: StageSetup, epoch: int, clock: float) -> dict:
    """One pass over this process's shard of the training split, then validation; the epoch's record.

    ``clock`` is the `time.perf_counter` reading the stage's ``seconds`` count from.

    Raises:
        NonFiniteLoss: the epoch's training or validation loss is nan or inf (`_check_finite`).
    """
    setup.net.train()
    side = setup.size if setup.student else epoch_size(setup.size, epoch, setup.epochs, cfg.progressive)
    order = distributed.epoch_order(setup.train.targets, cfg.class_balance, setup.stage.seed, epoch)
    distributed.seed_epoch_draws(setup.stage.seed, epoch)
    total_loss, correct, seen, train_s = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(batch_bounds(len(order), cfg.batch_size), leave=False, disable=not distributed.is_main(),
               desc=f"{setup.stage.name} epoch {epoch + 1}/{setup.epochs} ({side} px)")
    for start, stop in bar:
        idx = order[start:stop]
        loss, hits = _train_step(cfg, setup, idx, side)
        total_loss, correct, seen = total_loss + loss * len(idx), correct + hits, seen + len(idx)
        bar.set_postfix(loss=f"{loss:.3f}")
    train_s = time.perf_counter() - train_s
    if cfg.schedule == "cosine":
        setup.scheduler.step()
    distributed.broadcast_buffers(setup.model)
    total_loss, correct, seen = distributed.all_sum([total_loss, correct, seen])
    val_loss, val_acc = _validate(setup.model, setup.val, setup.mean, setup.std)
    _check_finite(cfg, setup, epoch, total_loss / seen, val_loss)
    # the slowest rank's times: every rank then takes the same time-cap decision
    train_s, seconds = distributed.all_max([train_s, time.perf_counter() - clock])
    return {"epoch": epoch + 1, "input_size": side, "train_loss": total_loss / seen, "train_acc": correct / seen,
            "val_loss": val_loss, "val_acc": val_acc, "lr": setup.optimizer.param_groups[0]["lr"],
            "train_seconds": train_s, "seconds": seconds}


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` of each training batch of ``n`` images in order; a last batch of one image joins the
    batch before it: a batch-norm layer whose map has shrunk to 1 x 1 (a ResNet at a small input size) cannot
    train on a single value per channel."""
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _check_finite(cfg: TrainConfig, setup: StageSetup, epoch: int, train_loss: float, val_loss: float) -> None:
    """Stop the stage (`NonFiniteLoss`) once a loss is nan or inf: weights that diverged never recover, and the
    best validation weights would then be the last, broken ones. Checked on the epoch's summed losses, which every
    process shares, so that all processes stop together; the state of the last finite epoch is kept."""
    for which, loss in (("training", train_loss), ("validation", val_loss)):
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"{setup.stage.name}: the {which} loss became {loss} in epoch {epoch + 1}: the "
                                f"weights diverged, so the run stops and writes no best.pt; train again with a "
                                f"lower learning rate (it was {cfg.lr:g})")


def _train_step(cfg: TrainConfig, setup: StageSetup, idx: torch.Tensor, side: int) -> tuple[float, int]:
    """One optimiser step on the training images ``idx``; its loss and number of correct predictions."""
    images, table_logits = _batch(cfg, setup, idx, side)
    x, y = to_model_input(images, setup.mean, setup.std).to(setup.device), setup.train.targets[idx].to(setup.device)
    if setup.loss_fn.uses_features:
        s_paths, t_paths = setup.attention_paths
        with record_activations(setup.model, s_paths, keep_graph=True) as s_store:
            logits = setup.net(x)
        with torch.no_grad(), record_activations(setup.teacher, t_paths) as t_store:
            t_logits = setup.teacher(x)
        batch = LossInputs(logits, y, t_logits, list(s_store.values()), list(t_store.values()))
    else:
        logits = setup.net(x)
        batch = LossInputs(logits, y, table_logits.to(setup.device) if table_logits is not None else None)
    loss = setup.loss_fn(batch)
    setup.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    setup.optimizer.step()
    if cfg.schedule == "onecycle":
        setup.scheduler.step()
    return loss.item(), (logits.argmax(1) == y).sum().item()


def _batch(cfg: TrainConfig, setup: StageSetup, idx: torch.Tensor,
           side: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The uint8 images of one step and, when the loss reads a table, the teacher's logits of those same views."""
    if not setup.student:  # the teacher: augmented on the fly, at this epoch's side
        flips = torch.rand(len(idx)) < 0.5 if cfg.augment else torch.zeros(len(idx), dtype=torch.bool)
        return resize_batch(augment_batch(setup.train.images[idx], flips, affine=cfg.augment), side), None
    view = torch.randint(setup.n_views, (len(idx),))  # both arms draw the same view of the same image at each step
    table = setup.logits_table[idx, view] if setup.logits_table is not None else None
    return setup.views[idx, view], table


def _stop_reason(cfg: TrainConfig, setup: StageSetup, loop: LoopState, record: dict) -> str:
    """Why training stops after this epoch ("" to go on; never after the last epoch): no validation gain in
    ``patience`` epochs, or the time cap (which wins when both hold)."""
    if record["epoch"] >= setup.epochs:
        return ""
    if cfg.time_cap_s and record["seconds"] > cfg.time_cap_s:
        return f"time cap of {cfg.time_cap_s:.0f} s reached"
    if loop.bad_epochs >= setup.patience:
        return f"early stop: no val-loss gain in {setup.patience} epochs"
    return ""


def _finish(cfg: TrainConfig, setup: StageSetup, loop: LoopState, out: Path,
            teacher_path: str | Path | None) -> TrainResult:
    """Keep the best validation weights and write them (rank 0) as ``best.pt`` with their metadata."""
    model = setup.model
    model.load_state_dict(loop.best_model if loop.best_model is not None else model.state_dict())
    model = model.cpu().eval()  # callers get a CPU model, as from `checkpoints.load`
    meta = _stage_meta(cfg, setup, loop, teacher_path)
    path = checkpoints.save(model, meta, out / BEST_FILE) if distributed.is_main() else out / BEST_FILE
    _write_rank_digest(out, model)
    distributed.barrier()  # the next stage reads this best.pt (its sha256, a resume check) on every rank
    return TrainResult(model, meta, loop.history, loop.stopped, path, setup.stage)


def _stage_meta(cfg: TrainConfig, setup: StageSetup, loop: LoopState,
                teacher_path: str | Path | None) -> CheckpointMeta:
    """The metadata of a stage's best weights: the recipe, the loss, its data and its whole history."""
    stage, student, train = setup.stage, setup.student, setup.train
    provenance = {"augmentation": describe_augmentation(not student, setup.n_views) if cfg.augment else "none",
                  "loss": setup.spec}
    if student and teacher_path is not None:
        provenance["teacher_sha256"] = checkpoints.file_sha256(teacher_path)
    return CheckpointMeta(
        arch="student" if student else cfg.teacher_arch, num_classes=len(train.classes), classes=list(train.classes),
        input_size=setup.size, mean=setup.mean, std=setup.std, role=stage.role, dataset=cfg.dataset,
        arch_args={"depth": cfg.depth, "pooled": cfg.pooled_blocks} if student else {},
        train={**asdict(cfg), **provenance, "stage": stage.name, "seed": stage.seed, "epochs": setup.epochs,
               "patience": setup.patience, "history": loop.history, "best_val_loss": loop.best_val,
               "stopped": loop.stopped, "train_images": len(train), "val_images": len(setup.val),
               "skipped_files": len(getattr(train, "skipped", [])), "world_size": setup.settings["world_size"]},
        kd={"loss": stage.loss, **dict(stage.loss_args), "attention_beta": cfg.attention_beta} if student else None,
        seed=stage.seed, data_fingerprint=data_fingerprint(setup.train_ds),
        notes=f"{count_parameters(setup.model):,} parameters")


@torch.no_grad()
def evaluate_loss(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, mean, std,
                  batch_size: int = 128) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on an in-memory split (model put in eval mode, batches sent to its device)."""
    model.eval()
    device = next(model.parameters()).device
    loss, correct = 0.0, 0
    for i in range(0, len(images), batch_size):
        logits = model(to_model_input(images[i:i + batch_size], mean, std).to(device))
        y = targets[i:i + batch_size].to(device)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    return loss / max(len(images), 1), correct / max(len(images), 1)


def run_stages(cfg: TrainConfig, runs: str | Path, stages: list[Stage] | None = None, *,
               teacher: nn.Module | None = None, teacher_path: str | Path | None = None,
               pretrained_weights: str | None = None, on_stage: Callable[[Stage], None] | None = None,
               on_epoch_end: EpochCallback | None = None) -> dict[str, TrainResult]:
    """Run the recipe's stages (default `default_stages`) in ``runs/<stage name>/``.

    A teacher stage trains the teacher the students then learn from; without one, ``teacher`` (a loaded model,
    never modified, from ``teacher_path`` if known) is used. With ``cfg.resume`` a finished stage's ``best.pt`` is
    loaded instead of trained again, and an interrupted one continues from its ``state.pt``.

    Returns:
        stage name -> `TrainResult`, in the order run.
    """
    runs = Path(runs)
    stages = stages if stages is not None else default_stages(cfg, teacher=teacher is None)
    results: dict[str, TrainResult] = {}
    for stage in stages:
        if on_stage:
            on_stage(stage)
        folder = stage_folder(runs, stage.name)
        best, state_path = folder / BEST_FILE, folder / STATE_FILE
        if cfg.resume and best.is_file() and state_path.is_file() and \
                train_state.finished(train_state.resumable_state(state_path, stage_settings(cfg, stage))):
            result = TrainResult.loaded(*checkpoints.load(best), best, stage)
        else:
            callback = (lambda record, name=stage.name: on_epoch_end(name, record)) if on_epoch_end else None
            result = train_stage(cfg, stage, folder, teacher, callback,
                                 pretrained_weights if stage.role == "teacher" else None, teacher_path)
        results[stage.name] = result
        if stage.role == "teacher":
            teacher, teacher_path = result.model, result.path
    return results

