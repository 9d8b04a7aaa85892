"""Hostile checkpoints, model outputs and failed writes: each ends in one clear error.

Each group is a parametrised test over a list of cases, so a new hostile input is one line in a list:

* ``WRONG_TYPE`` / ``OUT_OF_RANGE``: metadata fields (the fuzz covers every field of `CheckpointMeta`);
* ``BAD_META_FILES``: metadata files that are not a JSON object;
* ``BAD_ARCH_ARGS`` / ``BAD_WEIGHTS``: checkpoints whose metadata reads but whose model cannot be built;
* ``BROKEN_MODELS``: models whose outputs are not finite;
* ``WRITE_FAILURES``, ``TEMPORARIES``: atomic writes.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import tempfile
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from core import checkpoints
from core.checkpoints import CheckpointError, CheckpointMeta
from core.catalog import DATASETS
from core import inference, metadata
from core.inference import predict, predict_tensor
from core.models import build_student

ROOT = Path(__file__).resolve().parents[1]
# the shipped checkpoints; the stages a run keeps (`core.reproduce --kept`) hold a teacher-logit cache too, and
# tests/test_shipped.py loads those
SHIPPED = sorted(p for p in (ROOT / "checkpoints").rglob("*.pt") if ROOT / "checkpoints" / "stages" not in p.parents)
NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------- checkpoint metadata

@pytest.fixture(scope="module")
def valid_meta(tmp_path_factory) -> dict:
    """The metadata `checkpoints.save` writes for ``build_student(4, depth=3)``, as a dict."""
    folder = tmp_path_factory.mktemp("valid")
    meta = CheckpointMeta(arch="student", num_classes=4, classes=["a", "b", "c", "d"], input_size=32,
                          mean=[0.5] * 3, std=[0.25] * 3, role="student", dataset="phantom",
                          arch_args={"depth": 3}, kd={"loss": "kd", "alpha": 0.5, "temperature": 4.0})
    path = checkpoints.save(build_student(4, depth=3).eval(), meta, folder / "student.pt")
    return json.loads(checkpoints.meta_path(path).read_text())


def write_meta(folder: Path, data) -> Path:
    """Write ``data`` as ``folder/m.json`` (bytes as they are) and return the weights path beside it."""
    path = folder / "m.pt"
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    checkpoints.meta_path(path).write_bytes(raw)
    return path


REQUIRED = ["arch", "num_classes", "classes", "input_size", "mean", "std"]
OPTIONAL = {f.name for f in dataclasses.fields(CheckpointMeta)} - set(REQUIRED)

# Values of the wrong JSON type for each field (every field has at least one).
WRONG_TYPE = {
    "arch": [5, None, ["student"], {"name": "student"}, True],
    "num_classes": [4.0, "4", True, None, [4]],
    "classes": ["abcd", None, {"a": 1}, [1, 2, 3, 4], ["a", "b", "c", None]],
    "input_size": ["64", 64.5, 32.0, True, None, [32]],
    "mean": ["0.5", None, 0.5, ["a", "b", "c"], [True, 0.5, 0.5], {"r": 0.5}, [None, 0.5, 0.5]],
    "std": [["a", "b", "c"], None, 0.25, "x", [None, 1, 1], [0.25, 0.25, False]],
    "role": [1, None, ["teacher"], True],
    "dataset": [1, None, ["phantom"]],
    "arch_args": [[], "depth=3", None, 3],
    "train": [[], "x", None, 1],
    "kd": [[], "kd", 1, True],
    "seed": [0.0, "0", True, None, [0]],
    "data_fingerprint": [1, None, []],
    "metrics": [[], "x", None, 0.9],
    "versions": [[], "x", None, {"torch": 2}],
    "created": [1, None, []],
    "weights_dtype": [32, None, []],
    "notes": [1, None, ["note"]],
}

# Values of the right type but outside the field's range (fields with a range only).
OUT_OF_RANGE = {
    "arch": ["vgg99", ""],
    "num_classes": [0, -1, 3, 5, 10**6],  # 3 and 5 disagree with the 4 class names
    "classes": [["a", "a", "b", "c"], ["a", "b", "c"], ["a", "b", "c", "d", "e"], ["a", "b", "c", ""], []],
    "input_size": [0, -5, 7, 4097, 10**9],
    "mean": [[NAN, 0.5, 0.5], [INF, 0.5, 0.5], [0.5, -INF, 0.5], [0.5, 0.5], [0.5] * 4, [], [10**400, 0.5, 0.5]],
    "std": [[0, 1, 1], [-0.1, 1, 1], [NAN, 1, 1], [INF, 1, 1], [1e-50, 1, 1], [1, 1], [1] * 4],
    "role": ["", "Teacher", "assistant"],
    "seed": [-1, 2**64],
    "weights_dtype": ["int8", "float64", ""],
    "arch_args": [{"bogus": 1}, {"depth": 3, "width": 8}],
}


def _cases(table: dict) -> list:
    return [pytest.param(name, value, id=f"{name}={value!r}"[:60]) for name, values in table.items() for value in values]


def test_every_field_has_rules():
    fields = {f.name for f in dataclasses.fields(CheckpointMeta)}
    assert set(WRONG_TYPE) == fields, "give every CheckpointMeta field wrong-type cases"
    assert set(OUT_OF_RANGE) <= fields


def test_valid_metadata_and_unknown_keys_load(tmp_path, valid_meta):
    meta = checkpoints.load_meta(write_meta(tmp_path, valid_meta))
    assert meta.classes == ["a", "b", "c", "d"] and meta.arch_args == {"depth": 3}
    # Unknown keys are ignored (a newer writer may add fields); integral floats in free-form dicts are fine.
    meta = checkpoints.load_meta(write_meta(tmp_path, {**valid_meta, "future_field": [1, 2], "train": {"lr": NAN}}))
    assert not hasattr(meta, "future_field")


@pytest.mark.parametrize("field", REQUIRED)
def test_missing_required_field_is_named(tmp_path, valid_meta, field):
    data = {k: v for k, v in valid_meta.items() if k != field}
    with pytest.raises(CheckpointError) as err:
        checkpoints.load_meta(write_meta(tmp_path, data))
    assert f"'{field}'" in str(err.value)


@pytest.mark.parametrize("field", sorted(OPTIONAL))
def test_missing_optional_field_takes_its_default(tmp_path, valid_meta, field):
    data = {k: v for k, v in valid_meta.items() if k != field}
    meta = checkpoints.load_meta(write_meta(tmp_path, data))
    default = CheckpointMeta(arch="student", num_classes=1, classes=["a"], input_size=8, mean=[0] * 3, std=[1] * 3)
    assert getattr(meta, field) == getattr(default, field)


@pytest.mark.parametrize("field, value", _cases(WRONG_TYPE) + _cases(OUT_OF_RANGE))
def test_bad_field_is_refused_and_named(tmp_path, valid_meta, field, value):
    with pytest.raises(CheckpointError) as err:
        checkpoints.load_meta(write_meta(tmp_path, {**valid_meta, field: value}))
    assert f"'{field}'" in str(err.value), str(err.value)
    assert err.value.__cause__ is None or isinstance(err.value.__cause__, ValueError)


BAD_META_FILES = [
    (b"[]", "JSON object"),
    (b'"teacher"', "JSON object"),
    (b"3", "JSON object"),
    (b"null", "JSON object"),
    (b"true", "JSON object"),
    (b"", "empty"),
    (b"  \n\t", "empty"),
    (b"\xff\xfe{\x00}\x00", "UTF-8"),
    (b'{"arch": "student\xc3"}', "UTF-8"),
    (b"{not json", "not valid JSON"),
    (b"\xef\xbb\xbf{}", "not valid JSON"),  # a byte-order mark is not JSON
    (b"[" * 100_000, "nested"),
    (b'{"seed": 1' + b"0" * 5000 + b"}", "not valid JSON"),  # Python refuses ints of more than 4300 digits
]


@pytest.mark.parametrize("raw, match", BAD_META_FILES, ids=[repr(r[:20]) for r, _ in BAD_META_FILES])
def test_bad_metadata_file(tmp_path, raw, match):
    with pytest.raises(CheckpointError, match=match):
        checkpoints.load_meta(write_meta(tmp_path, raw))


def test_oversized_metadata_file(tmp_path, valid_meta, monkeypatch):
    monkeypatch.setattr(metadata, "MAX_META_BYTES", 100)
    with pytest.raises(CheckpointError, match="larger than"):
        checkpoints.load_meta(write_meta(tmp_path, valid_meta))


def test_metadata_that_is_a_folder(tmp_path):
    (tmp_path / "m.json").mkdir()
    with pytest.raises(CheckpointError, match="missing"):
        checkpoints.load_meta(tmp_path / "m.pt")


@pytest.fixture
def saved(tmp_path, valid_meta):
    """A loadable checkpoint (student, depth 3, 4 classes) in ``tmp_path``; returns its weights path."""
    model = build_student(4, depth=3).eval()
    path = tmp_path / "student.pt"
    torch.save(model.state_dict(), path)
    write_meta(tmp_path, valid_meta).with_suffix(".json").rename(checkpoints.meta_path(path))
    return path


# arch_args that pass the type checks but cannot build the model the weights are for.
BAD_ARCH_ARGS = [{"depth": "x"}, {"depth": 99}, {"depth": 3, "widths": [8, 8]}, {"depth": 3, "dropout": 5},
                 {"depth": 3, "widths": [10**6] * 3}]


@pytest.mark.parametrize("arch_args", BAD_ARCH_ARGS, ids=str)
def test_arch_args_that_cannot_build_the_model(saved, arch_args):
    mpath = checkpoints.meta_path(saved)
    mpath.write_text(json.dumps({**json.loads(mpath.read_text()), "arch_args": arch_args}))
    with pytest.raises(CheckpointError, match="arch_args"):
        checkpoints.load(saved)


def _nan_weights(state):
    return {k: v.fill_(NAN) if v.is_floating_point() else v for k, v in state.items()}


def _inf_bias(state):
    state["classifier.bias"][0] = INF
    return state


BAD_WEIGHTS = [(_nan_weights, "not finite"), (_inf_bias, "classifier.bias")]


@pytest.mark.parametrize("spoil, match", BAD_WEIGHTS, ids=[f.__name__ for f, _ in BAD_WEIGHTS])
def test_non_finite_weights_are_refused_at_load(saved, spoil, match):
    torch.save(spoil(torch.load(saved, weights_only=True)), saved)
    with pytest.raises(CheckpointError, match=match):
        checkpoints.load(saved)


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT / "checkpoints")) for p in SHIPPED])
def test_shipped_checkpoints_still_load(path):
    meta = checkpoints.load_meta(path)
    model, meta = checkpoints.load(path, expected_classes=list(DATASETS[meta.dataset].classes))
    assert not model.training


# --------------------------------------------------------------------------- the app's model loader

def test_app_loader_checks_the_dataset_classes(tmp_path, monkeypatch, valid_meta):
    from explorer import loaders

    classes = list(DATASETS["phantom"].classes)
    folder = tmp_path / "phantom"
    folder.mkdir()
    model = build_student(len(classes), depth=3).eval()
    for role, names in (("student", classes), ("teacher", classes[::-1])):
        meta = CheckpointMeta(arch="student", num_classes=len(names), classes=names, input_size=32, mean=[0.5] * 3,
                              std=[0.25] * 3, role="student", dataset="phantom", arch_args={"depth": 3})
        checkpoints.save(model, meta, folder / f"{role}.pt")
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    loaders._load_checkpoint.clear()
    try:
        assert loaders.load_model("phantom", "student").meta.classes == classes
        with pytest.raises(CheckpointError, match="expected"):
            loaders.load_model("phantom", "teacher")  # the same names in reverse order
    finally:
        loaders._load_checkpoint.clear()


# --------------------------------------------------------------------------- predictions

def _all_nan(model):
    for p in model.parameters():
        p.data.fill_(NAN)


def _inf_head(model):
    model.classifier.bias.data[0] = INF


def _negative_variance(model):
    model.block1[1].running_var.fill_(-1.0)


BROKEN_MODELS = [_all_nan, _inf_head, _negative_variance]


@pytest.mark.parametrize("spoil", BROKEN_MODELS, ids=lambda f: f.__name__)
def test_non_finite_outputs_are_refused(spoil):
    torch.manual_seed(0)
    model = build_student(4, depth=3).eval()
    with torch.no_grad():
        spoil(model)
    meta = CheckpointMeta(arch="student", num_classes=4, classes=list("abcd"), input_size=32, mean=[0.5] * 3,
                          std=[0.25] * 3)
    with pytest.raises(inference.PredictionError, match="not finite"):
        predict(model, meta, [Image.new("L", (40, 40), 100)])
    with pytest.raises(ValueError, match="not finite"):
        predict_tensor(model, torch.zeros(2, 3, 32, 32))


@pytest.mark.parametrize("x, match", [(torch.full((1, 3, 32, 32), NAN), "input"), (torch.zeros(0, 3, 32, 32), "empty"),
                                      (torch.zeros(3, 32, 32), "batch")], ids=["nan_input", "empty", "3d"])
def test_bad_batches_are_refused(tiny_student, x, match):
    with pytest.raises(inference.PredictionError, match=match):
        predict_tensor(tiny_student, x)


# --------------------------------------------------------------------------- atomic writes

def _enospc(handle):
    handle.write(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def _torch_full_disk(handle):
    class Full(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    torch.save({"x": torch.zeros(10)}, Full())  # torch chains two OSErrors


def _runtime_from_oserror(handle):
    try:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    except OSError as err:
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed") from err


WRITE_FAILURES = [(_enospc, "No space left"), (_torch_full_disk, "No space left"),
                  (_runtime_from_oserror, "quota")]


@pytest.mark.parametrize("hint", [None, "run the same command again"])
@pytest.mark.parametrize("writer, reason", WRITE_FAILURES, ids=[f.__name__ for f, _ in WRITE_FAILURES])
def test_failed_write_is_one_clear_error(tmp_path, writer, reason, hint):
    target = tmp_path / "state.pt"
    target.write_bytes(b"old bytes")
    kwargs = {"resume_hint": hint} if hint else {}
    with pytest.raises(checkpoints.StateWriteError) as err:
        checkpoints.atomic_write_bytes(target, writer, **kwargs)
    message = str(err.value)
    assert isinstance(err.value, OSError)
    assert str(target) in message and reason in message and "intact" in message
    assert (hint in message) if hint else ("resume" not in message)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert target.read_bytes() == b"old bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]


def test_failed_first_write_says_no_file_existed(tmp_path):
    with pytest.raises(checkpoints.StateWriteError, match="no previous file"):
        checkpoints.atomic_write_bytes(tmp_path / "new.pt", _enospc)
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_is_one_clear_error(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    target.write_text("old")

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(checkpoints.StateWriteError, match="Permission denied"):
        checkpoints.atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_bug_in_the_writer_is_not_disguised(tmp_path):
    def bug(handle):
        raise RuntimeError("not a disk problem")

    with pytest.raises(RuntimeError, match="not a disk problem"):
        checkpoints.atomic_write_bytes(tmp_path / "x", bug)
    assert list(tmp_path.iterdir()) == []


def _leftover(folder: Path, name: str) -> Path:
    """A temporary file named exactly as `atomic_write_bytes` names its own."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


