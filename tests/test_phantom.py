"""The phantom: deterministic, balanced, masks aligned with lesions, not solvable by a global statistic."""


import numpy as np
import pytest
import torch

from core.catalog import DatasetError
from core.data import data_fingerprint, load_dataset, materialize
from core.phantom import DEFAULT_SPLIT_SIZES, PHANTOM_CLASSES, PhantomDataset, render_phantom


@pytest.fixture(scope="module")
def train_items():
    return render_phantom(0, "train", range(400), 64)


def _dilate(mask: np.ndarray, k: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            out |= np.roll(np.roll(mask, dy, -2), dx, -1)
    return out


def test_same_seed_same_pixels_and_items_do_not_depend_on_batch():
    a_img, a_mask, a_lab = render_phantom(3, "train", range(12), 64)
    b_img, b_mask, b_lab = render_phantom(3, "train", range(12), 64)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask) and np.array_equal(a_lab, b_lab)
    alone_img, alone_mask, _ = render_phantom(3, "train", [7], 64)  # rendered alone vs. in a batch
    assert np.array_equal(alone_img[0], a_img[7]) and np.array_equal(alone_mask[0], a_mask[7])


def test_indices_seeds_and_splits_give_different_images():
    img, _, _ = render_phantom(0, "train", range(40), 64)
    assert len({im.tobytes() for im in img}) == 40
    other_seed, _, _ = render_phantom(1, "train", range(40), 64)
    assert not any(np.array_equal(a, b) for a, b in zip(img, other_seed))
    hashes = {}
    for split in ("train", "val", "test"):
        imgs, _, _ = render_phantom(0, split, range(100), 64)
        hashes[split] = {im.tobytes() for im in imgs}
    assert not hashes["train"] & hashes["val"] and not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]


def test_default_sizes_balanced_classes_and_overrides():
    for split, n in DEFAULT_SPLIT_SIZES.items():
        ds = load_dataset("phantom", split)
        assert len(ds) == n and ds.classes == list(PHANTOM_CLASSES)
        assert np.bincount(ds.targets).tolist() == [n // 4] * 4
    assert (DEFAULT_SPLIT_SIZES["train"], DEFAULT_SPLIT_SIZES["val"], DEFAULT_SPLIT_SIZES["test"]) == (960, 192, 384)
    assert len(load_dataset("phantom", "train", n_train=40)) == 40
    assert len(load_dataset("phantom", "test", n_train=40, n_test=12)) == 12
    assert load_dataset("phantom", "train").info.name == "phantom"


def test_items_are_float_rgb_in_unit_range_at_requested_size():
    ds = load_dataset("phantom", "val", input_size=96, n_val=8)
    x, y = ds[3]
    assert x.shape == (3, 96, 96) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2]) and y == 3
    assert ds.mask(3).shape == (96, 96) and ds.mask(3).dtype == bool
    assert load_dataset("phantom", "train")[0][0].shape == (3, 64, 64)  # registry default 64 px


def test_mask_empty_iff_no_lesion_and_lesion_large_enough(train_items):
    img, mask, labels = train_items
    assert mask.shape == img.shape and mask.dtype == bool
    areas = mask.sum(axis=(1, 2))
    assert (areas[labels == 0] == 0).all()
    assert (areas[labels != 0] >= 15).all()  # at 64 px every lesion covers a visible patch
    head_area = (img > np.median(img[:, :4, :4], axis=(1, 2))[:, None, None] + 25).sum(axis=(1, 2))
    for label in (1, 2, 3):
        fraction = (areas / head_area)[labels == label].mean()
        assert 0.015 < fraction < 0.12, (PHANTOM_CLASSES[label], fraction)


def test_lesion_pixels_stand_out_from_their_surroundings_and_the_mask_is_aligned(train_items):
    img, mask, labels = train_items
    img = img.astype(float)
    for label in (1, 2, 3):
        true_contrast, shifted_contrast = [], []
        for i in np.flatnonzero(labels == label):
            ring = _dilate(mask[i], 2) & ~mask[i]
            true_contrast.append(img[i][mask[i]].mean() - img[i][ring].mean())
            moved = np.roll(mask[i], 4, axis=1)  # the same shape 4 px off
            moved_ring = _dilate(moved, 2) & ~moved
            shifted_contrast.append(img[i][moved].mean() - img[i][moved_ring].mean())
        true_contrast = np.array(true_contrast)
        assert (true_contrast > 0).mean() > 0.9, PHANTOM_CLASSES[label]
        assert true_contrast.mean() > 10, PHANTOM_CLASSES[label]
        if label != 2:  # an extra-axial mask moved sideways runs into the (brighter) skull
            assert true_contrast.mean() > np.mean(shifted_contrast) + 10, PHANTOM_CLASSES[label]


