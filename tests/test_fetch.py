"""Kaggle layouts are mapped onto ours, on fake Kaggle-shaped trees; nothing reaches the network."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.catalog import DATASETS, dataset_status
from core.data import load_dataset
from core.fetch import FetchError, arrange_kaggle_layout, fetch_dataset, main


def fill(folder: Path, n: int, prefix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = np.full((12, 12), (i * 37) % 256, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{prefix}_{i}.jpg")


def fake_brain(tmp: Path) -> Path:
    src = tmp / "kaggle" / "versions" / "1"  # kagglehub nests releases under versions/N
    for split, n in (("Training", 5), ("Testing", 2)):
        for cls in DATASETS["brain_tumor"].classes:
            fill(src / split / cls, n, f"{split[:2]}-{cls[:2]}")
    return tmp / "kaggle"


def fake_eye(tmp: Path, n: int = 11) -> Path:
    for cls in DATASETS["eye_disease"].classes:
        fill(tmp / "eye" / "dataset" / cls, n, cls)
    return tmp / "eye"


def fake_alzheimer(tmp: Path) -> Path:
    for split, n in (("train", 4), ("test", 3)):
        for cls in DATASETS["alzheimer"].classes:
            fill(tmp / "alz" / "Alzheimer_s Dataset" / split / cls, n, cls)
    return tmp / "alz"


def test_brain_tumor_training_testing_map_to_train_test(tmp_path):
    counts = arrange_kaggle_layout("brain_tumor", fake_brain(tmp_path), tmp_path / "root")
    classes = DATASETS["brain_tumor"].classes
    assert counts == {"train": dict.fromkeys(classes, 5), "test": dict.fromkeys(classes, 2)}
    status = dataset_status("brain_tumor", tmp_path / "root")
    assert status["available"] and status["totals"] == {"train": 20, "test": 8}
    assert len(load_dataset("brain_tumor", "test", tmp_path / "root")) == 8


def test_eye_disease_gets_a_seeded_stratified_80_20_split(tmp_path):
    src = fake_eye(tmp_path)
    counts = arrange_kaggle_layout("eye_disease", src, tmp_path / "a", seed=0)
    assert all(n == round(0.2 * 11) for n in counts["test"].values())
    assert all(n == 11 - round(0.2 * 11) for n in counts["train"].values())

    def files(root: Path, split: str) -> set[str]:
        return {f"{p.parent.name}/{p.name}" for p in (root / "eye_disease" / split).glob("*/*")}

    assert not files(tmp_path / "a", "train") & files(tmp_path / "a", "test")
    assert len(files(tmp_path / "a", "train") | files(tmp_path / "a", "test")) == 44
    arrange_kaggle_layout("eye_disease", src, tmp_path / "b", seed=0)
    assert files(tmp_path / "b", "test") == files(tmp_path / "a", "test")
    tests = [files(tmp_path / "a", "test")]
    for seed in (1, 2, 3):
        arrange_kaggle_layout("eye_disease", src, tmp_path / f"s{seed}", seed=seed)
        tests.append(files(tmp_path / f"s{seed}", "test"))
    assert len({frozenset(t) for t in tests}) > 1


def test_alzheimer_dataset_folder_maps_and_loads(tmp_path):
    counts = arrange_kaggle_layout("alzheimer", fake_alzheimer(tmp_path), tmp_path / "root")
    assert sum(counts["train"].values()) == 16 and sum(counts["test"].values()) == 12
    ds = load_dataset("alzheimer", "test", tmp_path / "root", input_size=16)
    assert ds.classes == list(DATASETS["alzheimer"].classes) and ds[0][0].shape == (3, 16, 16)


def test_files_are_hard_linked_or_copied(tmp_path):
    src = fake_alzheimer(tmp_path)
    arrange_kaggle_layout("alzheimer", src, tmp_path / "linked")
    arrange_kaggle_layout("alzheimer", src, tmp_path / "copied", link=False)
    original = src / "Alzheimer_s Dataset" / "train" / "NonDemented" / "NonDemented_0.jpg"
    linked = tmp_path / "linked" / "alzheimer" / "train" / "NonDemented" / "NonDemented_0.jpg"
    copied = tmp_path / "copied" / "alzheimer" / "train" / "NonDemented" / "NonDemented_0.jpg"
    assert linked.read_bytes() == copied.read_bytes() == original.read_bytes()
    assert linked.stat().st_ino == original.stat().st_ino != copied.stat().st_ino


def test_bad_sources_and_destinations_raise_fetch_errors(tmp_path):
    with pytest.raises(FetchError, match="Kaggle download of brain_tumor"):
        arrange_kaggle_layout("brain_tumor", fake_alzheimer(tmp_path), tmp_path / "root")
    with pytest.raises(FetchError, match="does not exist"):
        arrange_kaggle_layout("brain_tumor", tmp_path / "nothing", tmp_path / "root")
    with pytest.raises(FetchError, match="cannot be fetched"):
        arrange_kaggle_layout("phantom", tmp_path, tmp_path / "root")
    src = fake_brain(tmp_path)
    arrange_kaggle_layout("brain_tumor", src, tmp_path / "root")
    with pytest.raises(FetchError, match="overwrite"):
        arrange_kaggle_layout("brain_tumor", src, tmp_path / "root")
    assert arrange_kaggle_layout("brain_tumor", src, tmp_path / "root", overwrite=True)["test"]["glioma"] == 2
    for p in (src / "versions" / "1" / "Testing" / "glioma").iterdir():
        p.unlink()
    with pytest.raises(FetchError, match="incomplete"):
        arrange_kaggle_layout("brain_tumor", src, tmp_path / "other")


def test_fetch_without_kagglehub_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # makes `import kagglehub` fail
    with pytest.raises(FetchError, match="pip install kagglehub"):
        fetch_dataset("eye_disease", tmp_path)


def test_fetch_uses_kagglehub_download_path(tmp_path, monkeypatch):
    src = fake_eye(tmp_path, n=5)
    asked = []
    fake = types.SimpleNamespace(dataset_download=lambda slug: asked.append(slug) or str(src))
    monkeypatch.setitem(sys.modules, "kagglehub", fake)
    counts = fetch_dataset("eye_disease", tmp_path / "root")
    assert asked == ["gunavenkatdoddi/eye-diseases-classification"]
    assert sum(counts["train"].values()) + sum(counts["test"].values()) == 20

    def offline(slug):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(dataset_download=offline))
    with pytest.raises(FetchError, match="no network"):
        fetch_dataset("eye_disease", tmp_path / "other")


def test_cli_help_and_arrange(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--dest" in capsys.readouterr().out
    assert main(["alzheimer", "--src", str(fake_alzheimer(tmp_path)), "--dest", str(tmp_path / "root")]) == 0
    assert "total 16" in capsys.readouterr().out
    assert main(["alzheimer", "--src", str(tmp_path / "alz"), "--dest", str(tmp_path / "root")]) == 1
    assert "overwrite" in capsys.readouterr().err
