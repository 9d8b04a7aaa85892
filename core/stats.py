"""Paired comparisons over seeds: the distilled minus the label-only student, same seed, same data order.

A seed fixes the student's initialisation and its batch order for both arms, so the per-seed
differences are paired. `paired_difference` gives their mean with a 95% Student-t interval and the
two-sided paired t-test p-value (a test on the per-seed differences, df = seeds - 1), plus the exact
sign-flip permutation p-value, which assumes no normality. Implemented in numpy and math only:
Student's t distribution via the regularised incomplete beta function (continued fraction).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = ["t_cdf", "t_quantile", "paired_difference"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    t2 = t * t
    # I_x(df/2, 1/2) with x = df / (df + t^2); near t = 0 the complement form keeps its precision
    tail = 0.5 * (_betainc(df / 2.0, 0.5, df / (df + t2)) if t2 > df else 1.0 - _betainc(0.5, df / 2.0, t2 / (df + t2)))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on `t_cdf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


EXACT_SIGN_FLIPS = 16  # up to this many pairs every sign flip is enumerated; beyond it a seeded sample of them
SAMPLED_SIGN_FLIPS = 20000


def paired_difference(a, b, level: float = 0.95, unit: str = "seeds") -> dict:
    """Mean of ``a - b`` over paired runs (e.g. seeds), its ``level`` t interval and two p-values.

    Returns:
        ``{"mean", "std", "ci": [low, high], "p_value" (paired t-test, two-sided), "p_sign_flip" (exact
        permutation test of the mean difference over all 2^n sign flips), "n", "differences",
        "test": "paired t-test over <unit>, df = n - 1"}``. With fewer than two pairs the interval and
        p-values are NaN. Above `EXACT_SIGN_FLIPS` pairs (e.g. images) the permutation p-value is estimated
        from `SAMPLED_SIGN_FLIPS` seeded random flips (the observed one counted, so it is never 0).
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0 or not np.isfinite(a).all() or not np.isfinite(b).all():
        raise ValueError(f"paired_difference needs two finite sequences of one length, got {a.size} and {b.size}")
    d = a - b
    n, mean = d.size, float(d.mean())
    out = {"mean": mean, "n": int(n), "differences": d.tolist(), "test": f"paired t-test over {unit}, df = {n - 1}"}
    if n < 2:
        return {**out, "std": 0.0, "ci": [math.nan, math.nan], "p_value": math.nan, "p_sign_flip": math.nan}
    std = float(d.std(ddof=1))
    se = std / math.sqrt(n)
    half = t_quantile(0.5 + level / 2, n - 1) * se
    if se > 0:
        p = 2.0 * (1.0 - t_cdf(abs(mean) / se, n - 1))
    else:
        p = 0.0 if mean != 0 else 1.0
    if n <= EXACT_SIGN_FLIPS:
        flips = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        p_flip = float(np.mean(np.abs(flips @ d) >= abs(d.sum()) - 1e-12))
    else:
        flips = np.random.default_rng(0).choice((1.0, -1.0), size=(SAMPLED_SIGN_FLIPS, n))
        extreme = int(np.sum(np.abs(flips @ d) >= abs(d.sum()) - 1e-12))
        p_flip = (extreme + 1) / (SAMPLED_SIGN_FLIPS + 1)
    return {**out, "std": std, "ci": [mean - half, mean + half], "p_value": float(min(max(p, 0.0), 1.0)),
            "p_sign_flip": p_flip}
