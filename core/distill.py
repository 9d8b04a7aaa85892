"""Distillation losses, registered by name: a new loss is one function plus one registry line.

Every registered constructor takes its hyperparameters as keywords and returns a `LossTerm`, which
is called with one `LossInputs`; `build_loss` sums the configured terms. Hyperparameters are bound
and checked when the loss is built, and an unknown or misspelt one raises there, before training
starts. Unlike the paper's public code, the soft KD term depends on the student's logits, so it
carries a gradient to the student (see tests/test_distill.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.hooks import record_activations
from core.models import feature_layers
from core.registry import Registry

__all__ = ["LossInputs", "LossTerm", "Loss", "LOSSES", "build_loss", "kd_loss", "dkd_loss", "dist_loss",
           "attention_map", "attention_transfer_loss", "attention_pairs"]


@dataclass
class LossInputs:
    """What one training step hands to every loss term."""

    student_logits: torch.Tensor  # (B, C)
    targets: torch.Tensor  # (B,) labels
    teacher_logits: torch.Tensor | None = None  # (B, C), for terms that use the teacher
    student_feats: Sequence[torch.Tensor] = ()  # paired intermediate activations, for feature terms
    teacher_feats: Sequence[torch.Tensor] = ()


@dataclass(frozen=True)
class LossTerm:
    """A loss with its hyperparameters bound; ``uses_teacher`` / ``uses_features`` say what it reads."""

    name: str
    fn: Callable[[LossInputs], torch.Tensor]
    uses_teacher: bool = False
    uses_features: bool = False

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        return self.fn(inputs)


LOSSES = Registry("loss")


class Loss:
    """The sum of several bound terms (e.g. KD plus attention transfer)."""

    def __init__(self, terms: Sequence[LossTerm]):
        if not terms:
            raise ValueError("a loss needs at least one term")
        self.terms = list(terms)

    @property
    def uses_teacher(self) -> bool:
        return any(t.uses_teacher for t in self.terms)

    @property
    def uses_features(self) -> bool:
        return any(t.uses_features for t in self.terms)

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        return sum(term(inputs) for term in self.terms)


def build_loss(spec: Mapping[str, Mapping[str, Any]]) -> Loss:
    """``{"kd": {"alpha": 0.7, "temperature": 4}, "attention": {"beta": 1000}}`` -> one `Loss`."""
    return Loss([LOSSES.build(name, **dict(args)) for name, args in spec.items()])


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
            temperature: float, alpha: float) -> torch.Tensor:
    """Hinton knowledge-distillation loss on logits.

    ``alpha * CE(z_s, y) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``

    ``alpha`` weights the hard (label) loss, as in KD-FMV (Jiang et al., AAAI 2025); ``alpha = 1`` is
    the label-only baseline. The ``T^2`` factor keeps the soft term's gradient scale independent of
    the temperature (Hinton, Vinyals and Dean 2015). The teacher is treated as a constant: no
    gradient flows into it.
    """
    _check_kd(alpha, temperature)
    hard = F.cross_entropy(student_logits, targets)
    if alpha == 1.0:
        return hard
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return alpha * hard + (1.0 - alpha) * temperature**2 * soft


def _check_kd(alpha: float, temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
             alpha: float, beta: float, temperature: float) -> torch.Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022) without its cross-entropy: ``T^2 (alpha TCKD + beta NCKD)``.

    TCKD is the KL between the teacher's and the student's binary split (the target class, the rest); NCKD the KL
    between their distributions over the other classes alone. Hinton's KL is ``TCKD + (1 - p_t[target]) NCKD``:
    the teacher's knowledge about the classes it does not predict is damped exactly where the teacher is sure, and
    a free ``beta`` gives it back (the part a student needs to learn the rare classes' similarities).
    """
    n, c = student_logits.shape
    other = torch.ones_like(student_logits, dtype=torch.bool).scatter_(1, targets[:, None], False)

    def split(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_p = F.log_softmax(logits / temperature, dim=1)
        log_rest = torch.logsumexp(log_p[other].view(n, c - 1), dim=1)
        binary = torch.stack([log_p.gather(1, targets[:, None])[:, 0], log_rest], dim=1)
        return binary, F.log_softmax(logits[other].view(n, c - 1) / temperature, dim=1)

    s_binary, s_other = split(student_logits)
    t_binary, t_other = split(teacher_logits.detach())
    tckd = F.kl_div(s_binary, t_binary, reduction="batchmean", log_target=True)
    nckd = F.kl_div(s_other, t_other, reduction="batchmean", log_target=True)
    return temperature**2 * (alpha * tckd + beta * nckd)


def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, beta: float, gamma: float,
              temperature: float) -> torch.Tensor:
    """DIST (Huang et al., NeurIPS 2022) without its cross-entropy: ``T^2 (beta inter + gamma intra)``.

    Inter-class: one minus the Pearson correlation of the two softened predictions of each image, averaged over
    images; intra-class: the same down each class's column of the batch, averaged over classes. Matching the
    teacher's ranking of classes and of images, rather than its exact probabilities, spares a small student the
    part of a strong teacher's confidence it cannot reach.
    """
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits.detach() / temperature, dim=1)

    def one_minus_pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1 - F.cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True), dim=1, eps=1e-8)
    inter = one_minus_pearson(p_s, p_t).mean()
    intra = one_minus_pearson(p_s.T, p_t.T).mean()
    return temperature**2 * (beta * inter + gamma * intra)


