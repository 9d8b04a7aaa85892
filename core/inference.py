"""Preprocess images exactly as in training and predict class probabilities."""

from __future__ import annotations

import math

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from core.checkpoints import CheckpointMeta
from core.images import ImageError, check_size, to_rgb
from core.models import smallest_side_needed


class PredictionError(ValueError):
    """A prediction that cannot be trusted (non-finite model output or input), with the reason."""


def _expected_input(model: nn.Module) -> tuple[int | None, torch.dtype | None]:
    """The channels of the model's first convolution and the dtype of its weights (None where it has none)."""
    channels = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    weight = next(model.parameters(), None)
    return channels, None if weight is None else weight.dtype


def check_input(model: nn.Module, x, caller: str = "predict", single: bool = False,
                error: type[ValueError] = PredictionError) -> None:
    """Refuse, before any pass, a tensor the model cannot take: `predict_logits` and every explainer share this.

    Args:
        model: the model the tensor is for (its first convolution's channels and its weights' dtype).
        x: what should be a normalised (B, C, H, W) float tensor (`preprocess`).
        caller: named in the message about the shape ("predict", "explain").
        single: exactly one image (B = 1), as an explanation takes.
        error: the error raised: `PredictionError`, or an explainer's `core.explainer.ExplainError`.

    Raises:
        ``error``: not a tensor; not 4-D, an empty batch, or more than one image when ``single``; channels or
            dtype other than the model's; NaN or inf values; a side smaller than the model's pooling needs
            (`core.models.smallest_side_needed`).
    """
    shape = "one image shaped (1, C, H, W)" if single else "a (B, C, H, W) batch"
    if not isinstance(x, torch.Tensor):
        raise error(f"{caller} needs {shape} as a torch tensor, got {type(x).__name__}")
    if x.ndim != 4 or (single and x.shape[0] != 1):
        raise error(f"{caller} needs {shape}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise error(f"{caller} got an empty batch")
    channels, dtype = _expected_input(model)
    if channels is not None and x.shape[1] != channels:
        raise error(f"the input has {x.shape[1]} channel(s); the model takes {channels} "
                    "(core.inference.preprocess turns any image into RGB)")
    if not x.is_floating_point() or (dtype is not None and x.dtype != dtype):
        wanted = str(dtype or torch.float32).removeprefix("torch.")
        raise error(f"the input is {str(x.dtype).removeprefix('torch.')}; the model takes {wanted} "
                    "(core.inference.preprocess normalises images)")
    # a sum is finite only when every value is (NaN and inf carry through it), and costs a fiftieth of an
    # element-wise test, which then runs only to tell a non-finite value from a sum that overflowed
    if not math.isfinite(float(x.sum())) and not bool(torch.isfinite(x).all()):
        raise error("the input holds NaN or inf values")
    smallest = smallest_side_needed(model, min(x.shape[-2:]))
    if smallest is not None:  # else a RuntimeError from deep inside the pass, about a pooled size
        raise error(f"the input is {x.shape[-2]}x{x.shape[-1]} px; this model classifies images of at least "
                    f"{smallest} px per side (core.inference.preprocess resizes to the checkpoint's size)")


def to_model_input(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalise a (B, 3, H, W) batch in [0, 1] (float) or 0..255 (uint8) with per-channel mean/std."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    mean_t = torch.as_tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


def batch_for(meta: CheckpointMeta, images: torch.Tensor) -> torch.Tensor:
    """A (B, 3, H, W) batch (uint8 or float in [0, 1]) resized to the model's input side and normalised.

    Lets models trained at different sizes share one decoded batch (the dataset is decoded once, at its size).
    """
    if images.shape[-2:] != (meta.input_size, meta.input_size):
        images = resize_batch(images, meta.input_size)
    return to_model_input(images, meta.mean, meta.std)


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """A uint8 or float batch resized to ``size`` (antialiased), returned as float in [0, 1]."""
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)


def resize_transform(input_size: int) -> v2.Compose:
    """PIL RGB -> float tensor (3, S, S) in [0, 1]; the one resize used in training and inference."""
    return v2.Compose([v2.PILToTensor(), v2.Resize((input_size, input_size), antialias=True),
                       v2.ToDtype(torch.float32, scale=True)])


def preprocess(meta: CheckpointMeta, pil_images: Sequence[Image.Image]) -> torch.Tensor:
    """Turn PIL images of any mode into the normalised (B, 3, S, S) batch the model was trained on."""
    if isinstance(pil_images, Image.Image):
        pil_images = [pil_images]
    if not pil_images:
        raise ValueError("preprocess needs at least one image")
    for i, img in enumerate(pil_images):
        if not isinstance(img, Image.Image):
            raise ImageError(f"image {i}: expected a PIL image, got {type(img).__name__}")
        check_size(img, f"image {i}")  # the same minimum side as uploads and dataset files
    transform = resize_transform(meta.input_size)
    batch = torch.stack([transform(to_rgb(img)) for img in pil_images])
    return to_model_input(batch, meta.mean, meta.std)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Logits (float32) for an already normalised batch, in chunks (the model must be in eval mode).

    Raises:
        PredictionError: a batch the model cannot take (`check_input`), or the model's outputs are not finite
            (broken weights would otherwise show NaN probabilities as a class).
    """
    if model.training:
        raise ValueError("predict needs the model in eval mode (call model.eval())")
    check_input(model, x)
    out = []
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size]).float()
        finite = torch.isfinite(logits).all(dim=1)
        if not bool(finite.all()):
            raise PredictionError(f"the model's outputs are not finite (NaN or inf) for {int((~finite).sum())} of "
                                  f"{len(logits)} image(s) in batch {i // batch_size}; its weights are broken")
        out.append(logits)
    return torch.cat(out)


def predict_tensor(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Class probabilities for an already normalised batch (`predict_logits`, then softmax)."""
    return torch.softmax(predict_logits(model, x, batch_size), dim=1).numpy()


def predict(model: nn.Module, meta: CheckpointMeta, pil_images: Sequence[Image.Image]) -> np.ndarray:
    """Class probabilities (B, C) for PIL images, using the preprocessing stored in ``meta``."""
    return predict_tensor(model, preprocess(meta, pil_images))
