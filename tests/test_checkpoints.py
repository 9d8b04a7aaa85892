"""Checkpoint round trip and every load failure, plus inference preprocessing."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from core import checkpoints
from core.checkpoints import CheckpointError, CheckpointMeta
from core.inference import batch_for, predict, preprocess
from core.models import build_student

CLASSES = ["a", "b", "c", "d"]


def make_meta(**kw):
    base = dict(arch="student", num_classes=4, classes=CLASSES, input_size=32, mean=[0.5] * 3, std=[0.25] * 3,
                role="student", dataset="phantom", arch_args={"depth": 3})
    base.update(kw)
    return CheckpointMeta(**base)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_student(4, depth=3).eval()
    path = checkpoints.save(model, make_meta(), tmp_path / "student.pt")
    return model, path


def test_round_trip_gives_same_outputs_and_metadata(saved):
    model, path = saved
    loaded, meta = checkpoints.load(path)
    assert not loaded.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-6)
    assert meta.classes == CLASSES and meta.arch_args == {"depth": 3}
    assert meta.versions["torch"] == torch.__version__ and meta.created


def test_half_precision_storage_is_smaller_and_close(tmp_path, saved):
    model, full_path = saved
    half_path = checkpoints.save(model, make_meta(), tmp_path / "half.pt", half=True)
    assert half_path.stat().st_size < 0.6 * full_path.stat().st_size
    loaded, meta = checkpoints.load(half_path)
    assert meta.weights_dtype == "float16"
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=5e-2)


def test_missing_files(tmp_path, saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="not found"):
        checkpoints.load(tmp_path / "nope.pt")
    checkpoints.meta_path(path).unlink()
    with pytest.raises(CheckpointError, match="metadata file is missing"):
        checkpoints.load(path)


def test_corrupt_weights_file(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[: 200])
    with pytest.raises(CheckpointError, match="weights-only"):
        checkpoints.load(path)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickle_is_refused(saved, capsys):
    _, path = saved
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError):
        checkpoints.load(path)
    assert "must never run" not in capsys.readouterr().out


def test_not_a_state_dict(saved):
    _, path = saved
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="plain state dict"):
        checkpoints.load(path)


def test_unknown_architecture_and_bad_metadata(saved):
    _, path = saved
    mpath = checkpoints.meta_path(path)
    data = json.loads(mpath.read_text())
    mpath.write_text(json.dumps({**data, "arch": "vgg99"}))
    with pytest.raises(CheckpointError, match="unknown architecture"):
        checkpoints.load(path)
    mpath.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        checkpoints.load(path)
    mpath.write_text(json.dumps({**data, "classes": ["a", "b"]}))
    with pytest.raises(CheckpointError, match="class names"):
        checkpoints.load(path)
    del data["arch"]
    mpath.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="arch"):
        checkpoints.load(path)


def test_mismatched_classes_and_shapes(tmp_path, saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="expected"):
        checkpoints.load(path, expected_classes=["w", "x", "y", "z"])
    # Weights of a depth-4 student under metadata that says depth 3.
    other = checkpoints.save(build_student(4, depth=4), make_meta(arch_args={"depth": 4}), tmp_path / "d4.pt")
    other.with_suffix(".json").write_text(make_meta().to_json())
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoints.load(other)
    wide = checkpoints.save(build_student(4, depth=3, widths=(8, 8, 8)),
                            make_meta(arch_args={"depth": 3, "widths": [8, 8, 8]}), tmp_path / "w.pt")
    wide.with_suffix(".json").write_text(make_meta().to_json())
    with pytest.raises(CheckpointError, match="shape mismatch"):
        checkpoints.load(wide)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    checkpoints.atomic_write_text(target, "old")

    def boom(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        checkpoints.atomic_write_bytes(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "CMYK", "I;16", "1"])
def test_predict_accepts_any_mode(saved, mode):
    model, path = saved
    _, meta = checkpoints.load(path)
    img = Image.fromarray((np.random.default_rng(0).random((40, 50)) * 255).astype(np.uint8)).convert(mode)
    x = preprocess(meta, [img])
    assert x.shape == (1, 3, 32, 32) and torch.isfinite(x).all()
    probs = predict(model, meta, [img, img])
    assert probs.shape == (2, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_preprocess_uses_stored_normalisation(saved):
    _, path = saved
    _, meta = checkpoints.load(path)
    white = Image.new("RGB", (20, 20), (255, 255, 255))
    x = preprocess(meta, [white])
    assert torch.allclose(x, torch.full_like(x, (1.0 - 0.5) / 0.25))


def test_predict_refuses_training_mode(saved):
    model, path = saved
    _, meta = checkpoints.load(path)
    with pytest.raises(ValueError, match="eval"):
        predict(model.train(), meta, [Image.new("L", (32, 32))])


def test_batch_for_resizes_and_normalises_a_decoded_batch(saved):
    _, path = saved
    _, meta = checkpoints.load(path)  # input 32 px, mean 0.5, std 0.25
    white_u8 = torch.full((2, 3, 48, 48), 255, dtype=torch.uint8)
    x = batch_for(meta, white_u8)
    assert x.shape == (2, 3, 32, 32)
    assert torch.allclose(x, torch.full_like(x, 2.0), atol=1e-4)
    same_size = torch.zeros(1, 3, 32, 32)
    assert torch.allclose(batch_for(meta, same_size), torch.full((1, 3, 32, 32), -2.0))
