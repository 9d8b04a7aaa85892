"""ROAD (core.road): pytorch-grad-cam's ROAD as the oracle, hand-computed imputations, and maps that point at
what a model reads against their inverses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.road import (FRACTIONS, impute, removal_count, removed_pixels, road_combined, road_scores)
from tests.conftest import TinyCNN, seeded


class BrightnessReader(nn.Module):
    """Two convolutions that read brightness: class 0's logit grows with the mean of the bright pixels, class
    1's with the mean of the dark ones, wherever they lie (no padding trick, global average pooling)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(2, 2, 1, bias=False)
        with torch.no_grad():
            self.conv1.weight.zero_()
            self.conv1.weight[0, :, 1, 1] = 1 / 3   # the pixel's own brightness, made positive below by ReLU
            self.conv1.weight[1, :, 1, 1] = -1 / 3  # its darkness
            # Bright pixels count 12 times as much as dark ones: with one small square in the image the two
            # classes are near even, so removing the square moves the probability a long way.
            self.conv2.weight.copy_(torch.diag(torch.tensor([12.0, 1.0]))[:, :, None, None])
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.conv2(torch.relu(self.conv1(x)))).flatten(1)


def blob_image(top: int, left: int, side: int = 5, size: int = 16) -> torch.Tensor:
    """A dark (-1) image with one bright (+1) square."""
    x = -torch.ones(1, 3, size, size)
    x[..., top:top + side, left:left + side] = 1.0
    return x


@pytest.fixture
def no_grad_cam_noise(monkeypatch):
    """pytorch-grad-cam builds its imputers inside its metrics with noise 0.01; make that default 0."""
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    defaults = road.NoisyLinearImputer.__init__.__defaults__
    monkeypatch.setattr(road.NoisyLinearImputer.__init__, "__defaults__", (0.0, *defaults[1:]))
    return road


# pytorch-grad-cam's imputer calls np.argwhere on a tensor, which numpy 2 warns about on every call.
ORACLE_WARNING = "ignore:__array_wrap__ must accept context:DeprecationWarning"


@pytest.mark.filterwarnings(ORACLE_WARNING)
def test_scores_equal_pytorch_grad_cams_road_without_noise(no_grad_cam_noise, single_thread):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    road = no_grad_cam_noise
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, 16, 16, generator=generator)
    maps = torch.rand(3, 16, 16, generator=generator)  # continuous: no ties, where the two rules agree
    model, classes = seeded(TinyCNN), [0, 1, 2]
    morf = road_scores(model, x, maps, classes, order="morf", noise=0.0, batch_size=2)
    lerf = road_scores(model, x, maps, classes, order="lerf", noise=0.0, batch_size=2)
    targets = [ClassifierOutputSoftmaxTarget(c) for c in classes]
    for k, fraction in enumerate(FRACTIONS):
        percentile = round(100 * (1 - fraction))  # grad-cam keeps the pixels below its percentile
        cams = maps.numpy()
        theirs_morf = road.ROADMostRelevantFirst(percentile)(x, cams, targets, model)
        theirs_lerf = road.ROADLeastRelevantFirst(percentile)(x, cams, targets, model)
        np.testing.assert_allclose(morf.scores[:, k] - morf.original, theirs_morf, atol=1e-4)
        np.testing.assert_allclose(lerf.scores[:, k] - lerf.original, theirs_lerf, atol=1e-4)
    combined = road.ROADCombined([round(100 * (1 - f)) for f in FRACTIONS])(x, maps.numpy(), targets, model)
    np.testing.assert_allclose(road_combined(morf, lerf), combined, atol=1e-4)
    assert np.abs(morf.scores - morf.original[:, None]).max() > 1e-3  # the imputation moved the scores


