"""The shipped checkpoints load, predict, and agree with the results tables of the README and docs/results.md."""

from pathlib import Path

import numpy as np
import pytest

from core import checkpoints, results, roles
from core.data import load_dataset
from core.inference import predict
from core.layout import EARLIER_FOLDER, PREDICTIONS_FILE, checkpoint_file, shipped_checkpoints
from core.models import count_parameters
from core.results_record import ShippedResults
from core.teacher_evidence import HEAD_FILE

CKPT = Path(__file__).resolve().parents[1] / "checkpoints"
KEPT = CKPT / "stages"  # stages of a run in progress, kept across machines (`core.reproduce --kept`)
# the files a run replaced are kept as they were under <dataset>/earlier/ (`core.shipping`): no longer shipped
IN_USE = sorted(p for p in CKPT.rglob("*.pt") if KEPT not in p.parents and EARLIER_FOLDER not in p.parts)
SHIPPED = [p for p in IN_USE if p.name != HEAD_FILE]
HEADS = [p for p in IN_USE if p.name == HEAD_FILE]  # the students' evidence heads (`core.teacher_evidence`)


def test_phantom_checkpoints_are_shipped():
    names = {p.name for p in (CKPT / "phantom").glob("*.pt")}
    assert {"teacher.pt", "student.pt", "student_label_only.pt"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(CKPT)) for p in SHIPPED])
def test_shipped_checkpoint_loads_and_predicts(path):
    model, meta = checkpoints.load(path)
    assert meta.weights_dtype == "float16" and meta.metrics["test"]["accuracy"] > 0.25
    from PIL import Image
    probs = predict(model, meta, [Image.new("L", (100, 90), 40), Image.new("RGB", (300, 200), (5, 9, 200))])
    assert probs.shape == (2, len(meta.classes)) and np.allclose(probs.sum(1), 1, atol=1e-4)


@pytest.mark.parametrize("path", HEADS, ids=[str(p.relative_to(CKPT)) for p in HEADS])
def test_a_shipped_evidence_head_fits_the_student_beside_it_and_gives_a_map_per_class(path):
    from core.teacher_evidence import attach_shipped_head
    from core.evidence_model import evidence_maps

    student, meta = checkpoints.load(path.parent / "student.pt")
    assert attach_shipped_head(student, path.parent / "student.pt") is None
    import torch
    out = evidence_maps(student, torch.zeros(1, 3, meta.input_size, meta.input_size))
    assert out["maps"].shape[:2] == (1, len(meta.classes))
    assert torch.allclose(out["maps"].sum(dim=(-2, -1)), torch.ones(1, len(meta.classes)), atol=1e-4)  # softmax


def test_kept_stages_load():
    # stages are kept only while a run spans sessions, so there may be none
    for path in sorted(KEPT.rglob("*.json")):
        meta = checkpoints.load_meta(path)
        assert meta.dataset == path.parents[1].name and meta.train["protocol"] == path.parent.name, path
        assert meta.train["stage"] == path.stem and meta.train["history"], path
        if path.with_suffix(".pt").is_file():  # weights are kept for the stages that later ones use
            model, meta = checkpoints.load(path.with_suffix(".pt"))
            assert meta.weights_dtype == "float16" and model.training is False, path


def test_phantom_student_predicts_phantom_test_images_well():
    model, meta = checkpoints.load(CKPT / "phantom" / "student.pt")
    teacher, _ = checkpoints.load(CKPT / "phantom" / "teacher.pt")
    assert count_parameters(model) * 5 < count_parameters(teacher)
    ds = load_dataset("phantom", "test", input_size=meta.input_size)
    from torchvision.transforms.functional import to_pil_image
    idx = list(range(0, len(ds), 4))[:64]
    images = [to_pil_image(ds[i][0]) for i in idx]
    acc = float(np.mean(predict(model, meta, images).argmax(1) == np.array([ds.targets[i] for i in idx])))
    assert acc > 0.6  # chance is 0.25


def test_metadata_matches_results_file_and_readme():
    for res_path in CKPT.rglob("results.json"):
        if EARLIER_FOLDER in res_path.relative_to(CKPT).parts:
            continue
        res = ShippedResults.read(res_path)
        for role in roles.SHIPPED:  # each shipped file is seed 0 of its role's runs
            meta = checkpoints.load_meta(checkpoint_file(res_path.parent, role))
            assert meta.metrics["test"]["accuracy"] == pytest.approx(res.test.report(role, 0)["accuracy"])
    assert results.main(["--check"]) == 0, "README.md or docs/ is stale: run python -m core.results"


@pytest.mark.parametrize("folder", sorted(p.parent for p in CKPT.glob("*/predictions.npz")),
                         ids=lambda p: p.name)
def test_shipped_predictions_are_of_the_shipped_checkpoints(folder):
    from core import predictions

    shipped = shipped_checkpoints(folder)
    shas = {role.shipped: checkpoints.file_sha256(path) for role, path in shipped.items()}
    meta = checkpoints.load_meta(checkpoint_file(folder, roles.TEACHER))
    z = np.load(folder / PREDICTIONS_FILE)
    loaded = predictions.load(folder, shas, z["labels"], len(meta.classes))
    assert loaded is not None and set(loaded["probs"]) == set(shas), "run python -m core.predictions again"
    for role, path in shipped.items():  # as evaluated when the checkpoints were shipped
        accuracy = float((loaded["probs"][role.shipped].argmax(1) == loaded["labels"]).mean())
        assert accuracy == pytest.approx(checkpoints.load_meta(path).metrics["test"]["accuracy"])
