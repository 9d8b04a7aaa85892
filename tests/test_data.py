"""Folder datasets: layout checks, splits, protocols, decoding, skips, fingerprints, status."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.catalog import DATASETS, REPO_ROOT, DatasetError, dataset_status, resolve_root
from core.data import FolderDataset, InMemoryDataset, data_fingerprint, load_dataset, materialize

NAME = "alzheimer"  # any registered folder dataset works; its class names are used below
CLASSES = DATASETS[NAME].classes
COUNTS = {"train": [20, 7, 13, 10], "test": [5, 2, 4, 3]}
SHARED = REPO_ROOT.parent / "shared" / "datasets"
REAL = {"brain_tumor": (5505, 960), "eye_disease": (3370, 740), "alzheimer": (5121, 1122)}


def write_image(path: Path, seed: int, mode: str = "L", size=(20, 14)) -> None:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A tiny dataset in ImageFolder layout: grey and colour JPEGs/PNGs of odd sizes."""
    seed = 0
    for split, counts in COUNTS.items():
        for cls, n in zip(CLASSES, counts):
            folder = tmp_path / NAME / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                ext, mode = (".jpg", "L") if i % 3 else (".png", "RGB")
                write_image(folder / f"{cls}_{i:03d}{ext}", seed=seed, mode=mode)
                seed += 1
    return tmp_path


def all_files(ds: FolderDataset) -> set[str]:
    return {rel for rel, _ in ds.samples}


def test_items_are_float_rgb_in_unit_range(root):
    ds = load_dataset(NAME, "test", root, input_size=32)
    assert isinstance(ds, FolderDataset) and ds.classes == list(CLASSES) and ds.info.name == NAME
    assert len(ds) == sum(COUNTS["test"]) and ds.targets == sorted(ds.targets)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == ds.targets[i]
        assert 0 <= x.min() <= x.max() <= 1
    grey = next(i for i, (rel, _) in enumerate(ds.samples) if rel.endswith(".jpg"))
    x, _ = ds[grey]
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey becomes three equal channels
    assert load_dataset(NAME, "test", root)[0][0].shape == (3, 128, 128)  # registry default


def test_val_split_is_stratified_disjoint_and_deterministic(root):
    train, val = load_dataset(NAME, "train", root, seed=0), load_dataset(NAME, "val", root, seed=0)
    assert not all_files(train) & all_files(val)
    folder = {f"train/{p.parent.name}/{p.name}" for p in (root / NAME / "train").glob("*/*")}
    assert all_files(train) | all_files(val) == folder
    for label, n in enumerate(COUNTS["train"]):
        assert val.targets.count(label) == round(0.15 * n)
    assert all_files(val) == all_files(load_dataset(NAME, "val", root, seed=0))
    others = [all_files(load_dataset(NAME, "val", root, seed=s)) for s in range(1, 6)]
    assert any(o != all_files(val) for o in others)
    assert load_dataset(NAME, "val", root, val_fraction=0.5).targets.count(0) == 10
    test = load_dataset(NAME, "test", root, seed=3)
    assert all(rel.startswith("test/") for rel in all_files(test))  # test never moves under "official"
    with pytest.raises(DatasetError, match="val_fraction"):
        load_dataset(NAME, "val", root, val_fraction=0.0)


def test_pooled_protocol_resplits_train_and_test(root):
    parts = {s: load_dataset(NAME, s, root, protocol="pooled", seed=1) for s in ("train", "val", "test")}
    files = {s: all_files(ds) for s, ds in parts.items()}
    assert not files["train"] & files["val"] and not files["train"] & files["test"] and not files["val"] & files["test"]
    everything = {f"{p.parents[1].name}/{p.parent.name}/{p.name}" for p in (root / NAME).glob("*/*/*")}
    assert files["train"] | files["val"] | files["test"] == everything
    test_fraction = sum(COUNTS["test"]) / (sum(COUNTS["train"]) + sum(COUNTS["test"]))
    for label, n in enumerate(np.add(COUNTS["train"], COUNTS["test"])):
        assert parts["test"].targets.count(label) == round(test_fraction * n)
    assert any(rel.startswith("train/") for rel in files["test"])  # former train files now in test
    assert files["test"] == all_files(load_dataset(NAME, "test", root, protocol="pooled", seed=1))
    assert data_fingerprint(parts["test"]) != data_fingerprint(load_dataset(NAME, "test", root))
    with pytest.raises(DatasetError, match="protocol"):
        load_dataset(NAME, "test", root, protocol="leaky")


