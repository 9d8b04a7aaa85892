"""Classification metrics for the teacher/student evaluation, in plain numpy.

Conventions: ``probs`` is an (N, C) array of class probabilities, ``labels`` and ``preds`` are (N,)
integer arrays in ``[0, C)``. Rows of a confusion matrix are true classes, columns predictions.
Every report returns plain floats, ints and lists (``json.dumps`` works on it); an undefined value
(an empty calibration bin, a class with no images) is ``None`` rather than NaN.

Calibration follows Guo et al., "On Calibration of Modern Neural Networks" (ICML 2017); the pair
test is McNemar's (1947), computed exactly as a binomial test on the discordant pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

# Softmax outputs in float32 sum to 1 only within ~1e-6; anything further off is not a distribution.
PROB_SUM_TOL = 1e-3
# Above this many discordant pairs the exact binomial sum is slow and the chi-square is accurate.
MCNEMAR_EXACT_MAX = 1000
# Resamples per vectorised bootstrap chunk: bounds memory to chunk * N * C floats.
BOOT_CHUNK = 100


class MetricsError(ValueError):
    """Inputs that cannot be scored (wrong shapes, labels out of range, non-probabilities)."""


# --------------------------------------------------------------------------- validation

def _check_labels(labels, num_classes: int | None = None, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise MetricsError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise MetricsError(f"{name} must be integers, got dtype {arr.dtype}; cast with .astype(int)")
    if arr.min() < 0 or (num_classes is not None and arr.max() >= num_classes):
        raise MetricsError(f"{name} must lie in [0, {num_classes}), got range [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64, copy=False)


def _check_probs(probs, labels=None, name: str = "probs") -> tuple[np.ndarray, np.ndarray | None]:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise MetricsError(f"{name} must be (N, C) with N >= 1 and C >= 2, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or p.min() < 0:
        raise MetricsError(f"{name} must be finite and non-negative (did you pass logits? apply softmax)")
    worst = float(np.abs(p.sum(axis=1) - 1).max())
    if worst > PROB_SUM_TOL:
        raise MetricsError(f"{name} rows must sum to 1 (worst row off by {worst:.3g}); apply softmax")
    y = None
    if labels is not None:
        y = _check_labels(labels, p.shape[1])
        if y.shape[0] != p.shape[0]:
            raise MetricsError(f"{name} has {p.shape[0]} rows but labels has {y.shape[0]} entries")
    return p, y


def _check_same_length(*arrays: np.ndarray) -> None:
    lengths = {a.shape[0] for a in arrays}
    if len(lengths) != 1:
        raise MetricsError(f"arrays must have the same length, got lengths {sorted(lengths)}")


# --------------------------------------------------------------------------- label metrics

def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """Counts ``M[i, j]`` = number of images of true class i predicted as class j.

    Returns:
        (C, C) int64 array; ``M.sum() == N``, ``M.trace()`` = correct predictions.
    """
    y, p = _check_labels(labels, num_classes), _check_labels(preds, num_classes, "preds")
    _check_same_length(y, p)
    return np.bincount(y * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def accuracy(labels, preds) -> float:
    """Fraction of correct predictions, ``mean(pred_i == y_i)``."""
    y, p = _check_labels(labels), _check_labels(preds, name="preds")
    _check_same_length(y, p)
    return float(np.mean(y == p))


def balanced_accuracy(labels, preds, num_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in ``labels``: ``mean_c TP_c / n_c``.

    Equals accuracy on balanced data and is not inflated by always predicting the majority class.
    Classes with no true images are skipped (their recall is undefined).
    """
    y = _check_labels(labels)
    p = _check_labels(preds, name="preds")
    c = num_classes or int(max(y.max(), p.max()) + 1)
    cm = confusion_matrix(y, p, c)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def _prf_from_confusion(cm: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-class precision, recall, F1 and the "present" mask from (..., C, C) confusion counts."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    predicted, support = cm.sum(axis=-2), cm.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        # F1 = 2PR / (P + R) = 2TP / (2TP + FP + FN); 0 when the class has no true positives.
        denom = 2 * tp + (predicted - tp) + (support - tp)
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    return precision, recall, f1, support, (support > 0) | (predicted > 0)


def precision_recall_f1(labels, preds, num_classes: int) -> dict:
    """Per-class precision, recall and F1, and their macro averages.

    ``precision_c = TP_c / (TP_c + FP_c)``, ``recall_c = TP_c / (TP_c + FN_c)``,
    ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``. A class never predicted gets precision 0 (and F1 0);
    a class with no true images gets recall 0. Macro averages are unweighted means over the classes
    that occur in ``labels`` or ``preds`` (as scikit-learn does by default), so a class absent from
    both does not drag the average down.

    Returns:
        dict with arrays ``precision``, ``recall``, ``f1``, ``support`` (shape (C,)) and floats
        ``macro_precision``, ``macro_recall``, ``macro_f1``.
    """
    cm = confusion_matrix(labels, preds, num_classes)
    precision, recall, f1, support, present = _prf_from_confusion(cm)
    return {
        "precision": precision, "recall": recall, "f1": f1, "support": support,
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
    }


# --------------------------------------------------------------------------- probability metrics

def expected_calibration_error(probs, labels, n_bins: int = 15) -> dict:
    """Expected and maximum calibration error with reliability-diagram data.

    Confidence ``conf_i = max_c p_ic`` is put in equal-width bins ``B_m = ((m-1)/M, m/M]``
    (the first bin also holds 0). With ``acc(B)`` the accuracy and ``conf(B)`` the mean confidence
    of a bin, ``ECE = sum_m |B_m|/N * |acc(B_m) - conf(B_m)|`` and ``MCE = max_m |acc - conf|``
    over non-empty bins (Guo et al. 2017).

    Returns:
        dict ``ece``, ``mce``, ``n_bins`` and ``reliability`` = dict of per-bin lists ``lower``,
        ``upper``, ``count``, ``mean_confidence``, ``accuracy`` (the last two ``None`` when empty).
    """
    if not isinstance(n_bins, int) or n_bins < 1:
        raise MetricsError(f"n_bins must be a positive int, got {n_bins!r}")
    p, y = _check_probs(probs, labels)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # m/M is correctly rounded, so a confidence of exactly 0.7 lands in (0.6, 0.7], never (0.7, 0.8].
    edges = np.arange(n_bins + 1) / n_bins
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=correct, minlength=n_bins)
    filled = count > 0
    mean_conf = np.divide(sum_conf, count, out=np.zeros(n_bins), where=filled)
    acc = np.divide(sum_acc, count, out=np.zeros(n_bins), where=filled)
    gap = np.abs(acc - mean_conf)
    return {
        "ece": float(np.sum(count / len(y) * gap)),
        "mce": float(gap[filled].max()),
        "n_bins": n_bins,
        "reliability": {
            "lower": edges[:-1].tolist(), "upper": edges[1:].tolist(), "count": count.tolist(),
            "mean_confidence": [float(v) if f else None for v, f in zip(mean_conf, filled)],
            "accuracy": [float(v) if f else None for v, f in zip(acc, filled)],
        },
    }