@pytest.mark.filterwarnings(ORACLE_WARNING)
def test_imputed_images_equal_pytorch_grad_cams_and_share_its_noise(single_thread):
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 24, 24, generator=generator)
    maps = torch.rand(2, 24, 24, generator=generator)
    for order, theirs in (("morf", RemoveMostRelevantFirst), ("lerf", RemoveLeastRelevantFirst)):
        for fraction in (0.1, 0.2, 0.5, 0.9):  # 0.2: numpy's percentile removes one more than round(0.2 * 576)
            removed = removed_pixels(maps, fraction, order)
            assert removed.sum().item() == 2 * removal_count(fraction, 24 * 24)
            ours = impute(x, removed, noise=0.0)
            for i in range(2):
                perturb = theirs(round(100 * (1 - fraction)), road.NoisyLinearImputer(noise=0.0))
                torch.testing.assert_close(ours[i], perturb(x[i], maps[i]), atol=1e-5, rtol=0)
    # With noise: one image, torch's global generator at the same seed draws the same sample in the same order.
    removed = removed_pixels(maps[:1], 0.5)
    torch.manual_seed(11)
    theirs = road.NoisyLinearImputer(noise=0.05)(x[0], (~removed[0]).float())
    torch.manual_seed(11)
    torch.testing.assert_close(impute(x[:1], removed, noise=0.05)[0], theirs, atol=1e-5, rtol=0)


def test_imputation_by_hand():
    constant = torch.full((1, 2, 5, 5), 0.7)
    removed = torch.zeros(1, 5, 5, dtype=torch.bool)
    removed[0, 2, 2] = removed[0, 0, 0] = True
    torch.testing.assert_close(impute(constant, removed, noise=0.0), constant)
    # One row: a removed pixel between 2 and 8 is their mean; two removed pixels between 3 and 9 solve
    # x1 = (3 + x2) / 2, x2 = (x1 + 9) / 2 together: the straight line 5, 7.
    row = torch.tensor([[[[2.0, 0.0, 8.0, 3.0, 0.0, 0.0, 9.0]]]])
    gaps = torch.tensor([[[False, True, False, False, True, True, False]]])
    filled = impute(row, gaps, noise=0.0)[0, 0, 0]
    torch.testing.assert_close(filled, torch.tensor([2.0, 5.0, 8.0, 3.0, 5.0, 7.0, 9.0]))
    # 3 x 3, the centre removed: corners (weight 1/12 each) are 1, the sides (1/6 each) 4 -> 4/12 + 16/6 = 3.
    square = torch.tensor([[1.0, 4.0, 1.0], [4.0, 0.0, 4.0], [1.0, 4.0, 1.0]]).expand(1, 3, 3, 3)
    centre = torch.zeros(1, 3, 3, dtype=torch.bool)
    centre[0, 1, 1] = True
    assert torch.allclose(impute(square, centre, noise=0.0)[0, :, 1, 1], torch.full((3,), 3.0))
    # A corner has three neighbours inside the image: (1/6 * 6 + 1/6 * 6 + 1/12 * 12) / (5/12) = 3 / (5/12).
    corner = torch.tensor([[[[0.0, 6.0], [6.0, 12.0]]]])
    top_left = torch.tensor([[[True, False], [False, False]]])
    assert impute(corner, top_left, noise=0.0)[0, 0, 0, 0].item() == pytest.approx(3 / (5 / 12))


def test_a_batch_is_imputed_as_its_images_alone():
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(3, 2, 6, 7, generator=generator)
    removed = torch.rand(3, 6, 7, generator=generator) < 0.6
    batch = impute(x, removed, noise=0.0)
    for i in range(3):
        torch.testing.assert_close(batch[i:i + 1], impute(x[i:i + 1], removed[i:i + 1], noise=0.0))
    torch.testing.assert_close(batch[~removed[:, None].expand_as(x)], x[~removed[:, None].expand_as(x)])


def test_a_map_on_what_the_model_reads_beats_its_inverse():
    model = BrightnessReader().eval()
    x = blob_image(5, 6)
    noise = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(6)) * 0.01
    pointing = (x[:, 0] > 0).float() + noise  # on the bright square the model's class 0 reads
    curves = {name: [road_scores(model, x, m, [0], order=o) for o in ("morf", "lerf")]
              for name, m in (("pointing", pointing), ("inverse", -pointing))}
    assert curves["pointing"][0].mean[0] < curves["inverse"][0].mean[0]  # MoRF: lower is more faithful
    assert curves["pointing"][1].mean[0] > curves["inverse"][1].mean[0]  # LeRF: higher is more faithful
    assert road_combined(*curves["pointing"])[0] > road_combined(*curves["inverse"])[0]