def test_lesion_types_differ_in_place():
    _, mask, labels = render_phantom(0, "test", range(200), 64)
    ys, xs = np.mgrid[0:64, 0:64]
    centre = np.array([31.5, 31.5])

    def dist_to_centre(i):
        return np.hypot(ys[mask[i]].mean() - centre[0], xs[mask[i]].mean() - centre[1])

    dist = {label: np.mean([dist_to_centre(i) for i in np.flatnonzero(labels == label)]) for label in (1, 2, 3)}
    # midline lesions sit near the centre, extra-axial ones against the skull, infiltrative in between
    assert dist[3] < dist[1] < dist[2]


def _nearest_class_mean_accuracy(train_feats, train_labels, test_feats, test_labels):
    scale = train_feats.std(axis=0) + 1e-9
    means = np.stack([train_feats[train_labels == c].mean(axis=0) for c in range(4)]) / scale
    dists = ((test_feats / scale)[:, None, :] - means[None]) ** 2
    return float((dists.sum(-1).argmin(1) == test_labels).mean())


def test_global_statistics_do_not_separate_the_classes():
    tr_img, _, tr_lab = render_phantom(0, "train", range(800), 64)
    te_img, _, te_lab = render_phantom(0, "test", range(400), 64)

    def stats(img):
        flat = img.reshape(len(img), -1).astype(float)
        head = (flat > np.median(img[:, :4, :4].reshape(len(img), -1), axis=1)[:, None] + 25).mean(axis=1)
        return {"mean": flat.mean(1), "std": flat.std(1), "head size": head}

    tr, te = stats(tr_img), stats(te_img)
    for combo in (["mean"], ["std"], ["head size"], ["mean", "std"], ["mean", "std", "head size"]):
        acc = _nearest_class_mean_accuracy(np.stack([tr[k] for k in combo], 1), tr_lab,
                                           np.stack([te[k] for k in combo], 1), te_lab)
        assert acc < 0.36, (combo, acc)  # chance is 0.25; 400 test items, so 0.36 is > 4 sigma away


def test_a_batch_renders_each_item_as_it_renders_alone():
    images, masks, labels = render_phantom(0, "train", [5, 0, 17], 64)
    for row, index in enumerate([5, 0, 17]):
        one = render_phantom(0, "train", [index], 64)
        assert np.array_equal(images[row], one[0][0]) and np.array_equal(masks[row], one[1][0])
        assert labels[row] == one[2][0]


def test_materialize_matches_items_and_carries_masks():
    ds = load_dataset("phantom", "val", n_val=24)
    mem = materialize(ds, progress=False)
    assert mem.images.shape == (24, 3, 64, 64) and mem.images.dtype == torch.uint8
    assert mem.masks.shape == (24, 64, 64) and mem.masks.dtype == torch.bool
    assert mem.targets.tolist() == ds.targets and mem.classes == ds.classes
    for i in (0, 5, 23):
        assert torch.equal(mem[i][0], ds[i][0]) and mem[i][1] == ds[i][1]
        assert np.array_equal(mem.mask(i), ds.mask(i))
    assert data_fingerprint(mem) == data_fingerprint(ds)
    small = materialize(ds, progress=False, max_per_class=2)
    assert np.bincount(small.targets.numpy()).tolist() == [2, 2, 2, 2]
    assert data_fingerprint(small) != data_fingerprint(ds)


def test_fingerprint_follows_generator_parameters():
    base = data_fingerprint(load_dataset("phantom", "train"))
    assert base == data_fingerprint(load_dataset("phantom", "train"))
    assert base != data_fingerprint(load_dataset("phantom", "train", seed=1))
    assert base != data_fingerprint(load_dataset("phantom", "val"))
    assert base != data_fingerprint(load_dataset("phantom", "train", input_size=96))
    assert base != data_fingerprint(load_dataset("phantom", "train", n_train=100))


def test_bad_phantom_arguments_raise_clear_errors():
    with pytest.raises(DatasetError, match="protocol"):
        load_dataset("phantom", "train", protocol="pooled")
    with pytest.raises(DatasetError, match="n_train"):
        load_dataset("phantom", "train", n_trian=5)
    with pytest.raises(DatasetError, match="size"):
        load_dataset("phantom", "train", input_size=8)
    with pytest.raises(DatasetError, match="seed"):
        load_dataset("phantom", "train", seed=-1)
    with pytest.raises(ValueError, match="split"):
        PhantomDataset("holdout")
    with pytest.raises(IndexError):
        load_dataset("phantom", "val", n_val=4)[4]