def test_missing_root_says_how_to_fix(tmp_path):
    with pytest.raises(DatasetError, match="KD_DATA_ROOT") as err:
        load_dataset(NAME, "train", tmp_path / "nowhere")
    assert "core.fetch" in str(err.value)
    with pytest.raises(DatasetError, match="missing"):
        load_dataset(NAME, "train", tmp_path)  # root exists, dataset folder does not


def test_missing_class_folder(root):
    for p in (root / NAME / "test" / CLASSES[1]).iterdir():
        p.unlink()
    (root / NAME / "test" / CLASSES[1]).rmdir()
    with pytest.raises(DatasetError, match=f"missing \\['{CLASSES[1]}'\\]"):
        load_dataset(NAME, "test", root)


def test_unexpected_class_folder(root):
    (root / NAME / "train" / "Demented").mkdir()
    with pytest.raises(DatasetError, match="unexpected \\['Demented'\\]"):
        load_dataset(NAME, "val", root)


def test_empty_class_folder(root):
    for p in (root / NAME / "test" / CLASSES[0]).iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match="no images"):
        load_dataset(NAME, "test", root)


def test_non_image_file_is_a_clear_error_but_hidden_litter_is_ignored(root):
    (root / NAME / "test" / CLASSES[2] / ".DS_Store").write_bytes(b"\0")
    assert len(load_dataset(NAME, "test", root)) == sum(COUNTS["test"])
    (root / NAME / "test" / CLASSES[2] / "notes.txt").write_text("labels checked by hand")
    with pytest.raises(DatasetError, match="notes.txt"):
        load_dataset(NAME, "test", root)


# Folders the scan cannot read: (name, change to the tiny dataset, what the one-line error names). Each ends in a
# `DatasetError`, which the training command and every page report, never a raw operating-system error.
def _looping_image(root: Path, monkeypatch) -> None:
    link = root / NAME / "test" / CLASSES[1] / "loop.png"
    link.symlink_to(link)


def _looping_class_folder(root: Path, monkeypatch) -> None:
    folder = root / NAME / "test" / CLASSES[2]
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    folder.symlink_to(folder)


def _looping_link_beside_the_classes(root: Path, monkeypatch) -> None:
    link = root / NAME / "test" / "elsewhere"
    link.symlink_to(link)


def _unreadable_class_folder(root: Path, monkeypatch) -> None:
    # the tests may run as root, who reads any folder: the refusal is what the system would answer anyone else
    import core.catalog

    locked, scandir = root / NAME / "test" / CLASSES[3], core.catalog.os.scandir

    def refuse(path):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(core.catalog.os, "scandir", refuse)


FOLDER_FAULTS = [
    (_looping_image, "loop.png: Too many levels of symbolic links"),
    (_looping_class_folder, f"{CLASSES[2]}: Too many levels of symbolic links"),
    (_looping_link_beside_the_classes, "elsewhere: Too many levels of symbolic links"),
    (_unreadable_class_folder, f"{CLASSES[3]}: Permission denied"),
]


@pytest.mark.parametrize("spoil, says", FOLDER_FAULTS, ids=[f.__name__.strip("_") for f, _ in FOLDER_FAULTS])
def test_a_folder_the_scan_cannot_read_is_one_clear_dataset_error(root, monkeypatch, spoil, says):
    spoil(root, monkeypatch)
    with pytest.raises(DatasetError) as err:
        load_dataset(NAME, "test", root)
    message = str(err.value)
    assert says in message and "\n" not in message and "Errno" not in message, message
    assert "remove" in message or "permission" in message.lower(), message  # says what to do
    status = dataset_status(NAME, root)  # the sidebar's view of the same folder: a reason, not an exception
    assert not status["available"] and says in status["reason"]


def test_unreadable_images_are_skipped_and_counted(root, caplog):
    folder = root / NAME / "test" / CLASSES[0]
    good = next(folder.glob("*.jpg")).read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "not_really.jpg").write_bytes(b"this is text, not a JPEG")
    ds = load_dataset(NAME, "test", root, input_size=16)
    assert len(ds) == sum(COUNTS["test"]) + 2
    bad = [i for i, (rel, _) in enumerate(ds.samples) if "truncated" in rel][0]
    with pytest.raises(DatasetError, match="truncated"):
        ds[bad]
    with caplog.at_level(logging.WARNING, logger="core.data"):
        mem = materialize(ds, progress=False)
    assert len(mem) == sum(COUNTS["test"]) and len(mem.skipped) == 2
    assert {Path(p).name for p, _ in mem.skipped} == {"truncated.jpg", "not_really.jpg"}
    assert "skipped 2" in caplog.text
    assert data_fingerprint(mem) != data_fingerprint(ds)  # the fingerprint says what was kept