def brier_score(probs, labels) -> float:
    """Multi-class Brier score ``1/N sum_i sum_c (p_ic - [y_i = c])^2``, in [0, 2]; lower is better.

    A one-hot correct prediction scores 0; the uniform prediction scores ``(C - 1) / C``.
    """
    p, y = _check_probs(probs, labels)
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def kl_divergence(p_teacher, p_student, eps: float = 1e-12) -> float:
    """Mean over images of ``KL(p_t || p_s) = sum_c p_t,c log(p_t,c / p_s,c)``, in nats.

    Terms with ``p_t,c = 0`` contribute 0; ``p_s`` is clipped at ``eps`` so a confident miss is
    large but finite.
    """
    pt, _ = _check_probs(p_teacher, name="p_teacher")
    ps, _ = _check_probs(p_student, name="p_student")
    if pt.shape != ps.shape:
        raise MetricsError(f"teacher and student probs differ in shape: {pt.shape} vs {ps.shape}")
    # log(1) where p_t = 0 makes those terms 0 * finite = 0 without a 0 * log 0 NaN.
    ratio = np.log(np.where(pt > 0, pt, 1.0)) - np.log(np.clip(ps, eps, None))
    return float(np.mean(np.sum(pt * ratio, axis=1)))


# --------------------------------------------------------------------------- bootstrap

