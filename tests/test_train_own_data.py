"""``python -m core.train --data DIR``: a user's folder of JPEGs trained end to end with a ResNet-18 teacher, its
models put where the app finds them, and models already there replaced only by the shipping rule."""

import pytest

from core import catalog, checkpoints
from core.train.cli import main
from tests.test_folder_datasets import flat_folder

pytestmark = pytest.mark.usefixtures("registry_restored")  # each test's registrations are undone

RUN = ["--teacher-arch", "resnet18", "--epochs", "1", "--student-epochs", "1", "--input-size", "32", "--batch-size",
       "8", "--seeds", "0", "--threads", "1", "--baseline"]


@pytest.fixture
def own_data(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path / "models"))
    return flat_folder(tmp_path / "data", "pets", classes=("cat", "dog", "fox"), n=12, suffix=".jpg")


def test_a_folder_trains_with_a_resnet18_teacher_and_lands_in_the_checkpoint_root(own_data, tmp_path, capsys):
    main(["--data", str(own_data), "--out", str(tmp_path / "run"), *RUN])
    shipped = tmp_path / "models" / "pets"
    teacher, meta = checkpoints.load(shipped / "teacher.pt")
    assert meta.arch == "resnet18" and meta.classes == ["cat", "dog", "fox"] and meta.dataset == "pets"
    student_meta = checkpoints.load_meta(shipped / "student.pt")
    assert student_meta.role == "student" and "test" in (student_meta.metrics or {})  # evaluated before shipping
    assert (shipped / "student_label_only.pt").is_file()
    assert str(shipped) in capsys.readouterr().out
    # the app's listing finds it: the data folder and the models folder name one dataset
    catalog.DATASETS.pop("pets")
    assert "pets" in catalog.discover(tmp_path / "data", tmp_path / "models")


def test_models_already_there_are_replaced_only_by_as_much_training_or_force(own_data, tmp_path, capsys):
    main(["--data", str(own_data), "--out", str(tmp_path / "run"), *RUN])
    shipped = tmp_path / "models" / "pets"
    before = checkpoints.file_sha256(shipped / "teacher.pt")
    with pytest.raises(SystemExit) as exit_:
        main(["--data", str(own_data), "--out", str(tmp_path / "run2"), *RUN, "--max-per-class", "5"])
    assert exit_.value.code == 2 and "training images per class 5" in capsys.readouterr().err
    assert checkpoints.file_sha256(shipped / "teacher.pt") == before and not (tmp_path / "run2" / "teacher").exists()
    main(["--data", str(own_data), "--out", str(tmp_path / "run2"), *RUN, "--max-per-class", "5", "--force"])
    kept = list((shipped / "earlier").glob("replaced-*/teacher.pt"))
    assert len(kept) == 1 and checkpoints.file_sha256(kept[0]) == before


@pytest.mark.parametrize("argv, says", [
    (["--data", "{tmp}/absent"], "argument --data: .* is not a folder of images"),
    (["--data", "{tmp}/data/pets", "--dataset", "brain_tumor"], "the folder's dataset is 'pets'"),
    (["--dataset", "nothing_here", "--root", "{tmp}/data"], "unknown dataset 'nothing_here'"),
])
def test_a_data_option_that_names_no_usable_dataset_exits_2_before_training(own_data, tmp_path, capsys, argv, says):
    with pytest.raises(SystemExit) as exit_:
        main([a.format(tmp=tmp_path) for a in argv] + ["--out", str(tmp_path / "run")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("python -m core.train: error: ")
    assert not (tmp_path / "run").exists() and not (tmp_path / "models").exists()


@pytest.mark.parametrize("module", ["core.reproduce", "core.faithfulness_study", "core.bench"])
def test_every_command_takes_data_dir_and_refuses_a_folder_that_is_no_dataset(module, tmp_path, capsys):
    import importlib
    main_of = importlib.import_module(module).main
    (tmp_path / "one").mkdir()
    flat_folder(tmp_path, "one", classes=("only",))
    with pytest.raises(SystemExit) as exit_:
        main_of(["--data", str(tmp_path / "one")])
    assert exit_.value.code == 2 and "argument --data: " in capsys.readouterr().err
    assert "one" not in catalog.DATASETS


def test_bench_times_explainers_on_a_users_folder(own_data, tmp_path, capsys):
    from core.bench import main as bench
    assert bench(["--data", str(own_data), "--random-weights", "--teacher-arch", "resnet18", "--input-size", "32",
                  "--images", "2", "--methods", "cam", "--repeats", "1", "--warmup", "0", "--threads", "1",
                  "--out", str(tmp_path / "bench"), "--no-progress"]) == 0
    assert (tmp_path / "bench" / "bench.json").is_file()


def test_reproduce_and_the_study_run_end_to_end_on_a_users_folder(own_data, tmp_path):
    import json

    from core.faithfulness_study import main as study
    from core.reproduce import main as reproduce
    models = tmp_path / "models"
    reproduce(["--data", str(own_data), "--budget", "smoke", "--no-timing", "--runs", str(tmp_path / "runs"),
               "--out", str(models), "--threads", "1"])
    shipped = sorted(p.name for p in (models / "pets").iterdir())
    assert {"teacher.pt", "student.pt", "student_label_only.pt", "results.json", "predictions.npz"} <= set(shipped)
    study(["--data", str(own_data), "--checkpoints", str(models), "--images", "6", "--methods", "cam", "grad_cam",
           "--threads", "1"])
    results = json.loads((models / "pets" / "results.json").read_text())
    assert results["dataset"] == "pets" and results["faithfulness"]["images"] == 6
