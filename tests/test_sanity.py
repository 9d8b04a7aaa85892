"""The sanity cascade's measures (SSIM, |rank correlation|), constant maps counted, the unrelated-pair baseline."""

import numpy as np
import pytest
import torch
from torch import nn

from core.models import build_teacher
from core.sanity import (SSIM_SIGMA, SSIM_WINDOW, is_constant, map_similarity, sanity_check, ssim, top_down_modules,
                         unrelated_pair_scores)
from tests.conftest import TinyCNN, seeded

pytestmark = pytest.mark.usefixtures("single_thread")


def _noise(seed: int, shape=(32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)


def test_ssim_is_one_for_a_map_and_itself_and_for_maps_equal_after_scaling():
    m = _noise(0)
    assert ssim(m, m) == pytest.approx(1.0, abs=1e-12)
    assert ssim(m, 3 * m + 2) == pytest.approx(1.0, abs=1e-9), "both are scaled to [0, 1] first"


def test_ssim_of_a_map_and_its_negation_is_negative():
    m = _noise(1)
    assert ssim(m, -m) < -0.5
    assert abs(ssim(m, _noise(2))) < 0.1, "two unrelated noise maps"


def test_ssim_of_a_constant_map_and_stripes_is_the_formulas_value():
    # The constant map scales to zeros: mean 0, variance 0, covariance 0, so at each position
    # SSIM = C1 / (mu^2 + C1) * C2 / (var + C2), mu and var those of the stripes under the window.
    stripes = np.tile([0.0, 1.0], (32, 16))  # column j is j % 2
    offsets = np.arange(SSIM_WINDOW) - SSIM_WINDOW // 2
    g = np.exp(-offsets ** 2 / (2 * SSIM_SIGMA ** 2))
    g /= g.sum()
    even, odd = g[offsets % 2 == 0].sum(), g[offsets % 2 == 1].sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2

    def at(mu):  # a 0/1 pattern: E[y^2] = E[y], so var = mu - mu^2
        return c1 / (mu ** 2 + c1) * c2 / (mu - mu ** 2 + c2)

    # centres 5..26: at an even column the ones lie at odd offsets, at an odd column at even ones; 11 of each
    expected = (at(odd) + at(even)) / 2
    assert ssim(np.full((32, 32), 0.3), stripes) == pytest.approx(expected, rel=1e-9)
    assert ssim(np.zeros((32, 32)), stripes) == pytest.approx(expected, rel=1e-9)


def test_ssim_refuses_maps_of_different_shapes_and_fits_its_window_to_small_maps():
    with pytest.raises(ValueError, match="one shape"):
        ssim(np.zeros((8, 8)), np.zeros((8, 9)))
    small = _noise(3, (6, 7))
    assert ssim(small, small) == pytest.approx(1.0, abs=1e-12)


def test_a_pair_with_a_constant_map_is_counted_and_has_no_scores():
    m = _noise(4)
    scores = map_similarity(m, np.zeros_like(m))
    assert scores["constant"] is True
    assert all(np.isnan(scores[k]) for k in ("spearman", "abs_spearman", "ssim", "iou"))
    inverted = map_similarity(m, -m)
    assert inverted["constant"] is False and inverted["spearman"] == pytest.approx(-1.0)
    assert inverted["abs_spearman"] == pytest.approx(1.0) and inverted["ssim"] < 0 and inverted["iou"] == 0.0
    assert is_constant(np.ones((3, 3))) and not is_constant(m) and not is_constant(np.full((2, 2), np.nan))


class ZeroedOnReset(nn.Linear):
    """A head whose re-initialisation zeroes it: after it, every class score is its bias and every map flat."""

    def reset_parameters(self):
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


def _model_whose_grad_cam_turns_constant() -> nn.Module:
    def build():
        model = TinyCNN()
        model.fc = ZeroedOnReset(6, 3)
        nn.init.normal_(model.fc.weight)  # the "trained" head: a map that is not flat
        return model
    return seeded(build)


def test_a_step_whose_map_turns_constant_is_counted_not_dropped(image32):
    model = _model_whose_grad_cam_turns_constant()
    result = sanity_check(model, image32, "grad_cam", target=1, n_layers=None)
    assert [step.layer for step in result.steps] == ["fc", "conv2", "conv1"]
    assert not result.trained_constant and not is_constant(result.map_trained)
    for step in result.steps:  # the zeroed head stays zero: every step's map is flat
        assert step.constant and is_constant(step.map_randomized)
        assert all(np.isnan(v) for v in (step.spearman, step.abs_spearman, step.ssim, step.iou))
    assert result.constant and np.isnan(result.spearman)


def test_a_step_with_a_map_has_every_score(tiny_student, image64):
    result = sanity_check(tiny_student, image64, "feature_maps", n_layers=2)
    deeper = result.steps[1]
    assert not deeper.constant and np.isfinite([deeper.spearman, deeper.ssim, deeper.iou]).all()
    assert deeper.abs_spearman == pytest.approx(abs(deeper.spearman))
    assert -1 <= deeper.ssim <= 1 and result.ssim == deeper.ssim and result.abs_spearman == deeper.abs_spearman
    head_only = result.steps[0]  # the average map never looks at the head: the same map
    assert head_only.ssim == pytest.approx(1.0) and head_only.abs_spearman == pytest.approx(1.0)


def test_unrelated_pairs_pair_each_image_with_the_next():
    a, b = _noise(5), _noise(6)
    flat = np.full_like(a, 0.5)
    scores = unrelated_pair_scores(np.stack([a, a, b, flat]))
    assert scores["constant"].tolist() == [False, False, True, True]  # (0, 1), (1, 2), (2, 3), (3, 0)
    assert scores["spearman"][0] == pytest.approx(1.0) and scores["ssim"][0] == pytest.approx(1.0)
    assert abs(scores["spearman"][1]) < 0.1 and scores["abs_spearman"][1] == pytest.approx(abs(scores["spearman"][1]))
    assert np.isnan(scores["ssim"][2:]).all() and np.isnan(scores["iou"][2:]).all()
    assert len(unrelated_pair_scores(np.stack([a, b]))["iou"]) == 1, "two images make one pair"
    with pytest.raises(ValueError, match="N >= 2"):
        unrelated_pair_scores(a[None])


def test_unrelated_pairs_of_a_models_maps_score_like_unrelated_maps(tiny_student):
    from core.explain import explain

    xs = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    maps = np.stack([explain(tiny_student, xs[i:i + 1], "saliency", 1, predict=False).heatmap for i in range(3)])
    scores = unrelated_pair_scores(maps)
    assert not scores["constant"].any() and np.isfinite(scores["ssim"]).all()
    assert (scores["spearman"] < 0.9).all(), "maps of different images are not the same map"


def test_cascade_leaves_out_layers_with_nothing_to_re_initialise():
    teacher = build_teacher("densenet121", 4)
    names = top_down_modules(teacher)
    assert names[:2] == ["classifier", "features.denseblock4"], "relu5 holds no parameter"
    assert "features.pool0" not in names and names[-1] == "features.denseblock1"
    assert "maxpool" not in top_down_modules(build_teacher("resnet18", 4))
