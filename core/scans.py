"""Which images of a slice dataset are slices of one scan, and where in the scan each lies, found from the pixels.

Why. A dataset of MRI slices (alzheimer: 6,400 axial slices, no subject ids) can hold many slices of each scan.
Neighbouring slices of one scan are near copies of each other, so a validation share carved at random from the
training images shares scans, and nearly the pixels, with what the model trains on: it measures how well the model
interpolates between slices it has seen, not how it does on the test images. Which kind of held-out image the test
split holds is found here too (`benchmarks/slice_scans.py` measures it on alzheimer).

How. Each image becomes a signature: grayscale, resized to ``side`` x ``side``, zero mean and unit length, so the dot
product of two signatures is the Pearson correlation of their pixels (`slice_signatures`). Two images whose
correlation is above ``threshold`` are joined, and the connected sets are the scans (`find_scans`, a union-find over
the joined pairs). Adjacent slices of one registered brain correlate at about 0.99; slices of different subjects at
about 0.9 (every scan is registered to one atlas, so all look alike); the default threshold lies between. Within
a scan the slices form a chain from one end to the other, and their order along it is the Fiedler vector of the
scan's similarity graph (`positions`: the spectral ordering of a path).
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np
from PIL import Image

from core.images import ImageError, open_image

__all__ = ["SCAN_THRESHOLD", "SIGNATURE_SIDE", "slice_signatures", "find_scans", "positions", "outer_slices"]

SIGNATURE_SIDE = 64
# on alzheimer at 64 px (benchmarks/slice_scans.py) adjacent slices correlate at 0.99 and its 5,121 training images
# form 200 scans of 25-26 slices above 0.98 (6,400 slices / 32 per scan, the test split holding the rest)
SCAN_THRESHOLD = 0.98
_ROWS = 1024  # rows of the correlation matrix held at once: memory stays O(rows x images)
_SHARPEN = 8  # weights of the ordering graph: correlation ** 8 keeps the chain's adjacent links, fades the rest


def slice_signatures(images: Iterable[str | os.PathLike | Image.Image], side: int = SIGNATURE_SIDE,
                     skip_unreadable: bool = False) -> np.ndarray:
    """(N, side * side) float32 signatures: each image grayscale, resized, zero mean and unit length.

    A flat image (every pixel equal) has no correlation with anything: its signature is all zeros; so has a file
    that cannot be read, with ``skip_unreadable`` (otherwise its `ImageError` is raised), which then joins no scan.
    """
    if side < 2:
        raise ValueError(f"side must be at least 2 pixels, got {side}")
    rows = []
    for item in images:
        try:
            image = item if isinstance(item, Image.Image) else open_image(item)
        except ImageError:
            if not skip_unreadable:
                raise
            rows.append(np.zeros(side * side, np.float32))
            continue
        pixels = np.asarray(image.convert("L").resize((side, side), Image.BILINEAR), dtype=np.float32).ravel()
        pixels = pixels - pixels.mean()
        norm = float(np.linalg.norm(pixels))
        rows.append(pixels / norm if norm > 0 else pixels)
    return np.stack(rows) if rows else np.zeros((0, side * side), np.float32)


def _root(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def find_scans(signatures: np.ndarray, threshold: float = SCAN_THRESHOLD) -> np.ndarray:
    """A scan label per image (0, 1, ... in order of each scan's first image): the connected sets of the graph that
    joins two images whose signatures correlate above ``threshold``."""
    if not -1 < threshold < 1:
        raise ValueError(f"threshold must lie in (-1, 1), got {threshold}")
    n = len(signatures)
    parent = np.arange(n)
    for start in range(0, n, _ROWS):
        block = signatures[start:start + _ROWS] @ signatures.T
        for i, j in zip(*np.nonzero(block > threshold)):
            a, b = _root(parent, start + int(i)), _root(parent, int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = np.array([_root(parent, i) for i in range(n)], dtype=np.int64)
    _, labels = np.unique(roots, return_inverse=True)  # roots are each set's smallest index: first-image order
    return labels.astype(np.int64)


def positions(signatures: np.ndarray, scans: np.ndarray) -> np.ndarray:
    """Each image's place along its scan's chain, 0 at one end and 1 at the other (0.5 for a scan of one image).

    Which end is 0 is arbitrary (a chain has no direction); `outer_slices` uses the distance to the nearer end.
    """
    out = np.full(len(scans), 0.5)
    for scan in np.unique(scans):
        members = np.nonzero(scans == scan)[0]
        if len(members) < 2:
            continue
        weights = np.clip(signatures[members] @ signatures[members].T, 0, None) ** _SHARPEN
        np.fill_diagonal(weights, 0)
        laplacian = np.diag(weights.sum(1)) - weights
        fiedler = np.linalg.eigh(laplacian)[1][:, 1]
        rank = np.argsort(np.argsort(fiedler, kind="stable"), kind="stable")
        out[members] = rank / (len(members) - 1)
    return out


def outer_slices(scans: np.ndarray, place: np.ndarray, per_end: int) -> np.ndarray:
    """A mask of the ``per_end`` slices at each end of every scan (a scan with at most ``2 * per_end`` slices is
    left whole: carving all of a scan would hold out a subject, not its outer slices)."""
    if per_end < 0:
        raise ValueError(f"per_end must be at least 0, got {per_end}")
    mask = np.zeros(len(scans), bool)
    for scan in np.unique(scans):
        members = np.nonzero(scans == scan)[0]
        if len(members) <= 2 * per_end or per_end == 0:
            continue
        ordered = members[np.argsort(place[members], kind="stable")]
        mask[ordered[:per_end]] = mask[ordered[-per_end:]] = True
    return mask