def test_materialize_equals_lazy_items(root):
    ds = load_dataset(NAME, "train", root, input_size=24)
    mem = materialize(ds, progress=False)
    assert isinstance(mem, InMemoryDataset) and mem.images.dtype == torch.uint8
    assert mem.images.shape == (len(ds), 3, 24, 24) and mem.masks is None and not mem.skipped
    assert mem.targets.tolist() == ds.targets and mem.paths == [rel for rel, _ in ds.samples]
    for i in (0, len(ds) // 2, len(ds) - 1):
        assert torch.equal(mem[i][0], ds[i][0]) and mem[i][1] == ds[i][1]
    assert data_fingerprint(mem) == data_fingerprint(ds)
    assert materialize(mem) is mem
    small = materialize(ds, progress=False, max_per_class=3)
    assert np.bincount(small.targets.numpy()).tolist() == [3, 3, 3, 3]
    with pytest.raises(DatasetError, match="masks"):
        mem.mask(0)


def test_fingerprint_depends_on_files_split_seed_and_protocol(root):
    fp = data_fingerprint(load_dataset(NAME, "train", root))
    assert fp == data_fingerprint(load_dataset(NAME, "train", root, input_size=64))  # size is not data identity
    assert fp != data_fingerprint(load_dataset(NAME, "train", root, seed=1))
    assert fp != data_fingerprint(load_dataset(NAME, "val", root))
    write_image(root / NAME / "train" / CLASSES[3] / "new.png", seed=9)
    assert fp != data_fingerprint(load_dataset(NAME, "train", root))


def test_dataset_status_reports_counts_or_reason_without_raising(root, tmp_path):
    ok = dataset_status(NAME, root)
    assert ok["available"] and ok["reason"] is None and ok["classes"] == list(CLASSES)
    assert ok["counts"]["train"] == dict(zip(CLASSES, COUNTS["train"]))
    assert ok["totals"] == {"train": sum(COUNTS["train"]), "test": sum(COUNTS["test"])}
    missing = dataset_status("brain_tumor", root)
    assert not missing["available"] and "KD_DATA_ROOT" in missing["reason"]
    assert not dataset_status(NAME, tmp_path / "nowhere")["available"]
    unknown = dataset_status("mnist")
    assert not unknown["available"] and "known" in unknown["reason"]
    phantom = dataset_status("phantom")
    assert phantom["available"] and phantom["totals"] == {"train": 960, "val": 192, "test": 384}


def test_root_resolution_order(tmp_path, monkeypatch):
    import core.catalog

    repo, elsewhere = tmp_path / "work" / "repo", tmp_path / "elsewhere" / "cwd"
    repo.mkdir(parents=True), elsewhere.mkdir(parents=True)
    monkeypatch.setattr(core.catalog, "REPO_ROOT", repo)
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("KD_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_root(tmp_path / "arg") == tmp_path / "arg"  # an argument first
    assert resolve_root() == tmp_path / "env"  # then the environment
    monkeypatch.delenv("KD_DATA_ROOT")
    assert resolve_root() == Path("data")  # nothing beside the repository or the working folder
    (tmp_path / "elsewhere" / "shared" / "datasets").mkdir(parents=True)
    assert resolve_root() == tmp_path / "elsewhere" / "shared" / "datasets"  # beside the working folder
    (tmp_path / "work" / "shared" / "datasets").mkdir(parents=True)
    assert resolve_root() == tmp_path / "work" / "shared" / "datasets"  # beside the repository wins


def test_unknown_names_and_options(root):
    with pytest.raises(DatasetError, match="known"):
        load_dataset("mnist", "train")
    with pytest.raises(DatasetError, match="split"):
        load_dataset(NAME, "validation", root)
    with pytest.raises(DatasetError, match="phantom"):
        load_dataset(NAME, "train", root, n_train=10)


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real datasets not present at {SHARED}")
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_datasets_load_with_the_right_classes_and_counts(name):
    n_train, n_test = REAL[name]
    status = dataset_status(name, SHARED)
    assert status["available"] and status["totals"] == {"train": n_train, "test": n_test}
    train, val, test = (load_dataset(name, s, SHARED) for s in ("train", "val", "test"))
    assert train.classes == val.classes == test.classes == list(DATASETS[name].classes)
    assert len(train) + len(val) == n_train and len(test) == n_test
    assert not all_files(train) & all_files(val)
    for label in range(4):  # decode one image per class, no more
        x, y = test[test.targets.index(label)]
        assert x.shape == (3, 128, 128) and y == label and 0 <= x.min() <= x.max() <= 1
    pooled = load_dataset(name, "test", SHARED, protocol="pooled")
    assert abs(len(pooled) - n_test) <= 4  # per-class rounding of the same test fraction
