"""One training recipe: a teacher, a distilled student and a label-only student; ``python -m core.train``.

`core.recipe.TrainConfig` holds every setting of the recipe; `run_stages` runs its stages (teacher, then for
each seed the distilled and the label-only student), each in its own run folder. The command line,
`core.reproduce` and the app's Train page all call `run_stages`; they differ only in the settings
and callbacks they pass. One loop (`train_stage`) serves every stage: AdamW, cosine learning-rate
decay, early stopping on validation loss with the best weights kept, seeds set, and the full state
written atomically after every epoch so that ``resume=True`` continues an interrupted run. The test
split is never read here.

Under ``torchrun`` (`core.distributed`) the same loop trains with DistributedDataParallel: each process
takes its shard of every epoch's sample order, validation sums are all-reduced so that every rank makes
the same early-stopping decision, and rank 0 alone writes the teacher-logit cache and the checkpoints.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from core import checkpoints, distributed
from core.checkpoints import CheckpointMeta
from core.augment import (augment_batch, augmented_views, cached_teacher_logits, channel_stats, describe_augmentation,
                          state_fingerprint)
from core.catalog import DATASETS
from core.data import data_fingerprint, load_dataset, materialize
from core.distill import LossInputs, attention_pairs, build_loss
from core.hooks import record_activations
from core.inference import resize_batch, to_model_input
from core.models import STUDENT_POOLED_BLOCKS, TEACHERS, build_student, build_teacher, count_parameters
from core.recipe import Stage, TrainConfig, default_stages, epoch_size, recorded_settings, stage_settings

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


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resumable_state(state_path: Path, settings: dict) -> dict:
    """The saved state of a run, refused (ValueError) when it was made with other settings."""
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    saved = recorded_settings({"world_size": 1, **(state.get("settings") or {})})  # world_size: likewise
    changed = sorted(k for k in settings if saved.get(k) != settings[k])
    if changed:
        raise ValueError(f"{state_path}: made with other settings ({', '.join(changed)} differ: "
                         f"{', '.join(f'{k} {saved.get(k)!r} now {settings[k]!r}' for k in changed)}); "
                         "use a new run folder or the same settings")
    return state


def _private_teacher(teacher: nn.Module) -> nn.Module:
    """A frozen copy: the caller's teacher may be shared (a cached app model) and is never touched."""
    teacher = copy.deepcopy(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@functools.lru_cache(maxsize=4)
def _split(dataset: str, split: str, root: str | None, size: int, seed: int, val_fraction: float, protocol: str,
           max_per_class: int | None):
    """A decoded, resized uint8 copy of a split, kept for the process: every stage of a recipe reads the same."""
    ds = load_dataset(dataset, split, root=root, input_size=size, seed=seed, val_fraction=val_fraction,
                      protocol=protocol)
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
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    main_process, world, device = distributed.is_main(), distributed.world_size(), distributed.device()
    if main_process:  # a kill during an earlier state write leaves its temporary file behind: nothing else would
        checkpoints.remove_stale_temporaries(out, min_age_s=60.0)
    student_mode = stage.role == "student"
    # another world size deals other shards and another total batch: not the same run
    settings = {**stage_settings(cfg, stage), "world_size": world}
    epochs, size = settings["epochs"], settings["input_size"]
    patience = cfg.patience if student_mode else (cfg.teacher_patience or epochs)
    if student_mode and cfg.schedule == "onecycle":
        # One-cycle peaks its rate mid-run, where validation loss is noisiest: a student stopped there keeps an
        # early, barely trained epoch. It goes to the end of its schedule (the best validation weights are kept).
        patience = epochs
    key = (cfg.dataset, cfg.root, size, cfg.data_seed, cfg.val_fraction, cfg.protocol, cfg.max_per_class)
    (train_ds, train), (_, val) = _split(cfg.dataset, "train", *key[1:]), _split(cfg.dataset, "val", *key[1:])
    mean, std = channel_stats(train.images)
    set_seed(stage.seed)
    if student_mode:
        spec = cfg.loss_spec(stage.loss, stage.loss_args)
        model = build_student(len(train.classes), depth=cfg.depth, pooled=cfg.pooled_blocks)
    else:
        spec = cfg.teacher_loss_spec()
        model = build_teacher(cfg.teacher_arch, len(train.classes), pretrained_weights)
    loss_fn = build_loss(spec)
    if loss_fn.uses_teacher:
        if teacher is None:
            raise ValueError(f"stage {stage.name}: the {stage.loss} loss needs a teacher")
        teacher = _private_teacher(teacher)
    n_views = cfg.views if cfg.augment else 1
    views = _views(train.fingerprint, n_views, cfg.data_seed, train.images) if student_mode else None
    on_the_fly = loss_fn.uses_features  # feature terms need the teacher's activations of the same batch
    s_paths, t_paths = attention_pairs(model, teacher, size) if on_the_fly else ([], [])  # (probes on the CPU)
    model = model.to(device)
    teacher = teacher.to(device) if teacher is not None and loss_fn.uses_teacher else teacher
    logits_table = None
    if loss_fn.uses_teacher and not on_the_fly:
        cache_key = {"data": train.fingerprint, "views": n_views, "view_seed": cfg.data_seed, "input_size": size,
                     "teacher": state_fingerprint(teacher)}
        logits_table = _shared_teacher_logits(cfg.teacher_logits, teacher, views, mean, std, cache_key)
    net = distributed.wrap(model)  # what batches go through; `model` is what is evaluated and saved

    n = len(train)
    steps = math.ceil(math.ceil(n / world) / cfg.batch_size)  # per process: each takes its shard of n
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=epochs * steps + 1,
                                                    pct_start=0.25) if cfg.schedule == "onecycle" else \
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    state_path = out / "state.pt"
    history, best_val, bad_epochs, start_epoch, best_state = [], math.inf, 0, 0, None
    if cfg.resume and state_path.is_file():
        state = resumable_state(state_path, settings)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        best_state, history = state["best_model"], state["history"]
        best_val, bad_epochs, start_epoch = state["best_val"], state["bad_epochs"], state["epoch"] + 1
        torch.set_rng_state(state["rng"])
        finished = start_epoch >= epochs or bool(history and history[-1].get("stop"))
        log.info("%s: %s", out, "already finished" if finished else f"resumed at epoch {start_epoch + 1}/{epochs}")
    if start_epoch == 0:
        set_seed(stage.seed)  # the same batch order for every arm of a seed, whatever building the model drew

    started = time.perf_counter()
    earlier_s = history[-1]["seconds"] if history else 0.0  # time spent before an interruption
    stopped = history[-1].get("stop", "") if history else ""
    for epoch in range(start_epoch, epochs):
        if stopped:
            break
        net.train()
        side = size if student_mode else epoch_size(size, epoch, epochs, cfg.progressive)
        order = distributed.epoch_order(train.targets, cfg.class_balance, stage.seed, epoch)
        distributed.seed_epoch_draws(stage.seed, epoch)
        total_loss, correct, seen, train_s = 0.0, 0, 0, time.perf_counter()
        bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"{stage.name} epoch {epoch + 1}/{epochs} ({side} px)",
                   leave=False, disable=not main_process)
        for i in bar:
            idx = order[i:i + cfg.batch_size]
            if student_mode:  # both arms draw the same view of the same image at the same step
                view = torch.randint(n_views, (len(idx),))
                images = views[idx, view]
            else:
                flips = torch.rand(len(idx)) < 0.5 if cfg.augment else torch.zeros(len(idx), dtype=torch.bool)
                images = resize_batch(augment_batch(train.images[idx], flips, affine=cfg.augment), side)
            x, y = to_model_input(images, mean, std).to(device), train.targets[idx].to(device)
            if on_the_fly:
                with record_activations(model, s_paths, keep_graph=True) as s_store:
                    logits = net(x)
                with torch.no_grad(), record_activations(teacher, t_paths) as t_store:
                    t_logits = teacher(x)
                batch = LossInputs(logits, y, t_logits, list(s_store.values()), list(t_store.values()))
            else:
                logits = net(x)
                batch = LossInputs(logits, y, logits_table[idx, view].to(device) if logits_table is not None else None)
            loss = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if cfg.schedule == "onecycle":
                scheduler.step()
            total_loss += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(idx)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        train_s = time.perf_counter() - train_s
        if cfg.schedule == "cosine":
            scheduler.step()
        distributed.broadcast_buffers(model)
        total_loss, correct, seen = distributed.all_sum([total_loss, correct, seen])
        val_loss, val_acc = _validate(model, val, mean, std)
        # the slowest rank's times: every rank then takes the same time-cap decision
        train_s, seconds = distributed.all_max([train_s, earlier_s + time.perf_counter() - started])
        record = {"epoch": epoch + 1, "input_size": side, "train_loss": total_loss / seen, "train_acc": correct / seen,
                  "val_loss": val_loss, "val_acc": val_acc, "lr": optimizer.param_groups[0]["lr"],
                  "train_seconds": train_s, "seconds": seconds}
        if val_loss < best_val - 1e-4:
            best_val, bad_epochs = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        if bad_epochs >= patience and epoch + 1 < epochs:
            record["stop"] = stopped = f"early stop: no val-loss gain in {patience} epochs"
        if cfg.time_cap_s and seconds > cfg.time_cap_s and epoch + 1 < epochs:
            record["stop"] = stopped = f"time cap of {cfg.time_cap_s:.0f} s reached"
        history.append(record)
        if main_process:
            checkpoints.atomic_write_bytes(state_path, lambda h: torch.save(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "best_model": best_state, "history": history, "best_val": best_val, "bad_epochs": bad_epochs,
                 "epoch": epoch, "rng": torch.get_rng_state(), "settings": settings}, h),
                resume_hint="run the same command again: the stage continues from its last completed epoch")
        log.info("%s epoch %d: %s", stage.name, epoch + 1,
                 {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
        if on_epoch_end:
            on_epoch_end(record)

    model.load_state_dict(best_state if best_state is not None else model.state_dict())
    model = model.cpu().eval()  # callers get a CPU model, as from `checkpoints.load`
    provenance = {"augmentation": describe_augmentation(not student_mode, n_views) if cfg.augment else "none",
                  "loss": spec}
    if student_mode and teacher_path is not None:
        provenance["teacher_sha256"] = checkpoints.file_sha256(teacher_path)
    meta = CheckpointMeta(
        arch="student" if student_mode else cfg.teacher_arch, num_classes=len(train.classes),
        classes=list(train.classes), input_size=size, mean=mean, std=std, role=stage.role, dataset=cfg.dataset,
        arch_args={"depth": cfg.depth, "pooled": cfg.pooled_blocks} if student_mode else {},
        train={**asdict(cfg), **provenance, "stage": stage.name, "seed": stage.seed, "epochs": epochs,
               "patience": patience, "history": history, "best_val_loss": best_val, "stopped": stopped,
               "train_images": n, "val_images": len(val), "skipped_files": len(getattr(train, "skipped", [])),
               "world_size": world},
        kd={"loss": stage.loss, **dict(stage.loss_args), "attention_beta": cfg.attention_beta} if student_mode else None,
        seed=stage.seed, data_fingerprint=data_fingerprint(train_ds),
        notes=f"{count_parameters(model):,} parameters")
    path = checkpoints.save(model, meta, out / "best.pt") if main_process else out / "best.pt"
    _write_rank_digest(out, model)
    distributed.barrier()  # the next stage reads this best.pt (its sha256, a resume check) on every rank
    return TrainResult(model, meta, history, stopped, path, stage)


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

    A teacher stage trains the teacher the students then learn from; without one, ``teacher`` (a
    loaded model, never modified, from ``teacher_path`` if known) is used. With ``cfg.resume`` a stage whose ``best.pt`` exists is
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
        best, state_path = runs / stage.name / "best.pt", runs / stage.name / "state.pt"
        if cfg.resume and best.is_file() and state_path.is_file() and \
                _finished(resumable_state(state_path, stage_settings(cfg, stage))):
            model, meta = checkpoints.load(best)
            result = TrainResult(model, meta, meta.train.get("history", []), meta.train.get("stopped", ""), best, stage)
        else:
            callback = (lambda record, name=stage.name: on_epoch_end(name, record)) if on_epoch_end else None
            result = train_stage(cfg, stage, runs / stage.name, teacher, callback,
                                 pretrained_weights if stage.role == "teacher" else None, teacher_path)
        results[stage.name] = result
        if stage.role == "teacher":
            teacher, teacher_path = result.model, result.path
    return results


def _finished(state: dict) -> bool:
    """A stage is finished when its last epoch ran or it stopped early."""
    history = state.get("history") or []
    return bool(history) and (bool(history[-1].get("stop")) or len(history) >= state["settings"]["epochs"])


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m core.train",
        description="Train a teacher, distil a student (and a label-only baseline), evaluate them on test.",
        epilog="Several processes, GPUs or machines: launch with torchrun, e.g. `torchrun --nproc_per_node 4 -m "
               "core.train ...` (DistributedDataParallel, nccl on GPUs, gloo on CPUs). --batch-size is per process "
               "(a step averages world size x --batch-size images), --lr is used as given (not scaled); rank 0 "
               "writes the checkpoints; --resume needs the same number of processes.")
    parser.add_argument("--stage", choices=["teacher", "student", "both"], default="both",
                        help="what to train (default: both, teacher first)")
    parser.add_argument("--dataset", default="phantom", choices=sorted(DATASETS), help="dataset name")
    parser.add_argument("--root", default=None, help="data root (default: $KD_DATA_ROOT, ../shared/datasets, ./data)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<dataset>)")
    parser.add_argument("--teacher-arch", default="densenet121", choices=list(TEACHERS), help="teacher architecture")
    parser.add_argument("--teacher", default=None, help="existing teacher checkpoint for --stage student")
    parser.add_argument("--pretrained-weights", default=None, help="local state dict to start the teacher from")
    parser.add_argument("--depth", type=int, default=5, help="student conv blocks, 3 to 8")
    parser.add_argument("--pooled-blocks", type=int, default=STUDENT_POOLED_BLOCKS,
                        help="student blocks ending in pooling, from the first (fewer: finer feature maps)")
    parser.add_argument("--epochs", type=int, default=8, help="teacher epochs")
    parser.add_argument("--student-epochs", type=int, default=12, help="student epochs")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size per process (under torchrun)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, cosine decay)")
    parser.add_argument("--input-size", type=int, default=None, help="square input size (default: dataset's)")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the hard loss (1 = label-only)")
    parser.add_argument("--temperature", type=float, default=4.0, help="KD temperature T")
    parser.add_argument("--attention-beta", type=float, default=0.0, help="> 0 adds attention transfer")
    parser.add_argument("--baseline", action="store_true", help="also train the label-only student (alpha=1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="student seeds (one run per seed and arm)")
    parser.add_argument("--protocol", choices=["official", "pooled"], default="official",
                        help="official split, or the paper's pooled random split (leaky)")
    parser.add_argument("--patience", type=int, default=4, help="students' early-stopping patience in epochs")
    parser.add_argument("--max-per-class", type=int, default=None, help="cap training images per class")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue interrupted runs, reuse finished ones")
    parser.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation at the end")
    args = parser.parse_args(argv)
    if args.stage == "student" and not args.teacher:
        parser.error("--stage student needs --teacher CKPT")
    distributed.init()
    main_process = distributed.is_main()
    logging.basicConfig(level=logging.INFO if main_process else logging.WARNING, format="%(message)s")

    cfg = TrainConfig(dataset=args.dataset, root=args.root, protocol=args.protocol, input_size=args.input_size,
                      max_per_class=args.max_per_class, batch_size=args.batch_size, lr=args.lr,
                      teacher_arch=args.teacher_arch, teacher_epochs=args.epochs, depth=args.depth,
                      pooled_blocks=args.pooled_blocks,
                      student_epochs=args.student_epochs, patience=args.patience,
                      loss_args={"alpha": args.alpha, "temperature": args.temperature},
                      attention_beta=args.attention_beta, label_only=args.baseline, seeds=tuple(args.seeds),
                      resume=args.resume, threads=args.threads)
    out = Path(args.out or f"runs/{args.dataset}")
    stages = default_stages(cfg, teacher=args.stage != "student")
    if args.stage == "teacher":
        stages = stages[:1]
    teacher = checkpoints.load(args.teacher)[0] if args.stage == "student" else None
    try:
        results = run_stages(cfg, out, stages, teacher=teacher, pretrained_weights=args.pretrained_weights)
    finally:
        distributed.shutdown()
    if not main_process:  # rank 0 reports and evaluates (writing the metrics into the metadata)
        return
    paths = ({"teacher": Path(args.teacher)} if args.teacher else {}) | {n: r.path for n, r in results.items()}
    if args.no_eval:
        for name, path in paths.items():
            print(f"{name}: {path}")
        return
    from core.evaluate import evaluate_checkpoints, print_summary
    print_summary(evaluate_checkpoints(paths, root=args.root, write=True))


if __name__ == "__main__":
    main()
