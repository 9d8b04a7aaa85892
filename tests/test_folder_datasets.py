"""The user's own folder of images as a dataset: both layouts, the carved test split, dataset.toml, discovery under
the data and checkpoint roots, and every bad folder refused with a message that says what to change."""


import numpy as np
import pytest
from PIL import Image

from core import catalog
from core.catalog import DatasetError, dataset_status, discover, get_info, register_folder, split_files
from core.data import load_dataset
from core.folder_datasets import MIN_IMAGES_PER_CLASS, TEST_FRACTION, read_folder


pytestmark = pytest.mark.usefixtures("registry_restored")  # each test's registrations are undone


def write_images(folder, n, seed=0, suffix=".png", size=20):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"img{i:03d}{suffix}")


def flat_folder(root, name="my_scans", classes=("cats", "dogs", "birds"), n=MIN_IMAGES_PER_CLASS, suffix=".png"):
    for k, cls in enumerate(classes):
        write_images(root / name / cls, n + k, seed=k, suffix=suffix)
    return root / name


def test_a_flat_folder_has_sorted_classes_and_a_seeded_stratified_test_split(tmp_path):
    folder = flat_folder(tmp_path, n=20)
    info = register_folder(folder)
    assert info.classes == ("birds", "cats", "dogs") and info.layout == "flat" and info.user
    assert info.modality and info.input_size == 128
    test = split_files(info.name, "test", tmp_path, seed=0)
    train = split_files(info.name, "train", tmp_path, seed=0)
    val = split_files(info.name, "val", tmp_path, seed=0)
    for k, cls in enumerate(("cats", "dogs", "birds")):  # each class: 20 + k images, a fifth of them test
        everything = {f"{cls}/img{i:03d}.png" for i in range(20 + k)}
        assert len(test[cls]) == round(TEST_FRACTION * (20 + k))
        assert set(test[cls]) | set(train[cls]) | set(val[cls]) == everything
        assert not set(test[cls]) & (set(train[cls]) | set(val[cls])) and not set(train[cls]) & set(val[cls])
    assert split_files(info.name, "test", tmp_path, seed=0) == test  # recorded by the seed: the same again
    assert split_files(info.name, "test", tmp_path, seed=1) != test
    with pytest.raises(DatasetError, match="no test folder to pool"):
        split_files(info.name, "test", tmp_path, protocol="pooled")
    status = dataset_status(info.name, tmp_path)
    assert status["available"] and status["layout"] == "flat" and status["user"]
    assert status["totals"]["test"] == sum(map(len, test.values()))


def test_a_split_folder_reads_train_and_test_and_loads_as_tensors(tmp_path):
    for split, n in (("train", 12), ("test", 3)):
        for k, cls in enumerate(("normal", "pneumonia")):
            write_images(tmp_path / "chest" / split / cls, n, seed=k, suffix=".jpg")
    (tmp_path / "chest" / "dataset.toml").write_text('modality = "chest X-ray"\ninput_size = 32\n')
    info = get_info("chest", tmp_path)  # found by its name under the data root, registered on the way
    assert info.layout == "split" and info.modality == "chest X-ray" and info.input_size == 32
    ds = load_dataset("chest", "test", root=tmp_path)
    assert len(ds) == 6 and ds.classes == ["normal", "pneumonia"]
    x, y = ds[0]
    assert tuple(x.shape) == (3, 32, 32) and y == 0


def test_class_names_with_spaces_and_other_scripts_are_kept_as_written(tmp_path):
    folder = flat_folder(tmp_path, classes=("Ödem leicht", "正常", "mild case"))
    info = register_folder(folder)
    assert info.classes == tuple(sorted(("Ödem leicht", "正常", "mild case")))
    assert len(load_dataset(info.name, "test", root=tmp_path, input_size=16)) > 0


def test_files_that_are_not_images_are_skipped_and_counted(tmp_path):
    folder = flat_folder(tmp_path)
    (folder / "cats" / "notes.txt").write_text("x")
    (folder / "dogs" / "nested").mkdir()
    (folder / "README.md").write_text("about")  # beside the class folders: not a class
    info = register_folder(folder)
    files = split_files(info.name, "train", tmp_path)
    assert all(f.endswith(".png") for names in files.values() for f in names)
    assert dataset_status(info.name, tmp_path)["skipped"] == 2


