"""Importing a model trained elsewhere as a user dataset's teacher, then distilling it like any other."""

import re

import pytest
import torch
import torchvision

from core import checkpoints
from core.import_teacher import main
from core.inference import batch_for, predict_tensor
from tests.test_folder_datasets import flat_folder

pytestmark = pytest.mark.usefixtures("registry_restored")  # each test's registrations are undone

CLASSES = ["cat", "dog", "fox"]


@pytest.fixture
def setting(tmp_path, monkeypatch, registry_restored):
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path / "models"))
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    weights = tmp_path / "mine.pth"
    # as a training script might have saved it: wrapped, from DataParallel
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, weights)
    return flat_folder(tmp_path / "data", "pets", classes=CLASSES, n=12), weights, model


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()[-1]


def test_a_model_with_its_outputs_in_another_order_is_imported_in_the_folders_order(setting, tmp_path):
    data, weights, original = setting
    given = ["fox", "cat", "dog"]  # the user's model: output 0 is fox
    main(["--arch", "resnet18", "--weights", str(weights), "--data", str(data), "--classes", *given,
          "--input-size", "32"])
    target = tmp_path / "models" / "pets" / "teacher.pt"
    teacher, meta = checkpoints.load(target)
    assert meta.classes == CLASSES and meta.arch == "resnet18" and meta.role == "teacher" and meta.input_size == 32
    assert "test" in meta.metrics and meta.mean == [0.485, 0.456, 0.406]
    x = torch.rand(4, 3, 32, 32)
    theirs = torch.softmax(original(batch_for(meta, x)), 1)
    ours = predict_tensor(teacher, batch_for(meta, x))
    for k, name in enumerate(CLASSES):
        assert torch.allclose(torch.as_tensor(ours)[:, k], theirs[:, given.index(name)], atol=1e-3)


def test_the_imported_teacher_is_distilled_like_any_other(setting, tmp_path):
    from core.train.cli import main as train
    data, weights, _ = setting
    main(["--arch", "resnet18", "--weights", str(weights), "--data", str(data), "--input-size", "32", "--no-eval"])
    target = tmp_path / "models" / "pets" / "teacher.pt"
    train(["--data", str(data), "--stage", "student", "--teacher", str(target), "--input-size", "32",
           "--student-epochs", "1", "--batch-size", "8", "--seeds", "0", "--threads", "1", "--out", str(tmp_path / "r")])
    assert checkpoints.load_meta(tmp_path / "models" / "pets" / "student.pt").role == "student"
    assert not (tmp_path / "models" / "pets" / "earlier").exists()  # the imported teacher stays, unreplaced


def _notes(tmp):
    (tmp / "notes.pth").write_text("hello")
    return str(tmp / "notes.pth")


def _list(tmp):
    torch.save([1, 2], tmp / "list.pth")
    return str(tmp / "list.pth")


@pytest.mark.parametrize("options, says", [
    ({"--arch": "resnet34"}, "is not a resnet34 state dict"),
    ({"--arch": "vit_b_16"}, "vision transformer|no spatial"),
    ({"--arch": "nonet"}, "unknown teacher"),
    ({"--classes": ["cat", "dog", "wolf"]}, "not the folder's classes"),
    ({"--classes": ["cat", "cat", "dog"]}, "not the folder's classes"),
    ({"--weights": _notes}, "not a weights file"),
    ({"--weights": _list}, "no state dict"),
])
def test_a_model_that_cannot_be_imported_exits_2_with_what_to_change(setting, tmp_path, capsys, options, says):
    data, weights, _ = setting
    chosen = {"--arch": "resnet18", "--weights": str(weights), "--data": str(data)}
    chosen.update({k: v(tmp_path) if callable(v) else v for k, v in options.items()})
    argv = [a for k, v in chosen.items() for a in [k, *(v if isinstance(v, list) else [v])]]
    code, last = run(argv, capsys)
    assert code == 2 and last.startswith("python -m core.import_teacher: error: ")
    assert re.search(says, last), last
    assert not (tmp_path / "models" / "pets" / "teacher.pt").exists()


def test_non_finite_weights_and_another_class_count_are_refused(setting, tmp_path, capsys):
    data, _, model = setting
    state = model.state_dict()
    state["fc.weight"] = state["fc.weight"].clone().fill_(float("nan"))
    torch.save(state, tmp_path / "nan.pth")
    code, last = run(["--arch", "resnet18", "--weights", str(tmp_path / "nan.pth"), "--data", str(data)], capsys)
    assert code == 2 and "non-finite weights in fc.weight" in last
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), tmp_path / "five.pth")
    code, last = run(["--arch", "resnet18", "--weights", str(tmp_path / "five.pth"), "--data", str(data)], capsys)
    assert code == 2 and "does not fit resnet18 with 3 classes" in last and "fc.weight" in last


def test_a_teacher_already_there_is_replaced_only_with_force(setting, tmp_path, capsys):
    data, weights, _ = setting
    argv = ["--arch", "resnet18", "--weights", str(weights), "--data", str(data), "--no-eval"]
    main(argv)
    code, last = run(argv, capsys)
    assert code == 2 and "pass --force" in last
    main(argv + ["--force"])
    assert len(list((tmp_path / "models" / "pets" / "earlier").glob("replaced-*/teacher.pt"))) == 1
