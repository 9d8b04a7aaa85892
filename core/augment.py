"""What a training batch is made of: normalisation statistics, augmentation, views and teacher logits.

The teacher is augmented on the fly (a random flip and a small affine jitter per image and step).
Students learn from a fixed set of augmented views of every training image (`augmented_views`):
the distilled and the label-only student of one seed draw the same view of the same image at the
same step, and the teacher logits used for KD are those of exactly that view, computed once
(`teacher_logits_table`). So the two arms of the comparison differ only in their loss.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms import v2
from tqdm.auto import tqdm

from core import checkpoints
from core.inference import to_model_input

__all__ = ["channel_stats", "augment_batch", "augmented_views", "describe_augmentation",
           "teacher_logits_table", "cached_teacher_logits", "state_fingerprint"]

AFFINE = dict(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1))
TRAIN_AUGMENT = v2.RandomAffine(**AFFINE)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a uint8 (N, 3, H, W) tensor, on the [0, 1] scale."""
    x = images.float().div_(255.0)
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()


def augment_batch(images: torch.Tensor, flips: torch.Tensor, affine: bool) -> torch.Tensor:
    """Mild augmentation on a uint8 batch: per-sample horizontal flip (given) and small affine jitter."""
    images = torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)
    if affine:
        images = torch.stack([TRAIN_AUGMENT(img) for img in images])
    return images


def augmented_views(images: torch.Tensor, views: int, seed: int) -> torch.Tensor:
    """A fixed set of ``views`` augmented copies of every image, uint8 (N, views, 3, H, W).

    View 0 is the image, view 1 its mirror image, every further view a random flip plus affine
    jitter drawn from ``seed`` (the global random state is left alone), so a given seed always gives
    the same views.
    """
    if views < 1:
        raise ValueError(f"need at least one view, got {views}")
    out = [images] + ([images.flip(-1)] if views > 1 else [])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(views - 2):
            flips = torch.rand(len(images)) < 0.5
            out.append(augment_batch(images, flips, affine=True))
    return torch.stack(out, dim=1)


def describe_augmentation(teacher: bool, views: int) -> str:
    """The augmentation as it was applied, for the metadata."""
    affine = f"affine jitter ({AFFINE['degrees']} deg, {AFFINE['translate'][0]:.0%} shift, scale " \
             f"{AFFINE['scale'][0]}-{AFFINE['scale'][1]})"
    if teacher:
        return f"on the fly: random horizontal flip and {affine} per image and step"
    return (f"{views} fixed views per training image (the image" + (", its mirror" if views > 1 else "")
            + (f", {views - 2} random flip + {affine}" if views > 2 else "") + "), one drawn per image and step")


def state_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's parameters and buffers (names, shapes and values), to tell teachers apart."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def teacher_logits_table(teacher: nn.Module, views: torch.Tensor, mean, std, batch_size: int = 128) -> torch.Tensor:
    """Teacher logits of every view of every training image: views (N, V, 3, H, W) -> (N, V, C), on the CPU
    (batches go to the teacher's device)."""
    teacher.eval()
    device = next(teacher.parameters()).device
    n, v = views.shape[:2]
    flat = views.flatten(0, 1)
    rows = [teacher(to_model_input(flat[i:i + batch_size], mean, std).to(device)).cpu()
            for i in tqdm(range(0, len(flat), batch_size), desc="teacher logits", leave=False)]
    return torch.cat(rows).view(n, v, -1)


def cached_teacher_logits(cache: str | Path | None, teacher: nn.Module, views: torch.Tensor, mean, std,
                          key: dict) -> torch.Tensor:
    """The teacher-logit table of ``views``, read from the ``cache`` file when it was made for ``key``.

    ``key`` names what the table depends on (the training images, the views, the teacher's weights).

    Raises:
        ValueError: the cache file was made for another key (another teacher, data or views); it is
            never silently reused or overwritten.
    """
    cache = Path(cache) if cache else None
    if cache and cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved.get("key") != key:
            changed = sorted(k for k in key if (saved.get("key") or {}).get(k) != key[k])
            raise ValueError(f"{cache}: teacher logits made for another {', '.join(changed) or 'setting'}; "
                             "delete the file or use a new run folder")
        return saved["logits"]
    table = teacher_logits_table(teacher, views, mean, std)
    if cache:
        checkpoints.atomic_write_bytes(cache, lambda h: torch.save({"logits": table, "key": key}, h))
    return table