# Files that are not leftovers of the writer and must stay.
KEPT = ["student.pt", ".hidden", "notes.tmp", ".x.tmp", ".student.pt.tmp", ".student.pt.abc.tmp",
        "student.pt.abcdefgh.tmp"]


def test_remove_stale_temporaries(tmp_path):
    stale = [_leftover(tmp_path, "student.pt"), _leftover(tmp_path, "student.pt"), _leftover(tmp_path, "state.json")]
    for name in KEPT:
        (tmp_path / name).write_text("keep")
    (tmp_path / ".dir.abcdefgh.tmp").mkdir()
    (tmp_path / "sub").mkdir()
    nested = _leftover(tmp_path / "sub", "teacher.pt")
    assert checkpoints.remove_stale_temporaries(tmp_path) == len(stale)
    assert not any(p.exists() for p in stale)
    assert all((tmp_path / name).exists() for name in KEPT)
    assert (tmp_path / ".dir.abcdefgh.tmp").is_dir() and nested.exists()
    assert checkpoints.remove_stale_temporaries(tmp_path) == 0
    assert checkpoints.remove_stale_temporaries(tmp_path / "missing") == 0


def test_remove_stale_temporaries_spares_fresh_files(tmp_path):
    old, fresh = _leftover(tmp_path, "a.pt"), _leftover(tmp_path, "b.pt")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert checkpoints.remove_stale_temporaries(tmp_path, min_age_s=60) == 1
    assert not old.exists() and fresh.exists()
