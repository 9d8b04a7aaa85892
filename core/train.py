"""Train a teacher (`fit`) and distil a student from it (`distill`); ``python -m core.train``.

One loop serves both: AdamW, cosine learning-rate decay, early stopping on validation loss, the
best weights kept, seeds set, and the full state written atomically after every epoch so that
``resume=True`` continues an interrupted run. The test split is never read here.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2
from tqdm.auto import tqdm

from core import checkpoints
from core.checkpoints import CheckpointMeta
from core.data import DATASETS, data_fingerprint, load_dataset, materialize
from core.distill import LOSSES
from core.featuremaps import record_activations
from core.inference import to_model_input
from core.models import build_student, build_teacher, count_parameters, feature_layers

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """One training run. ``role="teacher"`` trains ``arch``; ``role="student"`` distils into a student."""

    dataset: str = "phantom"
    role: str = "teacher"
    arch: str = "densenet121"
    depth: int = 5
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    input_size: int | None = None  # None: the dataset's default
    seed: int = 0  # model initialisation and batch order
    data_seed: int = 0  # validation carve (and the phantom generator): fixed across seeds for a fair comparison
    val_fraction: float = 0.15
    protocol: str = "official"
    patience: int = 4
    augment: bool = True
    loss: str = "kd"  # a core.distill.LOSSES name, for students
    alpha: float = 0.5  # weight of the hard loss; 1.0 = label-only baseline
    temperature: float = 4.0
    attention_beta: float = 0.0  # > 0 adds attention transfer (needs the teacher on the fly)
    root: str | None = None
    out: str = "runs/phantom/teacher"
    resume: bool = False
    time_cap_s: float | None = None
    threads: int | None = None
    max_per_class: int | None = None
    teacher_logits: str | None = None  # cache file: computed once, reused by every student run


@dataclass
class TrainResult:
    model: nn.Module
    meta: CheckpointMeta
    history: list[dict] = field(default_factory=list)
    stopped: str = ""


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a uint8 (N, 3, H, W) tensor, on the [0, 1] scale."""
    x = images.float().div_(255.0)
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()


TRAIN_AUGMENT = v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1))


def augment_batch(images: torch.Tensor, flips: torch.Tensor, affine: bool) -> torch.Tensor:
    """Mild augmentation on a uint8 batch: per-sample horizontal flip (given) and small affine jitter."""
    images = torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)
    if affine:
        images = torch.stack([TRAIN_AUGMENT(img) for img in images])
    return images


@torch.no_grad()
def teacher_logits_table(teacher: nn.Module, images: torch.Tensor, mean, std, batch_size: int = 128) -> torch.Tensor:
    """Teacher logits for every training image and its mirror image, shape (N, 2, C).

    Distilling then needs no teacher forward per step; flips stay a valid augmentation because
    the logits of both orientations are known.
    """
    teacher.eval()
    rows = []
    for i in tqdm(range(0, len(images), batch_size), desc="teacher logits", leave=False):
        x = to_model_input(images[i:i + batch_size], mean, std)
        rows.append(torch.stack([teacher(x), teacher(x.flip(-1))], dim=1))
    return torch.cat(rows)


def attention_pairs(student: nn.Module, teacher: nn.Module, size: int) -> tuple[list[str], list[str]]:
    """Pair the middle student blocks with the teacher layers of the nearest spatial resolution."""
    def sizes(model):
        with record_activations(model, [p for _, p in feature_layers(model)]) as store, torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
        return {p: t.shape[-1] for (_, p), t in zip(feature_layers(model), store.values())}
    s_sizes, t_sizes = sizes(student), sizes(teacher)
    s_paths = [p for _, p in feature_layers(student)][1:-1]
    t_paths = [min(t_sizes, key=lambda t: (abs(math.log2(t_sizes[t] / s_sizes[s])), t)) for s in s_paths]
    return s_paths, t_paths


