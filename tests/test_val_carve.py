"""The validation carve: the outer slices of every scan of a slice dataset (``val_carve="scan_ends"``), beside the
seeded random share, through the catalog, the datasets and the recipe."""

import re

import numpy as np
import pytest
from PIL import Image

from core.catalog import DatasetError, split_files
from core.data import data_fingerprint, load_dataset
from core.recipe import SettingError, TrainConfig
from core.train.cli import build_parser, config_from_args
from tests.support import write_slice_folder

DEPTH = 20
pytestmark = pytest.mark.usefixtures("registry_restored")


@pytest.fixture
def root(tmp_path):
    """Four scans of 20 slices (two per class), the first and last slice of each in test."""
    write_slice_folder(tmp_path / "slices", depth=DEPTH, test_slices=(0, DEPTH - 1))
    return tmp_path


def _depth(rel: str) -> int:
    return int(re.search(r"slice(\d+)", rel).group(1))


def _scan(rel: str) -> int:
    return int(re.search(r"scan(\d+)", rel).group(1))


def test_scan_ends_holds_out_the_outer_slices_of_every_training_scan(root):
    train = split_files("slices", "train", root, val_fraction=0.2, val_carve="scan_ends")
    val = split_files("slices", "val", root, val_fraction=0.2, val_carve="scan_ends")
    # each training scan holds slices 1..18 (18 slices): a fifth of 18 over two ends rounds to 2 at each end
    for cls in ("a", "b"):
        assert sorted({_depth(r) for r in val[cls]}) == [1, 2, 17, 18]
        assert len(val[cls]) == 2 * 4 and not set(val[cls]) & set(train[cls])
        assert len(train[cls]) + len(val[cls]) == 2 * (DEPTH - 2)
        assert {_scan(r) for r in val[cls]} == {_scan(r) for r in train[cls]}  # every scan keeps its middle
    random_val = split_files("slices", "val", root, val_fraction=0.2)
    assert {_depth(r) for cls in ("a", "b") for r in random_val[cls]} - {1, 2, 17, 18}  # the random carve: anywhere


def test_scan_ends_needs_no_seed_and_leaves_test_alone(root):
    for split in ("train", "val"):
        assert split_files("slices", split, root, seed=0, val_carve="scan_ends") == \
            split_files("slices", split, root, seed=7, val_carve="scan_ends")
    assert split_files("slices", "test", root, val_carve="scan_ends") == split_files("slices", "test", root)
    assert not any(split_files("slices", "val", root, val_fraction=0.0, val_carve="scan_ends").values())


def test_a_folder_that_is_not_slices_is_refused_with_the_random_carve_named(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 3)):
        for cls in ("a", "b"):
            folder = tmp_path / "noise" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8), "L").save(folder / f"{i}.png")
    with pytest.raises(DatasetError, match="slices of one scan.*random carve"):
        split_files("noise", "val", tmp_path, val_carve="scan_ends")
    with pytest.raises(DatasetError, match="val_carve must be one of"):
        split_files("noise", "val", tmp_path, val_carve="ends")


def test_the_carve_is_in_the_fingerprints_of_train_and_val_only(root):
    def fingerprint(split, carve):
        return data_fingerprint(load_dataset("slices", split, root=root, input_size=16, val_fraction=0.2,
                                             val_carve=carve))
    assert fingerprint("train", "scan_ends") != fingerprint("train", "random")
    assert fingerprint("val", "scan_ends") != fingerprint("val", "random")
    assert fingerprint("test", "scan_ends") == fingerprint("test", "random")
    assert load_dataset("slices", "val", root=root, input_size=16, val_carve="scan_ends").val_carve == "scan_ends"
    with pytest.raises(DatasetError, match="phantom.*val_carve='random'"):
        load_dataset("phantom", "val", input_size=16, val_carve="scan_ends")


def test_the_recipe_and_the_command_line_take_the_carve_and_refuse_an_unknown_one():
    assert TrainConfig().val_carve == "random"
    with pytest.raises(SettingError, match="val_carve"):
        TrainConfig(val_carve="outer")
    cfg = config_from_args(build_parser().parse_args(["--dataset", "alzheimer", "--val-carve", "scan_ends"]))
    assert cfg.val_carve == "scan_ends"
    with pytest.raises(SettingError, match="val_carve.*phantom"):  # refused before a teacher trains, not after
        TrainConfig(dataset="phantom", val_carve="scan_ends")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--val-carve", "outer"])


def test_an_unreadable_training_file_joins_no_scan_and_stays_in_train(root):
    broken = root / "slices" / "train" / "a" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    train = split_files("slices", "train", root, val_fraction=0.2, val_carve="scan_ends")
    val = split_files("slices", "val", root, val_fraction=0.2, val_carve="scan_ends")
    assert "train/a/broken.png" in train["a"] and sorted({_depth(r) for r in val["a"]}) == [1, 2, 17, 18]


def test_a_checkpoint_trained_on_the_scan_ends_carve_is_evaluated_on_its_own_validation_split(root):
    from core.evaluate import evaluation_split
    from core.metadata import CheckpointMeta

    meta = CheckpointMeta(arch="student", num_classes=2, classes=["a", "b"], input_size=16, mean=[0.5] * 3,
                          std=[0.25] * 3, dataset="slices", train={"val_carve": "scan_ends", "data_seed": 0})
    val = evaluation_split(meta, "val", root=str(root))
    carved = split_files("slices", "val", root, val_carve="scan_ends")
    assert len(val) == sum(map(len, carved.values())) == 8  # 15% of 18 over two ends: one slice at each end
    assert data_fingerprint(val) == data_fingerprint(load_dataset("slices", "val", root=root, input_size=16,
                                                                   val_carve="scan_ends"))
