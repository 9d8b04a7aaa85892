"""Deletion/insertion, randomisation check, ground-truth scores and agreement, on known answers."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.faithfulness import (agreement, deletion_curve, evaluate_localisation, insertion_curve, mask_iou,
                               pointing_game, rankdata, spearman, top_mask, topk_iou)
from core.sanity import sanity_check, top_down_modules

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
    inserted = insertion_curve(model, x, maps, [0, 0], steps=16, score="logit", substrate="mean")
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


class WeightedPixels(nn.Module):
    """Logit 0 = sum of channel 0 times fixed per-pixel weights; logit 1 = 0."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("weights", weights.float())

    def forward(self, x):
        score = (x[:, 0] * self.weights).sum(dim=(1, 2))
        return torch.stack([score, torch.zeros_like(score)], 1)


@pytest.fixture
def quadrant_case():
    """8 x 8 image of ones; the score reads the top-left quadrant (weight 1) and the bottom-right one (0.5), so
    it is 1.5 whole. The map ranks the quadrants top-right (3), top-left (2), bottom-right (1), bottom-left (one
    pixel of 10, the rest 0: mean 10 / 16), so a per-pixel order would take that one pixel first."""
    weights = torch.zeros(8, 8)
    weights[:4, :4] = 1 / 16
    weights[4:, 4:] = 0.5 / 16
    m = torch.zeros(8, 8)
    m[:4, 4:], m[:4, :4], m[4:, 4:] = 3.0, 2.0, 1.0
    m[6, 1] = 10.0
    return WeightedPixels(weights).eval(), torch.ones(1, 3, 8, 8), m


def test_deletion_and_insertion_by_cells_remove_whole_cells_in_order_of_their_mean(quadrant_case):
    model, x, m = quadrant_case
    # cells=2: one quadrant per step (steps defaults to the number of cells): top-right (score stays 1.5),
    # top-left (0.5 left), bottom-right (0), bottom-left (0)
    deleted = deletion_curve(model, x, m, [0], cells=2, score="logit")
    assert deleted.fractions.tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert deleted.scores[0] == pytest.approx([1.5, 1.5, 0.5, 0, 0])
    assert deleted.auc[0] == pytest.approx(0.25 * (1.5 + 1.0 + 0.25 + 0))
    assert deleted.cells == (2, 2) and deleted.substrate == "mean"
    inserted = insertion_curve(model, x, m, [0], cells=2, score="logit", substrate="mean")
    assert inserted.scores[0] == pytest.approx([0, 0, 1, 1.5, 1.5])
    assert inserted.auc[0] == pytest.approx(0.25 * (0 + 0.5 + 1.25 + 1.5))
    # two steps over four cells: two cells a step
    halves = deletion_curve(model, x, m, [0], cells=2, steps=2, score="logit")
    assert halves.fractions.tolist() == [0, 0.5, 1] and halves.scores[0] == pytest.approx([1.5, 0.5, 0])
    # a (rows, columns) grid: the right half (mean 2) before the left half (mean (32 + 10) / 32)
    columns = deletion_curve(model, x, m, [0], cells=(1, 2), score="logit")
    assert columns.scores[0] == pytest.approx([1.5, 1.0, 0])


def test_a_grid_that_does_not_divide_the_image_cuts_cells_of_nearly_equal_size():
    # 8 px in 3 cells: rows 0-2, 3-5 and 6-7; the hot pixel (2, 2) lies in the top-left cell of 3 x 3 = 9 px
    model = WeightedPixels(torch.full((8, 8), 1 / 64)).eval()
    m = torch.zeros(8, 8)
    m[2, 2] = 1.0
    curve = deletion_curve(model, torch.ones(1, 3, 8, 8), m, [0], cells=3, score="logit")
    assert curve.scores.shape == (1, 10) and curve.scores[0, 1] == pytest.approx(1 - 9 / 64)
    assert curve.scores[0, -1] == pytest.approx(0)


