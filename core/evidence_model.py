"""The evidence head itself: a small convolutional head on the student's pooled feature map, its designs, how it is
attached to a student, the maps it gives from one student forward, and the loss it learns the teacher's maps with.
How heads are trained, saved and shipped: `core.teacher_evidence`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.cam import cam_head, pooled_activation

__all__ = ["NO_HEAD", "HEAD_DESIGNS", "FIRST_DESIGN", "DESIGN_HIDDEN", "EvidenceHead", "evidence_head", "head_shape",
           "check_fits", "attach_head",
           "evidence_maps", "evidence_targets", "evidence_loss"]

_ATTRIBUTE = "evidence_head"
NO_HEAD = ("this model has no evidence head: train one with `python -m core.teacher_evidence DATASET` (it is "
           "written beside the student as student_evidence.pt) and attach it with "
           "core.evidence_model.attach_head(model, core.teacher_evidence.load_head(path, model))")


# What a head is made of (`EvidenceHead`): each maps the pooled layer's (B, C, h, w) to one channel per class.
# conv3x3: Conv3x3(C -> hidden) + ReLU + Conv1x1 -> classes (the first design; a cell reads its 3x3 neighbourhood).
# bottleneck: Conv1x1(C -> hidden) + ReLU + Conv3x3(hidden -> hidden) + ReLU + Conv1x1 -> classes: the same
#   neighbourhood, the wide 3x3 replaced by a narrow one (at C 256 and hidden 32, about 8x fewer multiply-adds).
# pointwise: Conv1x1(C -> hidden) + ReLU + Conv1x1 -> classes: each cell alone, the cheapest.
HEAD_DESIGNS = ("conv3x3", "bottleneck", "pointwise")
FIRST_DESIGN = "conv3x3"  # the heads saved before designs were named (their metadata has no "design")
DESIGN_HIDDEN = {"conv3x3": 64, "bottleneck": 32, "pointwise": 64}


class EvidenceHead(nn.Module):
    """A small convolutional head on the student's pooled feature map (``design``: one of `HEAD_DESIGNS`).

    ``forward``: (B, channels, h, w) activation -> (B, classes, h, w) logits over positions, per class.
    """

    def __init__(self, channels: int, classes: int, hidden: int | None = None, design: str = FIRST_DESIGN):
        super().__init__()
        if design not in HEAD_DESIGNS:
            raise ValueError(f"evidence head design must be one of {', '.join(HEAD_DESIGNS)}, got {design!r}")
        hidden = DESIGN_HIDDEN[design] if hidden is None else hidden
        self.channels, self.classes, self.hidden, self.design = int(channels), int(classes), int(hidden), design
        # attribute names kept from the first design, so its shipped state dicts load as they are
        if design == "bottleneck":
            self.reduce = nn.Conv2d(self.channels, self.hidden, 1)
        side = 1 if design == "pointwise" else 3
        self.conv = nn.Conv2d(self.hidden if design == "bottleneck" else self.channels, self.hidden, side,
                              padding=side // 2)
        self.relu = nn.ReLU()
        self.out = nn.Conv2d(self.hidden, self.classes, 1)

    def forward(self, act: torch.Tensor) -> torch.Tensor:
        if self.design == "bottleneck":
            act = self.relu(self.reduce(act))
        return self.out(self.relu(self.conv(act)))


def evidence_head(model: nn.Module) -> EvidenceHead | None:
    """The head attached to ``model`` (`attach_head`), or None."""
    head = model.__dict__.get(_ATTRIBUTE)
    return head if isinstance(head, EvidenceHead) else None


def head_shape(student: nn.Module) -> tuple[int, int]:
    """(channels of the pooled layer, classes) of a student: its classifier's input and output sizes."""
    classifier = cam_head(student).classifier
    return classifier.in_features, classifier.out_features


def check_fits(student: nn.Module, channels: int, classes: int, where: str) -> None:
    own_channels, own_classes = head_shape(student)
    if classes != own_classes:
        raise ValueError(f"{where}: classes {classes} do not match the student's {own_classes}")
    if channels != own_channels:
        raise ValueError(f"{where}: channels {channels} do not match the student's pooled layer's {own_channels}")


def attach_head(student: nn.Module, head: EvidenceHead) -> nn.Module:
    """Give ``student`` its head (replacing one it had), on the student's device, in eval mode; returns the student.

    Kept in the instance's ``__dict__``, not registered as a submodule: the student's ``state_dict``, ``modules()``
    and hooks are exactly as before, so a checkpoint saved from it and its sha256 do not change.

    Raises:
        ValueError: the head's classes or channels do not fit the student.
    """
    check_fits(student, head.channels, head.classes, "evidence head")
    device = next(student.parameters()).device
    student.__dict__[_ATTRIBUTE] = head.to(device).eval()
    return student


def evidence_maps(student: nn.Module, x: torch.Tensor) -> dict:
    """Every class's estimated teacher evidence from ONE forward of the student (the head runs on its pooled layer).

    Returns:
        ``{"maps": (B, K, h, w) float32, each map a distribution over its positions (softmax), "logits": (B, K) the
        student's logits, "layer": the pooled layer's label}``.

    Raises:
        LookupError: no head is attached (`NO_HEAD`).
    """
    head = evidence_head(student)
    if head is None:
        raise LookupError(NO_HEAD)
    act, logits, label = pooled_activation(student, x)
    with torch.inference_mode():
        out = head(act).float()
    maps = torch.softmax(out.flatten(2), dim=2).view_as(out)
    return {"maps": maps, "logits": logits, "layer": label}


def evidence_targets(teacher_maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The teacher's non-negative (B, K, h', w') maps as distributions over the positions of an ``size`` grid.

    Resized bilinearly (antialiased when shrinking, so every teacher cell counts), each map divided by its sum; a
    map with no positive evidence is uniform.
    """
    maps = teacher_maps.float().clamp_min(0)
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False, antialias=True).clamp_min(0)
    total = maps.sum((2, 3), keepdim=True)
    uniform = torch.full_like(maps, 1.0 / (maps.shape[-2] * maps.shape[-1]))
    return torch.where(total > 0, maps / total.clamp_min(torch.finfo(maps.dtype).tiny), uniform)


def evidence_loss(head_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax over positions of the head), per class and image, averaged (`evidence_targets`)."""
    log_q = F.log_softmax(head_logits.flatten(2), dim=2)
    p = targets.flatten(2)
    return (torch.special.xlogy(p, p) - p * log_q).sum(2).mean()
