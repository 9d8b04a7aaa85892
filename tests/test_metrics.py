"""Metrics checked against worked examples whose arithmetic is written out beside each assert."""

import json
import math

import numpy as np
import pytest

from core import metrics as M


def onehot(idx, c):
    return np.eye(c)[np.asarray(idx)]


def flip_arrays(both_right, t_only, s_only, both_wrong):
    """Binary labels and teacher/student predictions realising the given flip-table counts."""
    blocks = [(both_right, 0, 0), (t_only, 0, 1), (s_only, 1, 0), (both_wrong, 1, 1)]
    labels = np.zeros(sum(b[0] for b in blocks), dtype=int)
    t = np.concatenate([np.full(n, tw) for n, tw, _ in blocks]).astype(int)  # 0 = right, 1 = wrong
    s = np.concatenate([np.full(n, sw) for n, _, sw in blocks]).astype(int)
    return labels, t, s


# ---------------------------------------------------------------- label metrics

# 3 classes, 7 images.
Y3 = np.array([0, 0, 1, 1, 2, 2, 2])
P3 = np.array([0, 1, 1, 1, 2, 0, 2])


def test_confusion_matrix_three_classes():
    # true 0 -> predicted {0, 1}; true 1 -> {1, 1}; true 2 -> {2, 0, 2}
    expected = [[1, 1, 0],
                [0, 2, 0],
                [1, 0, 2]]
    cm = M.confusion_matrix(Y3, P3, 3)
    assert cm.tolist() == expected
    assert cm.sum() == 7


def test_accuracy_and_balanced_accuracy():
    # correct: 1 + 2 + 2 = 5 of 7
    assert M.accuracy(Y3, P3) == pytest.approx(5 / 7)
    # recalls 1/2, 2/2, 2/3 -> mean (0.5 + 1 + 0.6667) / 3 = 13/18
    assert M.balanced_accuracy(Y3, P3, 3) == pytest.approx(13 / 18)


def test_balanced_accuracy_skips_absent_classes_and_beats_majority_vote():
    # 9 of class 0, 1 of class 1, always predicting 0: accuracy 0.9 but recalls 1 and 0 -> 0.5.
    y = np.array([0] * 9 + [1])
    p = np.zeros(10, dtype=int)
    assert M.accuracy(y, p) == pytest.approx(0.9)
    assert M.balanced_accuracy(y, p, num_classes=4) == pytest.approx(0.5)  # classes 2, 3 absent


def test_precision_recall_f1_three_classes():
    r = M.precision_recall_f1(Y3, P3, 3)
    # precision = TP / column sum: 1/2, 2/3, 2/2
    np.testing.assert_allclose(r["precision"], [1 / 2, 2 / 3, 1])
    # recall = TP / row sum: 1/2, 2/2, 2/3
    np.testing.assert_allclose(r["recall"], [1 / 2, 1, 2 / 3])
    # F1 = 2TP/(2TP+FP+FN): 2/(2+1+1)=0.5, 4/(4+1+0)=0.8, 4/(4+0+1)=0.8
    np.testing.assert_allclose(r["f1"], [0.5, 0.8, 0.8])
    assert r["support"].tolist() == [2, 2, 3]
    assert r["macro_f1"] == pytest.approx(2.1 / 3)
    assert r["macro_precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)


def test_macro_f1_when_a_class_is_never_predicted():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 0, 1, 1, 1, 1])  # class 2 never predicted
    r = M.precision_recall_f1(y, p, 3)
    # precision: 2/2, 2/4, no predictions -> 0 by convention
    np.testing.assert_allclose(r["precision"], [1, 0.5, 0])
    np.testing.assert_allclose(r["recall"], [1, 1, 0])
    # F1 class 1: 2*2 / (4 + 2 FP + 0 FN) = 2/3; macro = (1 + 2/3 + 0) / 3 = 5/9
    np.testing.assert_allclose(r["f1"], [1, 2 / 3, 0])
    assert r["macro_f1"] == pytest.approx(5 / 9)
    # A 4th class absent from both labels and predictions does not change the macro average.
    r4 = M.precision_recall_f1(y, p, 4)
    assert r4["f1"].shape == (4,) and r4["f1"][3] == 0
    assert r4["macro_f1"] == pytest.approx(5 / 9)