@pytest.mark.parametrize("make, says", [
    (lambda r: write_images(r / "d" / "only", 12), "at least 2"),
    (lambda r: (write_images(r / "d" / "a", 12), (r / "d" / "b").mkdir()), "holds 0 images"),
    (lambda r: (write_images(r / "d" / "a", 12), write_images(r / "d" / "b", 3)), "holds 3 images"),
    (lambda r: (write_images(r / "d" / "a", 12), write_images(r / "d" / "b", 12), write_images(r / "d", 1)),
     "where class folders belong"),
    (lambda r: (write_images(r / "d" / "a", 12), write_images(r / "d" / "b", 12),
                (r / "d" / "c.png").write_bytes(b"not a folder")), "where class folders belong"),
    (lambda r: (write_images(r / "d" / "train" / "a", 12), write_images(r / "d" / "train" / "b", 12)), "no test/"),
    (lambda r: [write_images(r / "d" / s / c, 12) for s in ("train", "test") for c in ("a", "b" if s == "train" else "c")],
     "make them the same"),
    (lambda r: (flat_folder(r, "d"), (r / "d" / "dataset.toml").write_text("modality = \n")), "cannot be read"),
    (lambda r: (flat_folder(r, "d"), (r / "d" / "dataset.toml").write_text('colour = "red"\n')), "unknown field"),
    (lambda r: (flat_folder(r, "d"), (r / "d" / "dataset.toml").write_text('input_size = "big"\n')),
     "input_size must be a whole number"),
    (lambda r: (flat_folder(r, "d"), (r / "d" / "dataset.toml").write_text("input_size = 99999\n")),
     "input_size must be"),
    (lambda r: (flat_folder(r, "d"), (r / "d" / "dataset.toml").write_text('modality = ""\n')), "modality must be"),
])
def test_a_folder_that_cannot_be_a_dataset_is_refused_with_what_to_change(tmp_path, make, says):
    make(tmp_path)
    with pytest.raises(DatasetError, match=says):
        register_folder(tmp_path / "d")
    assert "d" not in catalog.DATASETS


@pytest.mark.parametrize("name, says", [("brain_tumor", "built-in"), ("phantom", "built-in"),
                                        ("my scans", "cannot name a dataset"), ("_x", "cannot name a dataset")])
def test_a_folder_name_that_cannot_be_a_dataset_name_is_refused(tmp_path, name, says):
    folder = flat_folder(tmp_path, name)
    with pytest.raises(DatasetError, match=says):
        register_folder(folder)
    assert catalog.DATASETS["brain_tumor"].classes[0] == "glioma"  # the built-in entry is untouched


def test_a_missing_folder_or_a_file_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="not a folder of images"):
        read_folder(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder of images"):
        read_folder(tmp_path / "file")


def teacher_meta(classes, size, train=None) -> str:
    """A teacher's metadata as `core.checkpoints.save` writes it beside its weights."""
    from core.metadata import CheckpointMeta
    return CheckpointMeta("resnet18", len(classes), list(classes), size, [0.5] * 3, [0.25] * 3,
                          train=train or {}).to_json()


def test_discovery_registers_folders_of_images_and_of_checkpoints_and_says_why_it_skips_others(tmp_path):
    data, models = tmp_path / "data", tmp_path / "models"
    flat_folder(data, "good")
    write_images(data / "bad" / "only", 12)
    (models / "elsewhere").mkdir(parents=True)
    (models / "elsewhere" / "teacher.json").write_text(teacher_meta(["x", "y", "z"], 64))
    (models / "broken").mkdir()
    (models / "broken" / "teacher.json").write_text("{not json")
    found = discover(data, models)
    assert found == ["good", "elsewhere"]
    assert get_info("elsewhere").classes == ("x", "y", "z") and get_info("elsewhere").input_size == 64
    assert "at least 2" in catalog.FOLDER_PROBLEMS["bad"] and "cannot be read" in catalog.FOLDER_PROBLEMS["broken"]
    assert not dataset_status("elsewhere", data)["available"]  # its images are not here: said, not raised
    assert "put the images in" in dataset_status("elsewhere", data)["reason"]


def test_a_folder_read_again_after_it_changed_is_registered_again(tmp_path):
    folder = flat_folder(tmp_path, classes=("a", "b"))
    assert register_folder(folder).classes == ("a", "b")
    write_images(folder / "c", 12)
    assert register_folder(folder).classes == ("a", "b", "c")


def test_models_trained_on_a_folder_elsewhere_find_their_images_through_their_metadata(tmp_path):
    data, models = tmp_path / "far" / "away", tmp_path / "models"
    flat_folder(data, "scans")
    (models / "scans").mkdir(parents=True)
    (models / "scans" / "teacher.json").write_text(teacher_meta(["birds", "cats", "dogs"], 32, {"root": str(data)}))
    assert discover(tmp_path / "empty-root", models) == ["scans"]
    info = get_info("scans")
    assert info.layout == "flat" and info.root == str(data.resolve())
    status = dataset_status("scans")  # no root given: the folder the run read
    assert status["available"] and status["totals"]["test"] > 0
    assert len(load_dataset("scans", "test", input_size=16)) == status["totals"]["test"]
    (models / "scans" / "teacher.json").write_text(teacher_meta(["birds", "cats", "dogs"], 32,
                                                                {"root": str(tmp_path / "gone")}))
    catalog.DATASETS.pop("scans")
    discover(tmp_path / "empty-root", models)
    assert not dataset_status("scans")["available"]  # listed from its models, its images said to be missing
