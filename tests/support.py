"""Test helpers shared by the fixtures in ``tests/conftest.py`` and the app tests (``tests/apptest_support.py``)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class ForwardCounter:
    """Counts images pushed through a model (a batch of 16 counts 16) and forward calls.

    A forward pre-hook on the root module, and a wrapper around ``forward_intermediates`` where the model has
    one (the same pass without hooks); ``remove()`` both when done.
    """

    def __init__(self, model: nn.Module):
        self.images = self.calls = 0
        self._model = model
        self._handle = model.register_forward_pre_hook(self._count)
        own = getattr(type(model), "forward_intermediates", None)
        if own is not None:
            def counted(x, *args, **kwargs):
                self._count(model, (x,))
                return own(model, x, *args, **kwargs)
            model.forward_intermediates = counted

    def _count(self, module, inputs):
        self.images += inputs[0].shape[0]
        self.calls += 1

    def reset(self) -> None:
        self.images = self.calls = 0

    def remove(self) -> None:
        self._handle.remove()
        self._model.__dict__.pop("forward_intermediates", None)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the block on one torch CPU thread (the previous count is restored afterwards).

    Two OpenMP threads on a 2-core machine that other jobs share can be 40x slower than one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def student_as_teacher(root):
    """``root/phantom`` holding the shipped phantom student as both models (a teacher whose passes take moments),
    linked, not copied; returns the folder."""
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "phantom"
    folder = Path(root) / "phantom"
    folder.mkdir(parents=True)
    for role in ("teacher", "student"):
        for suffix in (".pt", ".json"):
            (folder / f"{role}{suffix}").symlink_to(shipped / f"student{suffix}")
    return folder


def ship_seeded_head(folder, seed: int = 0):
    """A seeded evidence head (its cost and shape, not trained weights) shipped beside ``folder``'s student.pt, made
    for its teacher.pt, as `core.teacher_evidence.save_head` writes it; returns ``folder``."""
    from core import checkpoints
    from core.cam import cam_head
    from core.teacher_evidence import HEAD_FILE, save_head
    from core.evidence_model import EvidenceHead

    classifier = cam_head(checkpoints.load(folder / "student.pt")[0]).classifier
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = EvidenceHead(classifier.in_features, classifier.out_features).eval()
    save_head(head, folder / HEAD_FILE, student_file=folder / "student.pt", teacher_file=folder / "teacher.pt",
              seed=seed, epochs=1, history=[1.0])
    return folder


def slice_volume(seed: int, side: int = 48, depth: int = 20):
    """A smooth random volume (depth, side, side) in [0, 255]: blobs wide enough that adjacent slices are near
    copies of each other, as in a registered MRI scan (`core.scans`)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(np.arange(depth), np.arange(side), np.arange(side), indexing="ij")
    vol = np.zeros((depth, side, side))
    for _ in range(25):
        cz, cy, cx = rng.uniform(-5, depth + 5), rng.uniform(0, side), rng.uniform(0, side)
        vol += rng.uniform(0.5, 1.0) * np.exp(-((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / (2 * 7.0 ** 2))
    return 255 * (vol - vol.min()) / (vol.max() - vol.min())


def write_slice_folder(folder, classes=("a", "a", "b", "b"), depth: int = 20, test_slices=(), seed: int = 200):
    """A dataset folder of slices, ``folder/{train,test}/<class>/scan<k>_slice<d>.png``: one scan per entry of
    ``classes`` (of that class), its ``test_slices`` in test and the rest in train. Returns ``folder``."""
    import numpy as np
    from PIL import Image

    for k, cls in enumerate(classes):
        for d, plane in enumerate(slice_volume(seed + k, depth=depth)):
            split = folder / ("test" if d in test_slices else "train") / cls
            split.mkdir(parents=True, exist_ok=True)
            Image.fromarray(plane.astype(np.uint8), "L").save(split / f"scan{k}_slice{d:02d}.png")
    return folder