def _run(cfg: TrainConfig, model: nn.Module, teacher: nn.Module | None,
         on_epoch_end: Callable[[dict], None] | None) -> TrainResult:
    """The training loop shared by `fit` and `distill`."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    size = cfg.input_size or DATASETS[cfg.dataset].input_size
    kw = dict(root=cfg.root, input_size=size, seed=cfg.data_seed, val_fraction=cfg.val_fraction, protocol=cfg.protocol)
    train_ds = load_dataset(cfg.dataset, "train", **kw)
    train = materialize(train_ds, max_per_class=cfg.max_per_class)
    val = materialize(load_dataset(cfg.dataset, "val", **kw), max_per_class=cfg.max_per_class)
    mean, std = channel_stats(train.images)
    student_mode = teacher is not None
    loss_fn = LOSSES[cfg.loss if student_mode else "label_only"]
    on_the_fly = student_mode and cfg.attention_beta > 0
    logits_table = None
    if student_mode and not on_the_fly and cfg.loss != "label_only" and cfg.alpha < 1.0:
        cache = Path(cfg.teacher_logits) if cfg.teacher_logits else None
        if cache and cache.is_file():
            saved = torch.load(cache, map_location="cpu", weights_only=True)
            if saved["fingerprint"] == train.fingerprint and saved["logits"].shape[0] == len(train):
                logits_table = saved["logits"]
        if logits_table is None:
            logits_table = teacher_logits_table(teacher, train.images, mean, std)
            if cache:
                checkpoints.atomic_write_bytes(cache, lambda h: torch.save(
                    {"logits": logits_table, "fingerprint": train.fingerprint}, h))
    s_paths, t_paths = attention_pairs(model, teacher, size) if on_the_fly else ([], [])

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    state_path = out / "state.pt"
    history, best_val, bad_epochs, start_epoch, best_state = [], math.inf, 0, 0, None
    if cfg.resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        best_state, history = state["best_model"], state["history"]
        best_val, bad_epochs, start_epoch = state["best_val"], state["bad_epochs"], state["epoch"] + 1
        torch.set_rng_state(state["rng"])
        log.info("resumed %s at epoch %d", out, start_epoch + 1)

    started, stopped = time.perf_counter(), ""
    n = len(train)
    for epoch in range(start_epoch, cfg.epochs):
        if history and history[-1].get("stop"):
            break
        model.train()
        order = torch.randperm(n)
        total_loss, correct = 0.0, 0
        bar = tqdm(range(0, n, cfg.batch_size), desc=f"{cfg.role} epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for i in bar:
            idx = order[i:i + cfg.batch_size]
            flips = torch.rand(len(idx)) < 0.5 if cfg.augment else torch.zeros(len(idx), dtype=torch.bool)
            images = augment_batch(train.images[idx], flips, affine=cfg.augment and logits_table is None)
            x, y = to_model_input(images, mean, std), train.targets[idx]
            with record_activations(model, s_paths, keep_graph=True) as s_feats:
                logits = model(x)
            t_logits, t_feats = None, []
            if logits_table is not None:
                t_logits = logits_table[idx, flips.long()]
            elif on_the_fly:
                with torch.no_grad(), record_activations(teacher, t_paths) as t_store:
                    t_logits = teacher(x)
                t_feats = list(t_store.values())
            terms = [loss_fn(logits, t_logits, y, alpha=cfg.alpha, temperature=cfg.temperature)]
            if on_the_fly:
                terms.append(LOSSES["attention"](logits, t_logits, y, student_feats=list(s_feats.values()),
                                                 teacher_feats=t_feats, beta=cfg.attention_beta))
            loss = sum(terms)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        scheduler.step()
        val_loss, val_acc = evaluate_loss(model, val.images, val.targets, mean, std)
        record = {"epoch": epoch + 1, "train_loss": total_loss / n, "train_acc": correct / n,
                  "val_loss": val_loss, "val_acc": val_acc, "lr": optimizer.param_groups[0]["lr"],
                  "seconds": time.perf_counter() - started}
        if val_loss < best_val - 1e-4:
            best_val, bad_epochs = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        if bad_epochs >= cfg.patience:
            record["stop"] = stopped = f"early stop: no val-loss gain in {cfg.patience} epochs"
        if cfg.time_cap_s and time.perf_counter() - started > cfg.time_cap_s and epoch + 1 < cfg.epochs:
            record["stop"] = stopped = f"time cap of {cfg.time_cap_s:.0f} s reached"
        history.append(record)
        checkpoints.atomic_write_bytes(state_path, lambda h: torch.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "best_model": best_state, "history": history, "best_val": best_val, "bad_epochs": bad_epochs,
             "epoch": epoch, "rng": torch.get_rng_state()}, h))
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})
        if on_epoch_end:
            on_epoch_end(record)
        if stopped:
            break

    model.load_state_dict(best_state if best_state is not None else model.state_dict())
    model.eval()
    arch_args = {"depth": cfg.depth} if student_mode else {}
    meta = CheckpointMeta(
        arch="student" if student_mode else cfg.arch, num_classes=len(train.classes), classes=list(train.classes),
        input_size=size, mean=mean, std=std, role=cfg.role, dataset=cfg.dataset, arch_args=arch_args,
        train={**asdict(cfg), "history": history, "best_val_loss": best_val, "stopped": stopped,
               "train_images": n, "val_images": len(val), "skipped_files": len(getattr(train, "skipped", []))},
        kd=({"loss": cfg.loss, "alpha": cfg.alpha, "temperature": cfg.temperature,
             "attention_beta": cfg.attention_beta} if student_mode else None),
        seed=cfg.seed, data_fingerprint=data_fingerprint(train_ds),
        notes=f"{count_parameters(model):,} parameters")
    checkpoints.save(model, meta, out / "best.pt")
    return TrainResult(model, meta, history, stopped)


@torch.no_grad()
def evaluate_loss(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, mean, std,
                  batch_size: int = 128) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on an in-memory split (model put in eval mode)."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(images), batch_size):
        logits = model(to_model_input(images[i:i + batch_size], mean, std))
        y = targets[i:i + batch_size]
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    return loss / max(len(images), 1), correct / max(len(images), 1)


def fit(cfg: TrainConfig, on_epoch_end: Callable[[dict], None] | None = None,
        pretrained_weights: str | None = None) -> TrainResult:
    """Train a teacher from scratch (or from a local state dict) on ``cfg.dataset``."""
    cfg.role = "teacher"
    num_classes = len(DATASETS[cfg.dataset].classes)
    set_seed(cfg.seed)
    return _run(cfg, build_teacher(cfg.arch, num_classes, pretrained_weights), None, on_epoch_end)


def distill(cfg: TrainConfig, teacher: nn.Module, on_epoch_end: Callable[[dict], None] | None = None) -> TrainResult:
    """Distil ``teacher`` into a fresh student (``cfg.alpha=1`` or ``cfg.loss="label_only"``: no KD)."""
    cfg.role = "student"
    num_classes = len(DATASETS[cfg.dataset].classes)
    set_seed(cfg.seed)
    # The caller's teacher may be shared (a cached app model): work on a private copy.
    teacher = copy.deepcopy(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return _run(cfg, build_student(num_classes, depth=cfg.depth), teacher, on_epoch_end)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m core.train",
        description="Train a teacher, distil a student (and a label-only baseline), evaluate both on test.")
    parser.add_argument("--stage", choices=["teacher", "student", "both"], default="both",
                        help="what to train (default: both, teacher first)")
    parser.add_argument("--dataset", default="phantom", choices=sorted(DATASETS), help="dataset name")
    parser.add_argument("--root", default=None, help="data root (default: $KD_DATA_ROOT, ../shared/datasets, ./data)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<dataset>)")
    parser.add_argument("--teacher-arch", default="densenet121", help="teacher architecture (densenet121, resnet18)")
    parser.add_argument("--teacher", default=None, help="existing teacher checkpoint for --stage student")
    parser.add_argument("--pretrained-weights", default=None, help="local state dict to start the teacher from")
    parser.add_argument("--depth", type=int, default=5, help="student conv blocks, 3 to 8")
    parser.add_argument("--epochs", type=int, default=None, help="teacher epochs (default 8)")
    parser.add_argument("--student-epochs", type=int, default=None, help="student epochs (default 12)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, cosine decay)")
    parser.add_argument("--input-size", type=int, default=None, help="square input size (default: dataset's)")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the hard loss (1 = label-only)")
    parser.add_argument("--temperature", type=float, default=4.0, help="KD temperature T")
    parser.add_argument("--attention-beta", type=float, default=0.0, help="> 0 adds attention transfer")
    parser.add_argument("--baseline", action="store_true", help="also train the label-only student (alpha=1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--protocol", choices=["official", "pooled"], default="official",
                        help="official split, or the paper's pooled random split (leaky)")
    parser.add_argument("--patience", type=int, default=4, help="early-stopping patience in epochs")
    parser.add_argument("--max-per-class", type=int, default=None, help="cap training images per class")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue interrupted runs from their state.pt")
    parser.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    out = Path(args.out or f"runs/{args.dataset}")
    common = dict(dataset=args.dataset, root=args.root, input_size=args.input_size, seed=args.seed,
                  protocol=args.protocol, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                  resume=args.resume, threads=args.threads, max_per_class=args.max_per_class)
    ckpts = {}
    if args.stage in ("teacher", "both"):
        cfg = TrainConfig(arch=args.teacher_arch, epochs=args.epochs or 8, out=str(out / "teacher"), **common)
        fit(cfg, pretrained_weights=args.pretrained_weights)
        ckpts["teacher"] = out / "teacher" / "best.pt"
    else:
        if not args.teacher:
            parser.error("--stage student needs --teacher CKPT")
        ckpts["teacher"] = Path(args.teacher)
    if args.stage in ("student", "both"):
        teacher, _ = checkpoints.load(ckpts["teacher"])
        runs = {"student": (args.alpha, "kd")}
        if args.baseline:
            runs["student_label_only"] = (1.0, "label_only")
        for name, (alpha, loss) in runs.items():
            cfg = TrainConfig(depth=args.depth, epochs=args.student_epochs or 12, alpha=alpha, loss=loss,
                              temperature=args.temperature, attention_beta=args.attention_beta,
                              out=str(out / name), **common)
            distill(cfg, teacher)
            ckpts[name] = out / name / "best.pt"
    if not args.no_eval:
        from core.evaluate import evaluate_checkpoints, print_summary
        print_summary(evaluate_checkpoints(ckpts, root=args.root, write=True))
    else:
        for name, path in ckpts.items():
            print(f"{name}: {path}")


if __name__ == "__main__":
    main()