def _check_weights(**weights: float) -> None:
    for name, value in weights.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number at least 0, got {value}")


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Spatial attention of a (B, C, H, W) activation: mean_c A_c^2, flattened and L2-normalised."""
    return F.normalize(features.pow(2).mean(dim=1).flatten(1), dim=1)


def attention_transfer_loss(student_feats: Sequence[torch.Tensor],
                            teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention transfer (Zagoruyko and Komodakis, ICLR 2017) in the form of the authors' code.

    ``sum_j mean_{b,i} (Q_s^j - Q_t^j)^2`` over paired layers, with ``Q`` the L2-normalised attention
    map of `attention_map`. The paper writes a norm of the difference per image; its authors' code
    (which the paper's beta = 1e3 belongs to) averages the squared difference over the batch and the
    map's positions, as here. Teacher activations are pooled to the student's resolution.
    """
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError("attention transfer needs the same, non-zero number of student and teacher layers")
    total = student_feats[0].new_zeros(())
    for fs, ft in zip(student_feats, teacher_feats):
        ft = ft.detach()
        if ft.shape[-2:] != fs.shape[-2:]:
            ft = F.adaptive_avg_pool2d(ft, fs.shape[-2:])
        total = total + (attention_map(fs) - attention_map(ft)).pow(2).mean()
    return total


def attention_pairs(student: nn.Module, teacher: nn.Module, size: int) -> tuple[list[str], list[str]]:
    """Pair the middle student blocks with the teacher layers of the nearest spatial resolution."""
    def sizes(model):
        with record_activations(model) as store, torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
        return {p: t.shape[-1] for (_, p), t in zip(feature_layers(model), store.values())}
    s_sizes, t_sizes = sizes(student), sizes(teacher)
    s_paths = [p for _, p in feature_layers(student)][1:-1]
    t_paths = [min(t_sizes, key=lambda t: (abs(math.log2(t_sizes[t] / s_sizes[s])), t)) for s in s_paths]
    return s_paths, t_paths


@LOSSES.register("kd")
def kd(alpha: float = 0.5, temperature: float = 4.0) -> LossTerm:
    _check_kd(alpha, temperature)
    return LossTerm("kd", lambda b: kd_loss(b.student_logits, b.teacher_logits, b.targets, temperature=temperature,
                                            alpha=alpha), uses_teacher=alpha < 1.0)


@LOSSES.register("dkd")
def dkd(ce_weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> LossTerm:
    # The defaults are the authors' for small from-scratch students (CIFAR-100); mdistiller's linear warm-up of the
    # KD part over the first epochs is left out (a term here does not know the epoch).
    _check_weights(ce_weight=ce_weight, alpha=alpha, beta=beta)
    _check_kd(0.0, temperature)
    return _plus_cross_entropy("dkd", ce_weight, (lambda b: dkd_loss(
        b.student_logits, b.teacher_logits, b.targets, alpha=alpha, beta=beta, temperature=temperature))
        if alpha > 0 or beta > 0 else None)


@LOSSES.register("dist")
def dist(ce_weight: float = 1.0, beta: float = 2.0, gamma: float = 2.0, temperature: float = 4.0) -> LossTerm:
    # The defaults are the authors' for CIFAR-100 (small images, students trained from scratch).
    _check_weights(ce_weight=ce_weight, beta=beta, gamma=gamma)
    _check_kd(0.0, temperature)
    return _plus_cross_entropy("dist", ce_weight, (lambda b: dist_loss(
        b.student_logits, b.teacher_logits, beta=beta, gamma=gamma, temperature=temperature))
        if beta > 0 or gamma > 0 else None)


def _plus_cross_entropy(name: str, ce_weight: float, soft: Callable[[LossInputs], torch.Tensor] | None) -> LossTerm:
    """A term of ``ce_weight`` times the label loss plus a teacher term (None: weighted to nothing)."""
    return LossTerm(name, lambda b: ce_weight * F.cross_entropy(b.student_logits, b.targets)
                    + (soft(b) if soft is not None else 0.0), uses_teacher=soft is not None)


@LOSSES.register("label_only")
def label_only() -> LossTerm:
    return LossTerm("label_only", lambda b: F.cross_entropy(b.student_logits, b.targets))


@LOSSES.register("label_smoothing")
def label_smoothing(smoothing: float = 0.1) -> LossTerm:
    # The control for KD: softer targets without a teacher (Szegedy et al. 2016).
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    return LossTerm("label_smoothing",
                    lambda b: F.cross_entropy(b.student_logits, b.targets, label_smoothing=smoothing))


@LOSSES.register("attention")
def attention(beta: float = 1000.0) -> LossTerm:
    # beta = 1e3 with the loss halved, as in the authors' code for this form (see attention_transfer_loss).
    if not beta >= 0:
        raise ValueError(f"beta must be non-negative, got {beta}")
    return LossTerm("attention", lambda b: beta / 2 * attention_transfer_loss(b.student_feats, b.teacher_feats),
                    uses_teacher=True, uses_features=True)
