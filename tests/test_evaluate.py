"""Evaluation of shipped checkpoints: the numbers without some test images come from the same predictions."""

import numpy as np
import torch
from PIL import Image

from core import checkpoints
from core.catalog import DATASETS
from core.checkpoints import CheckpointMeta
from core.evaluate import evaluate_checkpoints
from core.models import build_student


def test_the_report_without_some_images_equals_an_evaluation_that_leaves_them_out(tmp_path):
    classes = list(DATASETS["brain_tumor"].classes)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            folder = tmp_path / "data" / "brain_tumor" / split / c
            folder.mkdir(parents=True)
            for k in range(4):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{c}_{k}.png")
    paths = {}
    for seed, role in enumerate(("teacher", "student")):
        meta = CheckpointMeta(arch="student", num_classes=4, classes=classes, input_size=32, mean=[0.5] * 3,
                              std=[0.25] * 3, role="student", dataset="brain_tumor", arch_args={"depth": 3})
        paths[role] = checkpoints.save(_student(seed), meta, tmp_path / f"{role}.pt")
    root = str(tmp_path / "data")

    def near_copy(path: str) -> bool:
        return path.endswith("_0.png")

    once = evaluate_checkpoints(paths, root=root, n_boot=20, also_without=near_copy)
    apart = evaluate_checkpoints(paths, root=root, n_boot=20, exclude=near_copy)
    assert once["models"]["teacher"]["n"] == 16 and once["without"]["models"]["teacher"]["n"] == 12
    for role in paths:
        for key in ("n", "accuracy", "macro_f1", "balanced_accuracy"):
            assert once["without"]["models"][role][key] == apart["models"][role][key], (role, key)
    assert once["without"]["pairs"]["student"]["agreement"] == apart["pairs"]["student"]["agreement"]


def _student(seed: int):
    torch.manual_seed(seed)
    return build_student(4, depth=3).eval()