def test_a_constant_map_scores_the_same_wherever_the_evidence_lies():
    # The score is the image's mean; the evidence (ones) fills the top-left 32 x 32 of a 128 x 128 image, or,
    # flipped, its bottom-right. Taking tied pixels in raster order removed the top-left evidence first. In a
    # random order the share of the 1024 evidence pixels left after each step strays by about 1.5 % from the
    # share of all pixels left, so the two AUCs differ by about that.
    model = WeightedPixels(torch.full((128, 128), 16.0 / 128 ** 2)).eval()
    x = torch.zeros(2, 3, 128, 128)
    x[0, :, :32, :32] = 1.0
    x[1] = x[0].flip(-1, -2)
    flat = torch.ones(2, 128, 128)
    curve = deletion_curve(model, x, flat, [0, 0], steps=32, score="logit")
    assert curve.scores[:, 0] == pytest.approx([1.0, 1.0])
    assert abs(curve.auc[0] - curve.auc[1]) < 0.04 and curve.auc == pytest.approx([0.5, 0.5], abs=0.04)
    # the same images with the ties broken in raster order (a map that falls along the rows): far apart
    raster = -torch.arange(128 * 128.0).view(128, 128).expand(2, -1, -1)
    ordered = deletion_curve(model, x, raster, [0, 0], steps=32, score="logit")
    assert ordered.auc[1] - ordered.auc[0] > 0.5


def test_blur_and_mean_substrates_start_from_different_images(tiny_student, image32):
    maps = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0))
    curves = {s: insertion_curve(tiny_student, image32, maps, [1], steps=4, substrate=s, score="logit")
              for s in ("mean", "blur")}
    assert curves["mean"].scores[0, 0] != pytest.approx(curves["blur"].scores[0, 0])
    assert curves["mean"].scores[0, -1] == pytest.approx(curves["blur"].scores[0, -1])  # both end at the image
    assert curves["mean"].substrate == "mean" and curves["blur"].substrate == "blur"
    deleted = {s: deletion_curve(tiny_student, image32, maps, [1], cells=4, substrate=s) for s in ("mean", "blur")}
    assert deleted["mean"].scores[0, -1] != pytest.approx(deleted["blur"].scores[0, -1])
    assert all(np.isfinite(c.auc).all() for c in (*curves.values(), *deleted.values()))
    # "auto" keeps RISE's choice: the mean colour for deletion, the blur for insertion
    assert deletion_curve(tiny_student, image32, maps, [1], steps=4).substrate == "mean"
    assert insertion_curve(tiny_student, image32, maps, [1], steps=4).substrate == "blur"


@pytest.mark.parametrize("kwargs, named", [({"cells": 9}, "cells"), ({"cells": 0}, "cells"),
                                           ({"cells": (2, 0)}, "cells"), ({"cells": (2, 2, 2)}, "cells"),
                                           ({"cells": 2.5}, "cells"), ({"cells": 2, "steps": 5}, "steps"),
                                           ({"steps": 0}, "steps"), ({"substrate": "grey"}, "substrate")])
def test_bad_cells_steps_or_substrate_are_refused_by_name(quadrant_case, kwargs, named):
    model, x, m = quadrant_case
    with pytest.raises(ValueError, match=named):
        deletion_curve(model, x, m, [0], **kwargs)


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


def test_one_pointing_rule_a_tied_plateau_counts_its_share_inside_the_grown_mask():
    from core.baseline_maps import tolerant_hit

    mask = np.zeros((32, 32), dtype=bool)
    mask[:10, :10] = True  # rows 0-9
    m = np.zeros((32, 32))
    m[9:11, 4:6] = 1.0  # a tied 2 x 2 maximum, its top row inside the mask
    for hit in (pointing_game(m, mask)["hit"], pointing_game(m, mask, tolerance=0)["hit"], tolerant_hit(m, mask, 0)):
        assert hit == pytest.approx(0.5)
    assert pointing_game(m, mask, tolerance=1)["hit"] == tolerant_hit(m, mask, 1) == 1.0
    m[9:11] = 0.0
    m[12:14, 4:6] = 1.0  # rows 12-13: within 3 px of the mask only its top row, the first maximal pixel
    assert pointing_game(m, mask, tolerance=3)["hit"] == pytest.approx(0.5)
    assert tolerant_hit(m, mask, 3) == pytest.approx(0.5)
    assert pointing_game(m, mask)["hit"] == 0.0
    assert pointing_game(m, mask, tolerance=3)["energy"] == pointing_game(m, mask)["energy"] == 0.0, \
        "the energy is always that inside the mask itself"
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(m, mask, tolerance=-1)
