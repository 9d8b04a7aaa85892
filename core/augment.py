"""What a training batch is made of: normalisation statistics, augmentation, and cached teacher logits."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.transforms import v2
from tqdm.auto import tqdm

from core import checkpoints
from core.inference import to_model_input

__all__ = ["channel_stats", "augment_batch", "teacher_logits_table", "cached_teacher_logits"]


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


def cached_teacher_logits(cache: str | Path | None, teacher: nn.Module, train, mean, std) -> torch.Tensor:
    """The teacher-logit table of the training images, read from the ``cache`` file when it matches them."""
    cache = Path(cache) if cache else None
    if cache and cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved["fingerprint"] == train.fingerprint and saved["logits"].shape[0] == len(train):
            return saved["logits"]
    table = teacher_logits_table(teacher, train.images, mean, std)
    if cache:
        checkpoints.atomic_write_bytes(cache, lambda h: torch.save({"logits": table, "fingerprint": train.fingerprint}, h))
    return table