def batched_accuracy(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Accuracy of each resample: ``labels`` (B, N), ``probs`` (B, N, C) -> (B,)."""
    return np.mean(probs.argmax(axis=-1) == labels, axis=-1)


def batched_macro_f1(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Macro F1 (as in :func:`precision_recall_f1`) of each resample -> (B,)."""
    b, n, c = probs.shape
    preds = probs.argmax(axis=-1)
    # One bincount for all resamples: resample r owns the bins [r*C*C, (r+1)*C*C).
    codes = np.arange(b)[:, None] * c * c + labels * c + preds
    cm = np.bincount(codes.ravel(), minlength=b * c * c).reshape(b, c, c)
    _, _, f1, _, present = _prf_from_confusion(cm)
    return np.sum(f1 * present, axis=1) / present.sum(axis=1)


def bootstrap_ci(
    metric_fn: Callable,
    labels,
    probs,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    *,
    batched: bool = False,
) -> tuple[float, float, float]:
    """Percentile bootstrap confidence interval, resampling images with replacement.

    Draws ``n_boot`` resamples of the N images from ``numpy.random.default_rng(seed)``, scores each,
    and returns the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles (Efron & Tibshirani 1993).
    The same seed gives the same resamples for any metric, so intervals from one seed are paired.

    Args:
        metric_fn: ``metric_fn(labels, probs) -> float``; with ``batched=True`` it takes a stack of
            resamples ``labels`` (B, N), ``probs`` (B, N, C) and returns (B,) values (e.g.
            :func:`batched_accuracy`), which avoids a Python loop per resample.
        labels: (N,) int labels. probs: (N, C) probabilities.
        n_boot: number of resamples (>= 1). seed: RNG seed. level: interval coverage in (0, 1).

    Returns:
        ``(point, low, high)``: the metric on all images and the interval bounds.
    """
    if not 0 < level < 1:
        raise MetricsError(f"level must be in (0, 1), got {level}")
    if not isinstance(n_boot, int) or n_boot < 1:
        raise MetricsError(f"n_boot must be a positive int, got {n_boot!r}")
    p, y = _check_probs(probs, labels)
    n = len(y)
    rng = np.random.default_rng(seed)
    if batched:
        point = float(metric_fn(y[None], p[None])[0])
        stats = []
        for start in range(0, n_boot, BOOT_CHUNK):
            idx = rng.integers(0, n, size=(min(BOOT_CHUNK, n_boot - start), n))
            stats.append(np.asarray(metric_fn(y[idx], p[idx]), dtype=np.float64))
        values = np.concatenate(stats)
    else:
        point = float(metric_fn(y, p))
        values = np.empty(n_boot)
        for start in range(0, n_boot, BOOT_CHUNK):
            # Same draws as the batched path, so both give identical intervals for one seed.
            idx = rng.integers(0, n, size=(min(BOOT_CHUNK, n_boot - start), n))
            for k, row in enumerate(idx):
                values[start + k] = metric_fn(y[row], p[row])
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return point, float(low), float(high)


# --------------------------------------------------------------------------- reports

def never_predicted(confusion, classes: Sequence[str]) -> list[str]:
    """Classes that occur in the labels but that the model never predicts (a zero column, a non-zero row).

    Such a model may still look accurate on a skewed test set; its balanced accuracy shows it.
    """
    cm = np.asarray(confusion)
    return [str(name) for name, col, row in zip(classes, cm.sum(axis=0), cm.sum(axis=1)) if col == 0 and row > 0]


def _class_names(classes: Sequence[str] | None, num_classes: int) -> list[str]:
    if classes is None:
        return [str(i) for i in range(num_classes)]
    if len(classes) != num_classes:
        raise MetricsError(f"{len(classes)} class names given for {num_classes} probability columns")
    return [str(c) for c in classes]


def classification_report(
    probs, labels, classes: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Every single-model metric in one JSON-serialisable dict.

    Predictions are ``argmax`` of ``probs``. Intervals are 95% percentile bootstraps over images
    (``n_boot=0`` skips them and leaves ``None``).

    Returns:
        dict with keys ``n``, ``classes``, ``accuracy``, ``balanced_accuracy``, ``macro_precision``,
        ``macro_recall``, ``macro_f1``, ``per_class`` (dict of lists ``precision``, ``recall``, ``f1``,
        ``support``), ``confusion_matrix`` (list of rows, true x predicted), ``ece``, ``mce``,
        ``never_predicted`` (see :func:`never_predicted`), ``ece_bins``, ``reliability`` (see :func:`expected_calibration_error`), ``brier``,
        ``accuracy_ci`` and ``macro_f1_ci`` (``[low, high]``), ``ci_level``, ``n_boot``, ``seed``.
    """
    p, y = _check_probs(probs, labels)
    c = p.shape[1]
    names = _class_names(classes, c)
    preds = p.argmax(axis=1)
    prf = precision_recall_f1(y, preds, c)
    cal = expected_calibration_error(p, y, n_bins=15)
    acc_ci = f1_ci = None
    if n_boot:
        acc_ci = list(bootstrap_ci(batched_accuracy, y, p, n_boot, seed, 0.95, batched=True)[1:])
        f1_ci = list(bootstrap_ci(batched_macro_f1, y, p, n_boot, seed, 0.95, batched=True)[1:])
    return {
        "n": int(len(y)),
        "classes": names,
        "accuracy": accuracy(y, preds),
        "balanced_accuracy": balanced_accuracy(y, preds, c),
        "macro_precision": prf["macro_precision"],
        "macro_recall": prf["macro_recall"],
        "macro_f1": prf["macro_f1"],
        "per_class": {k: prf[k].tolist() for k in ("precision", "recall", "f1", "support")},
        "confusion_matrix": confusion_matrix(y, preds, c).tolist(),
        "never_predicted": never_predicted(confusion_matrix(y, preds, c), names),
        "ece": cal["ece"],
        "mce": cal["mce"],
        "ece_bins": cal["n_bins"],
        "reliability": cal["reliability"],
        "brier": brier_score(p, y),
        "accuracy_ci": acc_ci,
        "macro_f1_ci": f1_ci,
        "ci_level": 0.95,
        "n_boot": int(n_boot),
        "seed": int(seed),
    }


# --------------------------------------------------------------------------- teacher vs student

def agreement(preds_a, preds_b) -> float:
    """Fraction of images on which two models predict the same class."""
    a, b = _check_labels(preds_a, name="preds_a"), _check_labels(preds_b, name="preds_b")
    _check_same_length(a, b)
    return float(np.mean(a == b))


def flip_table(labels, preds_teacher, preds_student) -> dict:
    """2x2 correctness table of teacher (rows) against student (columns).

    Returns:
        dict with counts ``both_right``, ``teacher_right_student_wrong``,
        ``teacher_wrong_student_right``, ``both_wrong`` and ``table`` =
        ``[[both_right, teacher_right_student_wrong], [teacher_wrong_student_right, both_wrong]]``.
    """
    y = _check_labels(labels)
    t = _check_labels(preds_teacher, name="preds_teacher")
    s = _check_labels(preds_student, name="preds_student")
    _check_same_length(y, t, s)
    tr, sr = t == y, s == y
    counts = {
        "both_right": int(np.sum(tr & sr)),
        "teacher_right_student_wrong": int(np.sum(tr & ~sr)),
        "teacher_wrong_student_right": int(np.sum(~tr & sr)),
        "both_wrong": int(np.sum(~tr & ~sr)),
    }
    counts["table"] = [[counts["both_right"], counts["teacher_right_student_wrong"]],
                       [counts["teacher_wrong_student_right"], counts["both_wrong"]]]
    return counts


def mcnemar_test(labels, preds_a, preds_b) -> dict:
    """McNemar's test that two classifiers have the same error rate on the same images.

    With ``b`` = images only A gets right and ``c`` = images only B gets right (n = b + c), under
    H0 ``b ~ Binomial(n, 1/2)``. Exact two-sided p-value:
    ``p = min(1, 2 * sum_{k <= min(b, c)} C(n, k) / 2^n)``, statistic ``min(b, c)``.
    For n > 1000 it uses the continuity-corrected chi-square (1 dof):
    ``X^2 = max(|b - c| - 1, 0)^2 / n``, ``p = erfc(sqrt(X^2 / 2))``. No discordant pairs: p = 1.

    Returns:
        dict ``statistic``, ``p_value``, ``method`` ("exact" or "chi2_cc"), ``b``, ``c``,
        ``n_discordant``.
    """
    flips = flip_table(labels, preds_a, preds_b)
    b, c = flips["teacher_right_student_wrong"], flips["teacher_wrong_student_right"]
    n = b + c
    if n <= MCNEMAR_EXACT_MAX:
        tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
        stat, p, method = float(min(b, c)), min(1.0, 2 * tail / 2**n), "exact"
    else:
        stat = max(abs(b - c) - 1, 0) ** 2 / n
        p, method = math.erfc(math.sqrt(stat / 2)), "chi2_cc"
    return {"statistic": stat, "p_value": float(p), "method": method, "b": b, "c": c, "n_discordant": n}


def pair_report(labels, probs_teacher, probs_student, classes: Sequence[str] | None = None) -> dict:
    """Teacher-vs-student comparison on the same images, JSON-serialisable.

    Returns:
        dict ``n``, ``classes``, ``teacher_accuracy``, ``student_accuracy``, ``agreement``,
        ``per_class_agreement`` (list over true classes; ``None`` for a class with no images),
        ``flip_table`` (see :func:`flip_table`), ``mcnemar`` (see :func:`mcnemar_test`; A = teacher),
        ``kl_divergence`` (mean KL(teacher || student), nats).
    """
    pt, y = _check_probs(probs_teacher, labels, name="probs_teacher")
    ps, _ = _check_probs(probs_student, labels, name="probs_student")
    if pt.shape != ps.shape:
        raise MetricsError(f"teacher and student probs differ in shape: {pt.shape} vs {ps.shape}")
    c = pt.shape[1]
    t, s = pt.argmax(axis=1), ps.argmax(axis=1)
    same = t == s
    per_class = [float(same[y == k].mean()) if np.any(y == k) else None for k in range(c)]
    return {
        "n": int(len(y)),
        "classes": _class_names(classes, c),
        "teacher_accuracy": accuracy(y, t),
        "student_accuracy": accuracy(y, s),
        "agreement": agreement(t, s),
        "per_class_agreement": per_class,
        "flip_table": flip_table(y, t, s),
        "mcnemar": mcnemar_test(y, t, s),
        "kl_divergence": kl_divergence(pt, ps),
    }


def mean_and_spread(values) -> dict:
    """Summary of one metric over seeds: ``mean``, sample ``std`` (ddof=1; 0 for one value),
    ``min``, ``max``, ``n``."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise MetricsError(f"mean_and_spread needs at least one finite value, got {values!r}")
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "min": float(v.min()), "max": float(v.max()),
            "n": int(v.size)}

