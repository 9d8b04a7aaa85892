"""Paired seed comparisons against scipy (a test-only dependency) and known answers."""

import math

import numpy as np
import pytest
from scipy import stats as sp

from core.stats import paired_difference, t_cdf, t_quantile


@pytest.mark.parametrize("df", [1, 2, 4, 9, 30])
@pytest.mark.parametrize("t", [-3.1, -0.4, 0.0, 0.7, 2.5, 12.0])
def test_t_distribution_matches_scipy(t, df):
    assert t_cdf(t, df) == pytest.approx(sp.t.cdf(t, df), abs=1e-10)


@pytest.mark.parametrize("df", [1, 4, 9])
@pytest.mark.parametrize("p", [0.025, 0.5, 0.975])
def test_t_quantile_matches_scipy(p, df):
    assert t_quantile(p, df) == pytest.approx(sp.t.ppf(p, df), abs=1e-8)


def test_paired_difference_matches_scipys_paired_t_test():
    a = np.array([0.91, 0.88, 0.93, 0.90, 0.92])
    b = np.array([0.89, 0.87, 0.90, 0.90, 0.88])
    result = paired_difference(a, b)
    expected = sp.ttest_rel(a, b)
    assert result["p_value"] == pytest.approx(expected.pvalue, rel=1e-8)
    d = a - b
    half = sp.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert result["ci"] == pytest.approx([d.mean() - half, d.mean() + half], rel=1e-8)
    assert result["n"] == 5 and result["differences"] == pytest.approx(d.tolist())
    # sign flips: only the observed signs and their mirror reach |sum| = 0.10 or more among 32 patterns
    assert result["p_sign_flip"] == pytest.approx(sp.permutation_test(
        (d,), lambda x: np.mean(x), permutation_type="samples", alternative="two-sided", n_resamples=np.inf).pvalue)


def test_no_difference_and_bad_input():
    same = paired_difference([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same["mean"] == 0 and same["p_value"] == 1.0 and same["ci"] == [0.0, 0.0]
    one = paired_difference([0.9], [0.8])
    assert one["mean"] == pytest.approx(0.1) and math.isnan(one["p_value"])
    with pytest.raises(ValueError):
        paired_difference([0.9, 0.8], [0.8])
    with pytest.raises(ValueError):
        paired_difference([float("nan")], [0.8])


def test_paired_difference_over_many_images_samples_its_sign_flips():
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 1.0, 200)
    b = a - rng.normal(0.15, 1.0, 200)  # a modest paired effect over 200 images
    result = paired_difference(a, b, unit="images")
    assert result["n"] == 200 and result["test"] == "paired t-test over images, df = 199"
    assert result["p_value"] == pytest.approx(sp.ttest_rel(a, b).pvalue, rel=1e-6)
    # the permutation and the t-test agree closely at this n; a large effect is never "p = 0"
    assert abs(result["p_sign_flip"] - result["p_value"]) < 0.02
    strong = paired_difference(a + 5.0, a, unit="images")
    assert 0 < strong["p_sign_flip"] < 1e-3
