"""Deletion/insertion, randomisation check, ground-truth scores and agreement, on known answers."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.faithfulness import (agreement, deletion_curve, evaluate_localisation, insertion_curve, mask_iou,
                               pointing_game, rankdata, sanity_check, spearman, top_down_modules, top_mask, topk_iou)

pytestmark = pytest.mark.usefixtures("single_thread")


class RegionMean(nn.Module):
    """Logit 0 = mean of channel 0 over a fixed region (a quarter of the image); logit 1 = 0."""

    def __init__(self, region: torch.Tensor):
        super().__init__()
        self.register_buffer("region", region.float())

    def forward(self, x):
        score = (x[:, 0] * self.region).sum(dim=(1, 2)) / self.region.sum()
        return torch.stack([score, torch.zeros_like(score)], 1)


@pytest.fixture
def region_case():
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[:2, :] = True  # 16 of 64 pixels: a = 0.25
    return RegionMean(region).eval(), region


def test_deletion_and_insertion_auc_known_answers(region_case):
    model, region = region_case
    x = torch.ones(2, 3, 8, 8)
    perfect = region.float().numpy()
    maps = np.stack([perfect, 1 - perfect])  # image 0: the right order; image 1: the worst order
    # With the right order the logit falls linearly to 0 over the first quarter: AUC = a / 2 = 0.125
    curve = deletion_curve(model, x, maps, [0, 0], steps=16, score="logit")
    assert curve.auc == pytest.approx([0.125, 0.875])
    assert curve.fractions[0] == 0 and curve.fractions[-1] == 1 and curve.scores.shape == (2, 17)
    assert curve.scores[0, 0] == pytest.approx(1.0) and curve.scores[0, -1] == pytest.approx(0.0)
    inserted = insertion_curve(model, x, maps, [0, 0], steps=16, score="logit", baseline="zero")
    assert inserted.auc == pytest.approx([0.875, 0.125])


def test_perturbation_curve_runs_one_forward_per_step_for_the_whole_batch(region_case, count_forwards):
    model, region = region_case
    counter = count_forwards(model)
    maps = torch.rand(5, 8, 8, generator=torch.Generator().manual_seed(0))
    deletion_curve(model, torch.randn(5, 3, 8, 8), maps, [0] * 5, steps=10)
    assert counter.calls == 11 and counter.images == 55


def test_probability_scores_and_blur_baseline_are_in_range(tiny_student, image32):
    maps = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0))
    curve = insertion_curve(tiny_student, image32, maps[0], [1], steps=8)
    assert np.all((curve.scores >= 0) & (curve.scores <= 1)) and 0 <= curve.auc[0] <= 1
    with pytest.raises(ValueError, match="shaped"):
        deletion_curve(tiny_student, image32, torch.rand(1, 16, 16), [1])


def test_rankdata_averages_ties():
    assert rankdata([10, 30, 20, 20]).tolist() == [1.0, 4.0, 2.5, 2.5]
    assert rankdata([[0, 0], [0, 1]]).tolist() == [2.0, 2.0, 2.0, 4.0]


def test_spearman_known_values():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a ** 3) == pytest.approx(1.0)  # monotone transform
    assert spearman(a, -a) == pytest.approx(-1.0)
    # ranks [1,2,3,4,5] vs [2,1,4,3,5]: rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 4 / 120 = 0.8
    assert spearman(a, [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert np.isnan(spearman(a, np.ones(5)))


def test_top_mask_and_iou():
    m = np.arange(20.0).reshape(4, 5)
    assert top_mask(m, 10).sum() == 2 and top_mask(m, 10)[3, 3:].all()
    assert topk_iou(m, m, 25) == 1.0
    assert topk_iou(m, -m, 25) == 0.0
    # top 4 of m: values 16..19; of b: 15..18 -> overlap 3, union 5
    b = m.copy()
    b[3, 4] = -1
    assert topk_iou(m, b, 20) == pytest.approx(3 / 5)
    scores = agreement(m, m[::-1].copy())
    assert scores["spearman"] < 0 and scores["iou"] == 0.0


def test_pointing_game_and_mask_iou_hand_cases():
    mask = np.zeros((10, 10), dtype=bool)
    mask[:5, :5] = True  # 25 pixels
    m = np.zeros((10, 10))
    m[:5, :5] = 3.0
    m[9, 9] = 1.0  # total 76, 75 inside
    result = pointing_game(m, mask)
    assert result["hit"] == 1.0 and result["energy"] == pytest.approx(75 / 76)
    m[9, 9] = 5.0
    assert pointing_game(m, mask)["hit"] == 0.0
    # top 5 % = 5 pixels: (9, 9) and 4 in the mask -> IoU 4 / (25 + 1)
    assert mask_iou(m, mask, 5) == pytest.approx(4 / 26)
    assert np.isnan(pointing_game(m, np.zeros_like(mask))["energy"])


def test_a_flat_maximum_counts_the_share_of_it_inside_the_mask():
    # a 2 x 2 map upsampled is flat over each quarter: the first maximal pixel is always the top-left corner
    mask = np.zeros((8, 8), dtype=bool)
    mask[4:, 4:] = True
    m = np.zeros((8, 8))
    m[2:6, 2:6] = 1.0  # the maximum's plateau: 16 pixels, 4 of them in the mask
    assert pointing_game(m, mask)["hit"] == pytest.approx(4 / 16)
    m[0, 0] = np.nan
    assert np.isnan(pointing_game(m, mask)["hit"])


def test_localisation_on_phantom_masks():
    from core.data import load_dataset

    ds = load_dataset("phantom", "test", input_size=32, n_test=8)
    masks = [ds.mask(i) for i in range(len(ds))]
    assert any(k.any() for k in masks) and not masks[0].any()  # label 0 (no lesion) has an empty mask
    oracle = evaluate_localisation([k.astype(float) for k in masks], masks)
    lesion = np.array([k.any() for k in masks])
    assert np.all(oracle["hit"][lesion] == 1) and np.allclose(oracle["energy"][lesion], 1)
    assert np.isnan(oracle["energy"][~lesion]).all()
    flat = evaluate_localisation([np.ones((32, 32))] * len(masks), masks)
    assert np.allclose(flat["energy"][lesion], [k.mean() for k in np.array(masks)[lesion]])


def test_sanity_check_detects_head_independence_of_average_maps(tiny_student, image64):
    before = {k: v.clone() for k, v in tiny_student.state_dict().items()}
    head_only = sanity_check(tiny_student, image64, "feature_maps", n_layers=1)
    assert head_only.randomized == ["classifier"]
    assert head_only.spearman == pytest.approx(1.0)  # the average map never looks at the head
    deeper = sanity_check(tiny_student, image64, "feature_maps", n_layers=2)
    assert deeper.randomized == ["classifier", "block3"] and deeper.spearman < 0.99
    cam = sanity_check(tiny_student, image64, "grad_cam", target=1, n_layers=2, seed=3)
    assert cam.target == 1 and cam.map_trained.shape == cam.map_randomized.shape == (64, 64)
    assert np.isfinite(cam.iou)
    assert all(torch.equal(before[k], v) for k, v in tiny_student.state_dict().items())


def test_sanity_cascade_adds_one_module_per_step_from_the_top(tiny_student, image64):
    full = sanity_check(tiny_student, image64, "feature_maps", n_layers=None)
    assert [step.layer for step in full.steps] == ["classifier", "block3", "block2", "block1"]
    assert [step.randomized for step in full.steps] == [["classifier"], ["classifier", "block3"],
                                                        ["classifier", "block3", "block2"],
                                                        ["classifier", "block3", "block2", "block1"]]
    # a step keeps what the steps before it randomised: its first steps are those of a shorter cascade
    short = sanity_check(tiny_student, image64, "feature_maps", n_layers=2)
    for a, b in zip(short.steps, full.steps):
        assert np.array_equal(a.map_randomized, b.map_randomized)


def test_sanity_cascade_moves_a_trained_models_map_further_than_its_first_step():
    from core import checkpoints
    from core.data import load_dataset

    model, meta = checkpoints.load(Path(__file__).resolve().parent.parent / "checkpoints/phantom/student.pt")
    ds = load_dataset("phantom", "test", input_size=meta.input_size, n_test=8)
    rows = [[step.spearman for step in sanity_check(model, ds[i][0][None], "saliency", n_layers=None).steps]
            for i in range(1, 5)]
    mean = np.mean(rows, axis=0)
    assert len(mean) == len(top_down_modules(model))
    # Randomising more layers moves the map further than the head alone did, and the whole cascade far from it.
    # Not strictly at each step: on the shipped student (two pooled blocks) the middle blocks' steps plateau.
    assert np.all(mean[1:] < mean[0]) and np.all(mean < 0.9), mean
    assert mean[-1] < mean[0] - 0.2 and mean[-1] == mean.min(), mean
