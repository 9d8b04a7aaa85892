"""Class activation maps (Zhou et al., CVPR 2016) from one forward pass, no backward.

A model that ends in global average pooling and a linear layer computes
``logit_c = b_c + sum_k w[c, k] * mean_xy A_k(x, y)``, so ``CAM_c = sum_k w[c, k] * A_k`` is the class's logit
spread over the positions of the last feature map: its mean over positions is ``logit_c - b_c``. The model
says which layer is pooled and which linear layer reads it (``cam_head``, see `core.models.CamHead`).

Grad-CAM (the logit's gradient, spatially averaged, as channel weights) equals ReLU(CAM) up to the positive
factor ``1 / (h * w)`` exactly when it hooks the very tensor that is pooled: then ``d logit_c / d A_k(x, y)`` is
``w[c, k] / (h * w)`` at every position. That is the head's layer when it declares no ReLU after it
(``relu=False``), the default Grad-CAM layer of every such model (`core.models.gradcam_layer`): the student's last
block and the DenseNet teacher's ``relu5``. At a layer before a ReLU (the teacher's ``features.norm5``) the
gradient is zero wherever the activation is negative, the weights differ and so do the maps; at an earlier layer
they are different explanations altogether. Both maps are upsampled bilinearly after their ReLU, so the
upsampled maps agree too. So one forward gives every class's map at once (`all_class_maps`): the DenseNet
teacher's Grad-CAM for all its classes, the targets the student's evidence head learns (`core.teacher_evidence`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.featuremaps import capture_activations
from core.hooks import LayerError, resolve_layer
from core.models import CamHead

__all__ = ["cam_head", "pooled_activation", "class_activation_maps", "all_class_maps"]


def cam_head(model: nn.Module) -> CamHead:
    """The model's `CamHead`; a clear error for a model that does not end in pooling and a linear layer."""
    head = getattr(model, "cam_head", None)
    if not isinstance(head, CamHead):
        raise LayerError(f"{type(model).__name__} does not declare a cam_head (global pooling + linear layer); "
                         "CAM needs one, Grad-CAM does not")
    return head


def pooled_activation(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The activation the classifier pools (after the head's ReLU where it declares one), float32 (B, C, h, w),
    the logits (B, K) and the layer's label, from one forward pass."""
    head = cam_head(model)
    label, _ = resolve_layer(model, head.layer)
    # a model that returns its layers' outputs itself (the student) runs without hooks, whose registration and
    # dispatch cost about 4 % of the student's forward at 128 px; the outputs it keeps besides are small
    own_layers = callable(getattr(model, "forward_intermediates", None))
    capture = capture_activations(model, x, None if own_layers else [head.layer])
    if label not in capture.activations:
        raise LayerError(f"layer {label!r} did not run in the forward pass")
    act, logits = capture.activations[label].float(), capture.logits.float()
    return (F.relu(act) if head.relu else act), logits, label


def class_activation_maps(model: nn.Module, x: torch.Tensor, targets=None) -> dict:
    """CAMs of a batch at the input's size, from one forward pass.

    Args:
        x: normalised (B, 3, H, W) images. targets: B classes, one class for all, or None (each image's
            predicted class).

    Returns:
        ``{"maps": (B, H, W) float32 tensor, non-negative (ReLU, upsampled bilinearly, not normalised),
        "raw": (B, h, w) signed maps at the layer's resolution, "logits": (B, K), "targets": (B,) long,
        "layer": the pooled layer's label}``.
    """
    act, logits, label = pooled_activation(model, x)
    if targets is None:
        targets = logits.argmax(1)
    targets = torch.as_tensor(targets, dtype=torch.long, device=logits.device).reshape(-1).expand(len(x))
    weights = cam_head(model).classifier.weight.detach().float()[targets]  # (B, C)
    raw = torch.einsum("bc,bchw->bhw", weights, act)
    maps = F.interpolate(raw.clamp_min(0)[:, None], size=tuple(x.shape[-2:]), mode="bilinear",
                         align_corners=False)[:, 0]
    return {"maps": maps, "raw": raw, "logits": logits, "targets": targets, "layer": label}


def all_class_maps(model: nn.Module, x: torch.Tensor) -> dict:
    """Every class's ReLU(CAM) of a batch at the pooled layer's resolution, from one forward pass.

    Returns:
        ``{"maps": (B, K, h, w) float32, non-negative, not upsampled, "logits": (B, K), "layer": its label}``;
        ``maps[:, c]`` is ``class_activation_maps(model, x, c)["raw"].clamp_min(0)``.
    """
    act, logits, label = pooled_activation(model, x)
    weights = cam_head(model).classifier.weight.detach().float()  # (K, C)
    maps = torch.einsum("kc,bchw->bkhw", weights, act).clamp_min(0)
    return {"maps": maps, "logits": logits, "layer": label}
