"""Scans found from the pixels of shuffled slices (`core.scans`), on volumes made here whose scans are known."""

import numpy as np
import pytest
from PIL import Image

from core.scans import find_scans, outer_slices, positions, slice_signatures
from tests.support import slice_volume


@pytest.fixture(scope="module")
def shuffled():
    """Four scans' slices, shuffled: (images, true scan per image, true depth per image)."""
    images, scan, depth = [], [], []
    for s in range(4):
        for d, plane in enumerate(slice_volume(100 + s)):
            images.append(Image.fromarray(plane.astype(np.uint8), "L"))
            scan.append(s)
            depth.append(d)
    order = np.random.default_rng(0).permutation(len(images))
    return [images[i] for i in order], np.array(scan)[order], np.array(depth)[order]


def test_signatures_are_unit_length_and_zero_mean_and_a_flat_image_is_zero():
    flat = Image.new("L", (30, 20), 7)
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8), "RGB")
    sig = slice_signatures([flat, rgb], side=16)
    assert sig.shape == (2, 256) and sig.dtype == np.float32
    assert not sig[0].any()
    assert abs(float(np.linalg.norm(sig[1])) - 1) < 1e-5 and abs(float(sig[1].mean())) < 1e-6


def test_each_scan_is_found_whole_and_apart_from_the_others(shuffled):
    images, scan, _ = shuffled
    found = find_scans(slice_signatures(images, side=32))
    assert len(np.unique(found)) == 4
    for s in range(4):  # one found label per true scan, and no found label shared by two
        assert len(np.unique(found[scan == s])) == 1
    assert len({int(found[scan == s][0]) for s in range(4)}) == 4
    assert found[0] == 0  # labels in order of each scan's first image


def test_a_threshold_above_every_link_leaves_each_slice_alone(shuffled):
    images, _, _ = shuffled
    assert len(np.unique(find_scans(slice_signatures(images, side=32), threshold=0.999999))) == len(images)
    with pytest.raises(ValueError, match="threshold"):
        find_scans(slice_signatures(images[:2], side=8), threshold=1.0)


def test_positions_follow_the_depth_and_the_outer_slices_are_the_ends(shuffled):
    images, scan, depth = shuffled
    sig = slice_signatures(images, side=32)
    found = find_scans(sig)
    place = positions(sig, found)
    for s in range(4):
        members = scan == s
        rank = np.argsort(np.argsort(place[members]))
        rho = np.corrcoef(rank, depth[members])[0, 1]
        assert abs(rho) > 0.99  # the chain's order is the depth's, one way or the other
    mask = outer_slices(found, place, per_end=2)
    assert sorted(set(depth[mask].tolist())) == [0, 1, 18, 19]
    assert mask.sum() == 4 * 4


def test_a_short_scan_is_left_whole_and_a_lone_slice_sits_in_the_middle():
    scans = np.array([0, 0, 0, 1])
    place = positions(np.eye(4, dtype=np.float32), scans)
    assert place[3] == 0.5
    assert not outer_slices(scans, np.array([0.0, 0.5, 1.0, 0.5]), per_end=2).any()
    with pytest.raises(ValueError, match="per_end"):
        outer_slices(scans, place, per_end=-1)


def test_an_unreadable_file_is_refused_or_given_a_zero_signature(tmp_path):
    from core.images import ImageError

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ImageError):
        slice_signatures([broken], side=8)
    assert not slice_signatures([broken], side=8, skip_unreadable=True).any()