def test_macro_f1_counts_a_predicted_class_with_no_images():
    # Class 2 has no images but is predicted once: its F1 is 0 and it is averaged in.
    # class 0: TP 1, FN 1 -> 2/3; class 1: 1; class 2: 0 -> (2/3 + 1 + 0) / 3 = 5/9
    r = M.precision_recall_f1([0, 0, 1], [0, 2, 1], 3)
    assert r["macro_f1"] == pytest.approx(5 / 9)


# ---------------------------------------------------------------- calibration and Brier

ECE_PROBS = np.array([[0.9, 0.1],    # y=0, conf 0.90, right -> bin (0.8, 1.0]
                      [0.2, 0.8],    # y=0, conf 0.80, wrong -> bin (0.6, 0.8] (upper edge is inclusive)
                      [0.7, 0.3],    # y=0, conf 0.70, right -> bin (0.6, 0.8]
                      [0.45, 0.55]])  # y=1, conf 0.55, right -> bin (0.4, 0.6]
ECE_LABELS = np.array([0, 0, 0, 1])


def test_ece_four_samples_five_bins():
    r = M.expected_calibration_error(ECE_PROBS, ECE_LABELS, n_bins=5)
    # bin (0.4,0.6]: n=1, conf .55, acc 1  -> gap .45
    # bin (0.6,0.8]: n=2, conf .75, acc .5 -> gap .25
    # bin (0.8,1.0]: n=1, conf .90, acc 1  -> gap .10
    # ECE = (1*.45 + 2*.25 + 1*.10) / 4 = 1.05 / 4 = 0.2625; MCE = .45
    assert r["ece"] == pytest.approx(0.2625)
    assert r["mce"] == pytest.approx(0.45)
    rel = r["reliability"]
    np.testing.assert_allclose(rel["lower"], [0, 0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(rel["upper"], [0.2, 0.4, 0.6, 0.8, 1.0])
    assert rel["count"] == [0, 0, 1, 2, 1]
    assert rel["mean_confidence"][:2] == [None, None] and rel["accuracy"][:2] == [None, None]
    np.testing.assert_allclose(rel["mean_confidence"][2:], [0.55, 0.75, 0.9])
    np.testing.assert_allclose(rel["accuracy"][2:], [1, 0.5, 1])


def test_ece_zero_when_confident_and_right_and_matches_a_plain_loop():
    assert M.expected_calibration_error(onehot([0, 1, 2], 3), [0, 1, 2])["ece"] == 0
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(200, 4)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 4, 200)
    # Independent reference: loop over bins (lo, hi].
    conf, right = probs.max(1), probs.argmax(1) == labels
    ece = 0.0
    for m in range(15):
        lo, hi = m / 15, (m + 1) / 15
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(right[sel].mean() - conf[sel].mean())
    r = M.expected_calibration_error(probs, labels)
    assert r["ece"] == pytest.approx(ece)
    assert sum(r["reliability"]["count"]) == 200
    assert r["mce"] >= r["ece"]


def test_brier_score():
    assert M.brier_score(onehot([0, 1, 2, 3], 4), [0, 1, 2, 3]) == 0
    # uniform over 4 classes: (1 - 1/4)^2 + 3 * (1/4)^2 = 9/16 + 3/16 = 0.75 = (C-1)/C
    assert M.brier_score(np.full((5, 4), 0.25), [0, 1, 2, 3, 0]) == pytest.approx(0.75)
    # [0.7, 0.2, 0.1] with y=0: 0.3^2 + 0.2^2 + 0.1^2 = 0.14; confident miss [0, 1] y=0: 1 + 1 = 2
    assert M.brier_score([[0.7, 0.2, 0.1]], [0]) == pytest.approx(0.14)
    assert M.brier_score([[0.0, 1.0]], [0]) == pytest.approx(2.0)


def test_kl_divergence():
    # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3)
    assert M.kl_divergence([[0.5, 0.5]], [[0.25, 0.75]]) == pytest.approx(0.5 * math.log(4 / 3))
    # a zero teacher probability contributes nothing: 1 * ln(1/0.5) = ln 2
    assert M.kl_divergence([[1.0, 0.0]], [[0.5, 0.5]]) == pytest.approx(math.log(2))
    p = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    assert M.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    # mean over images: (0 + ln 2) / 2
    assert M.kl_divergence([[0.5, 0.5], [1, 0]], [[0.5, 0.5], [0.5, 0.5]]) == pytest.approx(math.log(2) / 2)
    assert math.isfinite(M.kl_divergence([[1.0, 0.0]], [[0.0, 1.0]]))  # clipped, not inf


# ---------------------------------------------------------------- bootstrap

def noisy_case(n, acc=0.8, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    right = rng.random(n) < acc
    preds = np.where(right, labels, (labels + 1) % 3)
    return labels, 0.1 + 0.7 * onehot(preds, 3)  # rows: 0.8 / 0.1 / 0.1


def acc_from_probs(labels, probs):
    return M.accuracy(labels, probs.argmax(1))


def test_bootstrap_ci_contains_point_and_is_seeded():
    y, p = noisy_case(300)
    point, lo, hi = M.bootstrap_ci(acc_from_probs, y, p, n_boot=300, seed=1)
    assert point == pytest.approx(acc_from_probs(y, p))
    assert lo < point < hi
    assert M.bootstrap_ci(acc_from_probs, y, p, n_boot=300, seed=1) == (point, lo, hi)
    assert M.bootstrap_ci(acc_from_probs, y, p, n_boot=300, seed=2) != (point, lo, hi)


def test_bootstrap_batched_matches_loop_for_same_seed():
    y, p = noisy_case(120)
    loop = M.bootstrap_ci(acc_from_probs, y, p, n_boot=250, seed=7)
    fast = M.bootstrap_ci(M.batched_accuracy, y, p, n_boot=250, seed=7, batched=True)
    np.testing.assert_allclose(loop, fast)
    loop_f1 = M.bootstrap_ci(lambda yy, pp: M.precision_recall_f1(yy, pp.argmax(1), 3)["macro_f1"],
                             y, p, n_boot=250, seed=7)
    fast_f1 = M.bootstrap_ci(M.batched_macro_f1, y, p, n_boot=250, seed=7, batched=True)
    np.testing.assert_allclose(loop_f1, fast_f1)


def test_bootstrap_narrows_with_more_images():
    # Binomial standard error ~ sqrt(0.8*0.2/n): 2000 images give an interval ~sqrt(40) narrower.
    _, lo_s, hi_s = M.bootstrap_ci(M.batched_accuracy, *noisy_case(50), n_boot=400, batched=True)
    _, lo_l, hi_l = M.bootstrap_ci(M.batched_accuracy, *noisy_case(2000), n_boot=400, batched=True)
    assert (hi_l - lo_l) < 0.5 * (hi_s - lo_s)


def test_bootstrap_level_and_constant_metric():
    y, p = noisy_case(200)
    _, lo90, hi90 = M.bootstrap_ci(M.batched_accuracy, y, p, n_boot=400, level=0.9, batched=True)
    _, lo99, hi99 = M.bootstrap_ci(M.batched_accuracy, y, p, n_boot=400, level=0.99, batched=True)
    assert lo99 <= lo90 and hi90 <= hi99
    # every image right -> every resample scores 1
    assert M.bootstrap_ci(acc_from_probs, [0, 1, 2], onehot([0, 1, 2], 3), n_boot=20) == (1.0, 1.0, 1.0)
    with pytest.raises(M.MetricsError):
        M.bootstrap_ci(acc_from_probs, y, p, level=1.5)


def test_batched_macro_f1_matches_unbatched_including_missing_classes():
    rng = np.random.default_rng(5)
    for _ in range(20):
        y = rng.integers(0, 4, 15)
        preds = rng.integers(0, 2, 15)  # classes 2, 3 never predicted
        f1 = M.batched_macro_f1(y[None], onehot(preds, 4)[None])[0]
        assert f1 == pytest.approx(M.precision_recall_f1(y, preds, 4)["macro_f1"])


# ---------------------------------------------------------------- reports

def test_classification_report_is_json_and_consistent():
    y, p = noisy_case(150)
    r = M.classification_report(p, y, ["glioma", "meningioma", "none"], n_boot=200, seed=3)
    json.dumps(r, allow_nan=False)
    preds = p.argmax(1)
    assert r["n"] == 150 and r["classes"] == ["glioma", "meningioma", "none"]
    assert r["accuracy"] == pytest.approx(M.accuracy(y, preds))
    assert r["balanced_accuracy"] == pytest.approx(M.balanced_accuracy(y, preds, 3))
    prf = M.precision_recall_f1(y, preds, 3)
    assert r["macro_f1"] == pytest.approx(prf["macro_f1"])
    assert r["per_class"]["f1"] == pytest.approx(prf["f1"].tolist())
    assert r["per_class"]["support"] == np.bincount(y, minlength=3).tolist()
    assert r["confusion_matrix"] == M.confusion_matrix(y, preds, 3).tolist()
    assert r["ece"] == pytest.approx(M.expected_calibration_error(p, y)["ece"])
    assert r["ece_bins"] == 15 and len(r["reliability"]["count"]) == 15
    assert r["brier"] == pytest.approx(M.brier_score(p, y))
    lo, hi = r["accuracy_ci"]
    assert lo < r["accuracy"] < hi
    assert r["macro_f1_ci"][0] < r["macro_f1"] < r["macro_f1_ci"][1]
    # same resamples as the public bootstrap with the same seed
    assert r["accuracy_ci"] == pytest.approx(list(M.bootstrap_ci(acc_from_probs, y, p, 200, 3)[1:]))
    assert M.classification_report(p, y, n_boot=0)["accuracy_ci"] is None


def test_classification_report_rejects_wrong_class_names():
    with pytest.raises(M.MetricsError, match="class names"):
        M.classification_report(onehot([0, 1], 3), [0, 1], ["a", "b"], n_boot=0)


# ---------------------------------------------------------------- teacher vs student

FT_LABELS = np.array([0, 1, 2, 0, 1])
FT_TEACHER = np.array([0, 1, 0, 1, 1])  # right, right, wrong, wrong, right
FT_STUDENT = np.array([0, 2, 2, 1, 0])  # right, wrong, right, wrong, wrong


def test_flip_table_and_agreement():
    t = M.flip_table(FT_LABELS, FT_TEACHER, FT_STUDENT)
    # both right: #0; teacher only: #1, #4; student only: #2; both wrong: #3
    assert t["both_right"] == 1 and t["teacher_right_student_wrong"] == 2
    assert t["teacher_wrong_student_right"] == 1 and t["both_wrong"] == 1
    assert t["table"] == [[1, 2], [1, 1]]
    # same prediction on #0 (0=0) and #3 (1=1): 2/5
    assert M.agreement(FT_TEACHER, FT_STUDENT) == pytest.approx(0.4)


def test_mcnemar_exact_hand_values():
    # b=0, c=5: p = 2 * C(5,0) / 2^5 = 2/32 = 0.0625, either way round
    for counts in [(0, 5), (5, 0)]:
        r = M.mcnemar_test(*flip_arrays(10, *counts, 3))
        assert r["method"] == "exact" and r["p_value"] == pytest.approx(0.0625)
        assert r["statistic"] == 0 and r["n_discordant"] == 5
    # b=3, c=7: 2 * (1 + 10 + 45 + 120) / 1024 = 352/1024 = 0.34375, symmetric in b, c
    assert M.mcnemar_test(*flip_arrays(0, 3, 7, 0))["p_value"] == pytest.approx(0.34375)
    assert M.mcnemar_test(*flip_arrays(0, 7, 3, 0))["p_value"] == pytest.approx(0.34375)
    # b=c and no discordant pairs: no evidence at all
    assert M.mcnemar_test(*flip_arrays(4, 6, 6, 1))["p_value"] == 1.0
    assert M.mcnemar_test(*flip_arrays(9, 0, 0, 1))["p_value"] == 1.0


def test_mcnemar_large_counts_use_chi2_with_continuity_correction():
    r = M.mcnemar_test(*flip_arrays(0, 600, 500, 0))
    # X^2 = (|600-500| - 1)^2 / 1100 = 9801/1100; p = erfc(sqrt(X^2/2))
    assert r["method"] == "chi2_cc"
    assert r["statistic"] == pytest.approx(9801 / 1100)
    assert r["p_value"] == pytest.approx(math.erfc(math.sqrt(9801 / 2200)))
    assert 0.001 < r["p_value"] < 0.01


def test_mcnemar_against_scipy_binomtest():
    stats = pytest.importorskip("scipy.stats")  # optional cross-check; the hand values above always run
    for b, c in [(0, 5), (3, 7), (12, 4), (20, 20), (1, 30), (480, 520)]:
        r = M.mcnemar_test(*flip_arrays(2, b, c, 2))
        assert r["p_value"] == pytest.approx(stats.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)
    # large counts: matches chi2.sf and stays close to the exact binomial p
    r = M.mcnemar_test(*flip_arrays(0, 600, 500, 0))
    assert r["p_value"] == pytest.approx(stats.chi2.sf(r["statistic"], 1), rel=1e-9)
    assert r["p_value"] == pytest.approx(stats.binomtest(500, 1100, 0.5).pvalue, rel=0.05)


def test_pair_report():
    pt, ps = onehot(FT_TEACHER, 3), onehot(FT_STUDENT, 3)
    r = M.pair_report(FT_LABELS, pt, ps, classes=["a", "b", "c"])
    json.dumps(r, allow_nan=False)
    assert r["n"] == 5 and r["classes"] == ["a", "b", "c"]
    assert r["teacher_accuracy"] == pytest.approx(3 / 5) and r["student_accuracy"] == pytest.approx(2 / 5)
    assert r["agreement"] == pytest.approx(0.4)
    # true class 0: images #0 (agree), #3 (agree) -> 1; class 1: #1, #4 (both disagree) -> 0; class 2: #2 -> 0
    assert r["per_class_agreement"] == [1.0, 0.0, 0.0]
    assert r["flip_table"]["table"] == [[1, 2], [1, 1]]
    # b=2, c=1: 2 * (C(3,0) + C(3,1)) / 8 = 1.0
    assert r["mcnemar"]["p_value"] == pytest.approx(1.0)
    assert r["kl_divergence"] > 0
    # a class with no images has undefined agreement
    r = M.pair_report([0, 0], onehot([0, 1], 3), onehot([0, 0], 3))
    assert r["per_class_agreement"] == [0.5, None, None]


def test_mean_and_spread():
    r = M.mean_and_spread([0.9, 0.8, 0.7, 0.6])
    # mean 0.75; deviations ±0.05, ±0.15 -> sample var (2*0.0025 + 2*0.0225)/3 = 0.05/3
    assert r["mean"] == pytest.approx(0.75) and r["std"] == pytest.approx(math.sqrt(0.05 / 3))
    assert (r["min"], r["max"], r["n"]) == (pytest.approx(0.6), pytest.approx(0.9), 4)
    assert M.mean_and_spread([0.5]) == {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5, "n": 1}
    with pytest.raises(M.MetricsError):
        M.mean_and_spread([])


# ---------------------------------------------------------------- input validation

@pytest.mark.parametrize("probs, labels, match", [
    ([[2.0, -1.0]], [0], "logits"),                  # logits, not probabilities
    ([[0.6, 0.6]], [0], "sum to 1"),
    ([[0.5, 0.5]], [2], r"\[0, 2\)"),                 # label out of range
    ([[0.5, 0.5]], [0.0], "integers"),               # float labels
    ([[0.5, 0.5], [0.5, 0.5]], [0], "rows"),         # length mismatch
    ([0.5, 0.5], [0], "shape"),                      # 1-D probs
])
def test_bad_inputs_raise_precise_errors(probs, labels, match):
    with pytest.raises(M.MetricsError, match=match):
        M.brier_score(probs, labels)
    assert issubclass(M.MetricsError, ValueError)


def test_label_functions_reject_mismatched_lengths():
    with pytest.raises(M.MetricsError, match="same length"):
        M.confusion_matrix([0, 1], [0], 2)
    with pytest.raises(M.MetricsError, match="same length"):
        M.flip_table([0, 1], [0, 1], [0])


def test_never_predicted_classes_are_named():
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]])
    labels = np.array([0, 2, 1, 2])  # class 2 occurs twice and is never predicted
    report = M.classification_report(probs, labels, ["a", "b", "c"], n_boot=0)
    assert report["never_predicted"] == ["c"]
    assert M.never_predicted([[2, 0], [0, 0]], ["x", "y"]) == []  # absent from the labels: not flagged