def test_a_constant_map_scores_the_same_wherever_the_content_lies():
    model = BrightnessReader().eval()
    x = torch.cat([blob_image(2, 2), blob_image(9, 9)])  # the same square at the top left and the bottom right
    flat = torch.zeros(2, 16, 16)
    tied = road_scores(model, x, flat, [0, 0], noise=0.0)
    # One fixed scattered order takes about as much of either square at each share (the mean ROAD ranks by
    # agrees to 0.005 here); raster order removes the top-left square first and scores the two 0.15 apart.
    assert abs(tied.mean[0] - tied.mean[1]) < 0.02
    raster = -torch.arange(256.0).view(1, 16, 16).expand(2, -1, -1)
    ordered = road_scores(model, x, raster, [0, 0], noise=0.0)
    assert abs(ordered.mean[0] - ordered.mean[1]) > 0.1


def test_forwards_are_batched_and_noise_follows_the_seed(count_forwards):
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(4, 3, 16, 16, generator=generator)
    maps = torch.rand(4, 16, 16, generator=generator)
    model = seeded(TinyCNN)
    counter = count_forwards(model)
    whole = road_scores(model, x, maps, [0, 1, 2, 0], batch_size=4, seed=3)
    assert counter.calls == 1 + len(FRACTIONS)  # the untouched images, then one forward per share
    halves = road_scores(model, x, maps, [0, 1, 2, 0], batch_size=2, seed=3)
    assert counter.calls == 3 * (1 + len(FRACTIONS))
    np.testing.assert_allclose(whole.scores, halves.scores, atol=1e-6)  # each image's noise is its own
    other = road_scores(model, x, maps, [0, 1, 2, 0], batch_size=4, seed=4)
    assert np.abs(other.scores - whole.scores).max() > 1e-6
    assert whole.seconds > 0 and whole.mean.shape == (4,)
    np.testing.assert_allclose(whole.mean, whole.scores.mean(1))


@pytest.mark.parametrize("change, field", [
    ({"maps": torch.rand(2, 8, 8)}, "maps"),  # a lower-resolution map: the caller resizes
    ({"maps": torch.rand(3, 16, 16)}, "maps"),
    ({"fractions": (0.0, 0.5)}, "fractions"),
    ({"fractions": (0.5, 1.0)}, "fractions"),
    ({"fractions": ()}, "fractions"),
    ({"order": "random"}, "order"),
    ({"score": "softmax"}, "score"),
    ({"targets": [0]}, "targets"),
    ({"noise": -0.1}, "noise"),
    ({"batch_size": 0}, "batch_size"),
    ({"seed": -1}, "seed"),
])
def test_bad_input_is_refused_by_name(change, field):
    args = {"maps": torch.rand(2, 16, 16), "targets": [0, 1]} | change
    maps, targets = args.pop("maps"), args.pop("targets")
    with pytest.raises(ValueError, match=field):
        road_scores(seeded(TinyCNN), torch.randn(2, 3, 16, 16), maps, targets, **args)


def test_imputation_refuses_what_it_cannot_fill():
    with pytest.raises(ValueError, match="removed must be shaped"):
        impute(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="every pixel of image 1"):
        impute(torch.zeros(2, 3, 4, 4), torch.tensor([False, True])[:, None, None].expand(2, 4, 4))


def test_combined_needs_a_morf_and_a_lerf_curve():
    x, maps = torch.randn(1, 3, 16, 16), torch.rand(1, 16, 16)
    morf = road_scores(seeded(TinyCNN), x, maps, [0], fractions=(0.5,))
    with pytest.raises(ValueError, match="MoRF then a LeRF"):
        road_combined(morf, morf)
