"""Which teacher layer does each student layer resemble? Linear CKA between all layer pairs."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.featuremaps import capture_activations

__all__ = ["LayerCorrespondence", "linear_cka", "cka_matrix"]


def _centred_gram(X: torch.Tensor, debiased: bool) -> torch.Tensor:
    """Gram matrix of the rows of X, centred; debiased: the U-statistic form of Song et al. (2012)."""
    gram = X @ X.T
    n = gram.shape[0]
    if not debiased:
        means = gram.mean(0)
        return gram - means[:, None] - means[None, :] + means.mean()
    gram = gram.clone().fill_diagonal_(0)
    means = gram.sum(0) / (n - 2)
    means = means - means.sum() / (2 * (n - 1))
    return (gram - means[:, None] - means[None, :]).fill_diagonal_(0)


def linear_cka(X: torch.Tensor | np.ndarray, Y: torch.Tensor | np.ndarray, *, debiased: bool = False) -> float:
    """Linear CKA (Kornblith et al. 2019) between two representations of the same n examples.

    ``CKA = <K_c, L_c>_F / (||K_c||_F ||L_c||_F)`` with centred Gram matrices ``K_c`` of ``X X^T``.
    Computed through the n x n Gram matrices, so wide layers cost O(n^2 p). X: (n, p), Y: (n, q);
    extra dimensions are flattened. Invariant to orthogonal transforms and isotropic scaling.

    With few examples and wide layers (n << p) the plain estimate is biased towards 1 even for
    unrelated representations; ``debiased=True`` uses the unbiased HSIC estimator (Song et al. 2012,
    as in Nguyen, Raghu & Kornblith 2021), which needs n >= 4 and may return NaN on degenerate input.
    """
    X = torch.as_tensor(X).flatten(1).double()
    Y = torch.as_tensor(Y).flatten(1).double()
    n_min = 4 if debiased else 2
    if X.shape[0] != Y.shape[0] or X.shape[0] < n_min:
        raise ValueError(f"CKA needs the same n >= {n_min} examples on both sides, got {X.shape[0]} and {Y.shape[0]}")
    K, L = _centred_gram(X, debiased), _centred_gram(Y, debiased)
    kk, ll = (K * K).sum(), (L * L).sum()
    if kk <= 0 or ll <= 0:
        return float("nan") if debiased else 0.0
    return float((K * L).sum() / torch.sqrt(kk * ll))


@dataclass
class LayerCorrespondence:
    """CKA between every teacher layer (rows) and every student layer (columns)."""

    matrix: np.ndarray
    teacher_layers: list[str]
    student_layers: list[str]

    def best_teacher_indices(self) -> list[int]:
        """For each student layer, the row of the teacher layer it is most similar to."""
        return [int(self.matrix[:, j].argmax()) for j in range(len(self.student_layers))]

    def best_teacher_layer(self) -> dict[str, str]:
        """For each student layer, the teacher layer it is most similar to."""
        return {s: self.teacher_layers[i] for s, i in zip(self.student_layers, self.best_teacher_indices())}


def _layer_features(model: nn.Module, images: torch.Tensor, batch_size: int, pool: int | None) -> OrderedDict:
    feats: OrderedDict[str, list[torch.Tensor]] = OrderedDict()
    for start in range(0, len(images), batch_size):
        acts, _ = capture_activations(model, images[start:start + batch_size])
        for label, a in acts.items():
            if pool and (a.shape[-1] > pool or a.shape[-2] > pool):
                a = F.adaptive_avg_pool2d(a, pool)  # bounds memory at O(n C pool^2)
            feats.setdefault(label, []).append(a.flatten(1).double().cpu())
    return OrderedDict((label, torch.cat(chunks)) for label, chunks in feats.items())


def cka_matrix(teacher: nn.Module, student: nn.Module, images: torch.Tensor, *,
               student_images: torch.Tensor | None = None, batch_size: int = 16,
               pool: int | None = 8, debiased: bool = True) -> LayerCorrespondence:
    """Linear CKA between all teacher and student layers over a batch of images.

    Args:
        images: normalised (N, 3, H, W) batch, N >= 4 (a few dozen images give stable values).
        student_images: the same images preprocessed for the student, if it differs.
        pool: activations larger than ``pool x pool`` are average-pooled to it before flattening.
        debiased: use the debiased estimator (default: layers are far wider than the number of
            images, where plain CKA is close to 1 for any pair; see `linear_cka`).
    """
    t_feats = _layer_features(teacher, images, batch_size, pool)
    s_feats = _layer_features(student, images if student_images is None else student_images, batch_size, pool)
    matrix = np.array([[linear_cka(t, s, debiased=debiased) for s in s_feats.values()] for t in t_feats.values()])
    return LayerCorrespondence(matrix, list(t_feats), list(s_feats))
