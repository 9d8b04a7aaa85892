"""Baseline maps like the maps they stand beside: random noise drawn at a map's own resolution, upsampled as the
explainers upsample theirs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.baseline_maps import MATCHED_RANDOM, baseline_map, matched_random

pytestmark = pytest.mark.usefixtures("single_thread")


def coarse_fit(maps: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares (n, cells, cells) arrays whose bilinear upsampling comes closest to ``maps``, and that
    upsampling: upsampling is linear, so its basis images span every upsampled coarse map."""
    size = maps.shape[-1]
    basis = torch.eye(cells * cells).view(-1, 1, cells, cells)
    columns = F.interpolate(basis, size=(size, size), mode="bilinear", align_corners=False).view(cells * cells, -1)
    coarse = torch.linalg.lstsq(columns.T.double(), torch.as_tensor(maps).view(len(maps), -1).T.double()).solution
    coarse = coarse.T.reshape(-1, 1, cells, cells).float()
    return coarse[:, 0].numpy(), F.interpolate(coarse, size=(size, size), mode="bilinear",
                                               align_corners=False)[:, 0].numpy()


def test_matched_random_is_a_coarse_random_map_upsampled():
    maps = baseline_map("random", 3, 128, seed=5, cells=4)
    assert maps.shape == (3, 128, 128) and maps.dtype == np.float32
    coarse, upsampled = coarse_fit(maps, 4)
    assert np.allclose(maps, upsampled, atol=1e-5)
    assert np.all((coarse > -1e-4) & (coarse < 1 + 1e-4)) and coarse.std() > 0.1  # uniform noise at 4 x 4
    assert np.array_equal(maps, matched_random(3, 128, 4, seed=5))
    assert np.array_equal(maps, baseline_map(MATCHED_RANDOM, 3, 128, seed=5, cells=4))
    # the per-pixel random map is no upsampled 4 x 4 map
    per_pixel = baseline_map("random", 3, 128, seed=5)
    assert not np.allclose(per_pixel, coarse_fit(per_pixel, 4)[1], atol=0.1)


def test_matched_random_is_seeded_and_takes_a_grid_of_rows_and_columns():
    a = matched_random(2, 32, 4, seed=0)
    assert np.array_equal(a, matched_random(2, 32, 4, seed=0))
    assert not np.allclose(a, matched_random(2, 32, 4, seed=1))
    assert not np.allclose(a[0], a[1])  # each image its own noise
    wide = matched_random(1, 32, (1, 4), seed=0)
    assert np.allclose(wide[0], wide[0, :1])  # one row of cells: every pixel row the same
    assert not np.allclose(wide[0], wide[0, :, :1])
    # a cell per pixel: the per-pixel random map itself
    assert np.array_equal(matched_random(2, 8, 8, seed=3), baseline_map("random", 2, 8, seed=3))


@pytest.mark.parametrize("cells", [0, 33, (4, 0), (2, 2, 2), 2.5])
def test_bad_cells_are_refused_by_name(cells):
    with pytest.raises(ValueError, match="cells"):
        matched_random(1, 32, cells, seed=0)


def test_the_matched_random_name_needs_cells_and_other_baselines_refuse_them():
    with pytest.raises(ValueError, match="cells"):
        baseline_map(MATCHED_RANDOM, 1, 32, seed=0)
    with pytest.raises(ValueError, match="cells"):
        baseline_map("centre", 1, 32, seed=0, cells=4)
