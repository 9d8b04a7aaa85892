"""Distillation losses, registered by name so a new one is one function plus one registry line.

Every loss is called as ``fn(student_logits, teacher_logits, targets, *, student_feats,
teacher_feats, **hyperparameters)`` and returns a scalar tensor; the training loop sums the
configured terms. Unlike the paper's public code, the soft term here depends on the student's
logits, so it carries a gradient to the student (see tests/test_distill.py).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LOSSES: dict[str, Callable[..., torch.Tensor]] = {}


def register_loss(name: str):
    """Register a loss term under ``name``."""

    def _register(fn):
        LOSSES[name] = fn
        return fn

    return _register


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
            temperature: float, alpha: float) -> torch.Tensor:
    """Hinton knowledge-distillation loss on logits.

    ``alpha * CE(z_s, y) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``

    ``alpha`` weights the hard (label) loss, as in KD-FMV (Jiang et al., AAAI 2025,
    arXiv 2502.15959); ``alpha = 1`` is the label-only baseline. The ``T^2`` factor keeps the
    soft term's gradient scale independent of the temperature (Hinton, Vinyals and Dean 2015,
    "Distilling the Knowledge in a Neural Network", arXiv 1503.02531). The teacher is treated
    as a constant: no gradient flows into it.

    Args:
        student_logits: (B, C) student outputs before softmax.
        teacher_logits: (B, C) teacher outputs before softmax.
        targets: (B,) integer labels.
        temperature: softening temperature T > 0.
        alpha: weight of the hard loss, in [0, 1].
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    hard = F.cross_entropy(student_logits, targets)
    if alpha == 1.0:
        return hard
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return alpha * hard + (1.0 - alpha) * temperature**2 * soft


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention of a (B, C, H, W) activation: mean_c |A_c|^p, flattened and L2-normalised."""
    att = features.abs().pow(p).mean(dim=1)
    return F.normalize(att.flatten(1), dim=1)


def attention_transfer_loss(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor],
                            p: float = 2.0) -> torch.Tensor:
    """Attention transfer (Zagoruyko and Komodakis, ICLR 2017, arXiv 1612.03928).

    ``sum_j || Q_s^j / ||Q_s^j|| - Q_t^j / ||Q_t^j|| ||_2`` averaged over the batch, where ``Q`` is
    the attention map of paired layers. The student learns *where* the teacher looks, which is
    what its feature maps are later used to explain. Teacher maps are resized to the student's.
    """
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError("attention transfer needs the same, non-zero number of student and teacher layers")
    total = student_feats[0].new_zeros(())
    for fs, ft in zip(student_feats, teacher_feats):
        ft = ft.detach()
        if ft.shape[-2:] != fs.shape[-2:]:
            ft = F.adaptive_avg_pool2d(ft, fs.shape[-2:])
        total = total + (attention_map(fs, p) - attention_map(ft, p)).norm(dim=1).mean()
    return total


@register_loss("kd")
def _kd_term(student_logits, teacher_logits, targets, *, temperature: float = 4.0, alpha: float = 0.5,
             **_):
    return kd_loss(student_logits, teacher_logits, targets, temperature=temperature, alpha=alpha)


@register_loss("label_only")
def _label_only_term(student_logits, teacher_logits, targets, **_):
    return F.cross_entropy(student_logits, targets)


@register_loss("attention")
def _attention_term(student_logits, teacher_logits, targets, *, student_feats=None, teacher_feats=None,
                    beta: float = 1000.0, **_):
    # beta = 1e3 is the paper's setting for maps normalised this way.
    return beta * attention_transfer_loss(student_feats, teacher_feats)
