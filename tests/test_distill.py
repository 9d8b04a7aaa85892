"""Loss terms against hand-computed values; the registry binds and checks hyperparameters."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.distill import LOSSES, LossInputs, attention_transfer_loss, build_loss, kd_loss


def test_alpha_one_is_plain_cross_entropy():
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 3, 0])
    assert torch.allclose(kd_loss(s, t, y, temperature=4.0, alpha=1.0), F.cross_entropy(s, y))


def test_identical_logits_give_zero_soft_term():
    s = torch.randn(6, 4)
    y = torch.randint(0, 4, (6,))
    assert kd_loss(s, s.clone(), y, temperature=3.0, alpha=0.0).abs() < 1e-6


def test_hand_computed_value_with_t_squared_factor():
    # Two classes, one sample. Student logits (0, 0) -> p_s = (1/2, 1/2) at any T.
    # Teacher logits (2, 0) at T = 2 -> p_t = softmax(1, 0) = (e/(e+1), 1/(e+1)).
    s, t, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    pt = [math.e / (math.e + 1), 1 / (math.e + 1)]
    kl = sum(p * math.log(p / 0.5) for p in pt)
    hard = math.log(2)  # CE of a uniform prediction
    expected = 0.25 * hard + 0.75 * 4 * kl  # T^2 = 4
    got = kd_loss(s, t, y, temperature=2.0, alpha=0.25)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_soft_term_scales_with_t_squared():
    # With alpha = 0, loss / T^2 equals the KL of the softened distributions.
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.zeros(4, dtype=torch.long)
    for temp in (1.0, 2.0, 8.0):
        kl = F.kl_div(F.log_softmax(s / temp, 1), F.softmax(t / temp, 1), reduction="batchmean")
        assert kd_loss(s, t, y, temperature=temp, alpha=0.0).item() == pytest.approx(temp**2 * kl.item(), rel=1e-5)


def test_gradient_reaches_student_not_teacher():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    y = torch.tensor([1, 2, 3])
    kd_loss(s, t, y, temperature=4.0, alpha=0.0).backward()  # soft term only
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_rejects_bad_hyperparameters():
    s, y = torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError):
        kd_loss(s, s, y, temperature=0.0, alpha=0.5)
    with pytest.raises(ValueError):
        kd_loss(s, s, y, temperature=1.0, alpha=1.5)


def test_attention_transfer_zero_for_same_maps_and_positive_otherwise():
    a = torch.rand(2, 8, 6, 6, requires_grad=True)
    assert attention_transfer_loss([a], [a.detach() * 3.0]).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    b = torch.rand(2, 16, 12, 12)  # teacher map at another size and width
    loss = attention_transfer_loss([a], [b])
    loss.backward()
    assert loss.item() > 0 and a.grad.abs().sum() > 0


def test_attention_transfer_matches_the_authors_code_form_by_hand():
    # One 1-channel 1x2 map per side: Q = normalise(A^2). Student A = (1, 0) -> Q_s = (1, 0);
    # teacher A = (1, 1) -> Q_t = (1/sqrt2, 1/sqrt2). Mean squared difference over the 2 positions.
    fs, ft = torch.tensor([[[[1.0, 0.0]]]]), torch.tensor([[[[1.0, 1.0]]]])
    r = 1 / math.sqrt(2)
    expected = ((1 - r) ** 2 + r ** 2) / 2
    assert attention_transfer_loss([fs], [ft]).item() == pytest.approx(expected, rel=1e-6)
    term = build_loss({"attention": {"beta": 1000.0}})
    batch = LossInputs(torch.zeros(1, 2), torch.tensor([0]), torch.zeros(1, 2), [fs], [ft])
    assert term(batch).item() == pytest.approx(500.0 * expected, rel=1e-6)  # beta / 2, as the authors' code
    assert term.uses_teacher and term.uses_features


def test_registry_binds_hyperparameters_and_rejects_unknown_ones():
    assert {"kd", "label_only", "label_smoothing", "attention"} <= set(LOSSES)
    s, t, y = torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 2])
    batch = LossInputs(s, y, t)
    assert torch.allclose(build_loss({"kd": {"temperature": 2.0, "alpha": 0.3}})(batch),
                          kd_loss(s, t, y, temperature=2.0, alpha=0.3))
    combined = build_loss({"kd": {"alpha": 0.3}, "label_only": {}})
    assert torch.allclose(combined(batch), kd_loss(s, t, y, temperature=4.0, alpha=0.3) + F.cross_entropy(s, y))
    assert not build_loss({"kd": {"alpha": 1.0}}).uses_teacher  # alpha = 1 needs no teacher logits
    with pytest.raises(ValueError, match="temprature"):
        build_loss({"kd": {"temprature": 2.0}})
    with pytest.raises(ValueError, match="unknown loss 'kld'"):
        build_loss({"kld": {}})
    with pytest.raises(ValueError, match="alpha"):
        build_loss({"kd": {"alpha": -0.1}})


def test_label_smoothing_term_is_cross_entropy_against_smoothed_targets():
    s, y = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    soft = torch.tensor([[1 - 0.2 + 0.2 / 3, 0.2 / 3, 0.2 / 3]])
    expected = -(soft * F.log_softmax(s, 1)).sum()
    assert build_loss({"label_smoothing": {"smoothing": 0.2}})(LossInputs(s, y)).item() == pytest.approx(
        expected.item(), rel=1e-6)


def _inputs(s, t, y):
    return LossInputs(student_logits=s, targets=y, teacher_logits=t)


def test_dkd_parts_add_up_to_hinton_kd_for_one_image():
    # Decoupled KD's identity (Zhao et al. 2022, eq. 7): KL(p_t || p_s) = TCKD + (1 - p_t[target]) * NCKD, with
    # TCKD the KL of the binary (target, rest) split and NCKD the KL among the other classes. The parts are read
    # off the registered loss with one weight at a time (no cross-entropy); KL is computed here directly.
    torch.manual_seed(0)
    for _ in range(5):
        s, t, y = torch.randn(1, 4), torch.randn(1, 4), torch.randint(0, 4, (1,))
        tckd = LOSSES.build("dkd", ce_weight=0.0, alpha=1.0, beta=0.0, temperature=1.0)(_inputs(s, t, y))
        nckd = LOSSES.build("dkd", ce_weight=0.0, alpha=0.0, beta=1.0, temperature=1.0)(_inputs(s, t, y))
        p_t, p_s = F.softmax(t, 1)[0], F.softmax(s, 1)[0]
        kl = float((p_t * (p_t / p_s).log()).sum())
        assert float(tckd) + (1 - float(p_t[y[0]])) * float(nckd) == pytest.approx(kl, rel=1e-4, abs=1e-6)


def test_dkd_nckd_ignores_the_target_logit_and_is_zero_for_the_teachers_non_target_shape():
    y = torch.tensor([1])
    t = torch.tensor([[0.5, 3.0, -1.0, 0.2]])
    s = t.clone()
    s[0, 1] = -4.0  # only the target logit differs: the non-target distribution is the teacher's
    nckd = LOSSES.build("dkd", ce_weight=0.0, alpha=0.0, beta=1.0, temperature=2.0)(_inputs(s, t, y))
    tckd = LOSSES.build("dkd", ce_weight=0.0, alpha=1.0, beta=0.0, temperature=2.0)(_inputs(s, t, y))
    assert abs(float(nckd)) < 1e-6 and float(tckd) > 0.1


def test_dkd_weights_cross_entropy_and_scales_with_t_squared():
    s, t, y = torch.randn(6, 4), torch.randn(6, 4), torch.randint(0, 4, (6,))
    ce_only = LOSSES.build("dkd", ce_weight=1.0, alpha=0.0, beta=0.0, temperature=3.0)(_inputs(s, t, y))
    assert torch.allclose(ce_only, F.cross_entropy(s, y))
    # the KD parts carry T^2 like Hinton KD: alpha = beta = 1 at T, over T^2, is the parts' KL at T
    both = LOSSES.build("dkd", ce_weight=0.0, alpha=1.0, beta=1.0, temperature=3.0)(_inputs(s, t, y))
    parts = sum(float(LOSSES.build("dkd", ce_weight=0.0, alpha=a, beta=b, temperature=3.0)(_inputs(s, t, y)))
                for a, b in ((1.0, 0.0), (0.0, 1.0)))
    assert float(both) == pytest.approx(parts, rel=1e-5)
    one = LOSSES.build("dkd", ce_weight=0.0, alpha=1.0, beta=0.0, temperature=1.0)(_inputs(s / 3, t / 3, y))
    three = LOSSES.build("dkd", ce_weight=0.0, alpha=1.0, beta=0.0, temperature=3.0)(_inputs(s, t, y))
    assert float(three) == pytest.approx(9 * float(one), rel=1e-4)


def _pearson_rows(a, b):
    return np.array([np.corrcoef(x, z)[0, 1] for x, z in zip(a, b)])


def test_dist_is_one_minus_pearson_between_and_within_classes_by_numpy():
    torch.manual_seed(1)
    s, t, y = torch.randn(8, 4), torch.randn(8, 4), torch.randint(0, 4, (8,))
    got = LOSSES.build("dist", ce_weight=0.0, beta=1.0, gamma=0.0, temperature=1.0)(_inputs(s, t, y))
    p_s, p_t = F.softmax(s, 1).numpy(), F.softmax(t, 1).numpy()
    assert float(got) == pytest.approx(float(np.mean(1 - _pearson_rows(p_s, p_t))), rel=1e-4)
    got = LOSSES.build("dist", ce_weight=0.0, beta=0.0, gamma=1.0, temperature=1.0)(_inputs(s, t, y))
    assert float(got) == pytest.approx(float(np.mean(1 - _pearson_rows(p_s.T, p_t.T))), rel=1e-4)
    ce_only = LOSSES.build("dist", ce_weight=1.0, beta=0.0, gamma=0.0, temperature=1.0)(_inputs(s, t, y))
    assert torch.allclose(ce_only, F.cross_entropy(s, y))


def test_dist_zero_for_the_teachers_own_logits_and_gradient_reaches_the_student():
    t, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    term = LOSSES.build("dist", ce_weight=0.0, beta=1.0, gamma=1.0, temperature=4.0)
    assert abs(float(term(_inputs(t.clone(), t, y)))) < 1e-5
    s = torch.randn(8, 4, requires_grad=True)
    t.requires_grad_(True)
    term(_inputs(s, t, y)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


@pytest.mark.parametrize("name, args", [("dkd", {"beta": -1.0}), ("dkd", {"temperature": 0.0}),
                                        ("dkd", {"ce_weight": float("nan")}), ("dist", {"gamma": -0.5}),
                                        ("dist", {"temperature": -2.0}), ("dist", {"alpha": 1.0})])
def test_dkd_and_dist_refuse_bad_arguments_when_built(name, args):
    with pytest.raises((ValueError, TypeError)):
        LOSSES.build(name, **args)
