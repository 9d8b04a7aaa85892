"""Hostile checkpoints, model outputs and failed writes: each ends in one clear error.

Each group is a parametrised test over a list of cases, so a new hostile input is one line in a list:

* ``WRONG_TYPE`` / ``OUT_OF_RANGE``: metadata fields (the fuzz covers every field of `CheckpointMeta`);
* ``BAD_META_FILES``: metadata files that are not a JSON object;
* ``BAD_ARCH_ARGS`` / ``BAD_WEIGHTS``: checkpoints whose metadata reads but whose model cannot be built;
* ``BROKEN_MODELS``: models whose outputs are not finite;
* ``MALFORMED_INPUTS`` / ``BAD_PARAMETERS``: tensors and settings that predict and every explainer refuse before
  any pass;
* ``WRITE_FAILURES``, ``TEMPORARIES``: atomic writes;
* ``IMPOSSIBLE_SETTINGS`` / ``RUN_FAILURES``: the training command line (refused up front with exit 2, or stopped
  with one line and exit 1).
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

import numpy as np
import pytest
import torch
from PIL import Image

from core import checkpoints
from core.checkpoints import CheckpointError, CheckpointMeta
from core.catalog import DATASETS
from core import inference, metadata
from core.costs import estimate_cost
from core.explain import explain
from core.explainer import MAX_BATCH, MAX_GRID, MAX_PASSES, ExplainError, make_explainer, registered_methods
from core.inference import predict, predict_tensor
from core.models import build_student
from core.train import main as train_main

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
    "seed": [-1, 2**32, 2**64],  # numpy's seeding takes 32 bits
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


# --------------------------------------------------------------------------- explainers' inputs and parameters

def _one_bad_pixel(value: float) -> torch.Tensor:
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x[0, 1, 5, 7] = value
    return x


# Inputs no model here can take: (id, input, words of the one refusal predict and every explainer give).
MALFORMED_INPUTS = [
    ("nan", lambda: _one_bad_pixel(NAN), "NaN or inf"),
    ("all_nan", lambda: torch.full((1, 3, 32, 32), NAN), "NaN or inf"),
    ("inf", lambda: _one_bad_pixel(INF), "NaN or inf"),
    ("minus_inf", lambda: _one_bad_pixel(-INF), "NaN or inf"),
    ("one_channel", lambda: torch.zeros(1, 1, 32, 32), "1 channel.*takes 3"),
    ("four_channels", lambda: torch.zeros(1, 4, 32, 32), "4 channel.*takes 3"),
    ("float64", lambda: torch.zeros(1, 3, 32, 32, dtype=torch.float64), "float64.*float32"),
    ("float16", lambda: torch.zeros(1, 3, 32, 32, dtype=torch.float16), "float16.*float32"),
    ("uint8", lambda: torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "uint8.*float32"),
    ("3d", lambda: torch.zeros(3, 32, 32), r"C, H, W\).*\(3, 32, 32\)"),
    ("5d", lambda: torch.zeros(1, 1, 3, 32, 32), r"C, H, W\)"),
    ("numpy", lambda: np.zeros((1, 3, 32, 32), np.float32), "tensor.*ndarray"),
]
MALFORMED_IDS = [case[0] for case in MALFORMED_INPUTS]


@pytest.mark.parametrize("name, build, match", MALFORMED_INPUTS, ids=MALFORMED_IDS)
def test_predict_refuses_malformed_input(tiny_student, count_forwards, name, build, match):
    counter = count_forwards(tiny_student)
    with pytest.raises(inference.PredictionError, match=match):
        predict_tensor(tiny_student, build())
    assert counter.images == 0


@pytest.mark.parametrize("target", [None, 1])
@pytest.mark.parametrize("method", registered_methods())
@pytest.mark.parametrize("name, build, match", MALFORMED_INPUTS, ids=MALFORMED_IDS)
def test_every_explainer_refuses_malformed_input_before_any_pass(tiny_student, count_forwards, name, build, match,
                                                                 method, target):
    counter = count_forwards(tiny_student)
    with pytest.raises(ExplainError, match=match):
        explain(tiny_student, build(), method, target, predict=False)
    assert counter.images == 0


@pytest.mark.parametrize("method", registered_methods())
def test_every_explainer_explains_one_image_at_a_time(tiny_student, method):
    with pytest.raises(ExplainError, match=r"one image shaped \(1, C, H, W\), got shape \(2, 3, 32, 32\)"):
        explain(tiny_student, torch.zeros(2, 3, 32, 32), method, 0, predict=False)


# Settings that would run unbounded, or that are no setting at all: (method, parameters, words of the refusal),
# refused when the explainer is built (`make_explainer`, the cost estimate), before any pass. Built for a 128 px
# image, the app's size.
BAD_PARAMETERS = [
    ("kernel_shap", {"n_samples": 10**8}, "n_samples.*at most"),
    ("lime", {"n_samples": 10**6}, "n_samples.*at most"),
    ("gradient_shap", {"n_samples": 10**6}, "n_samples.*at most"),
    ("integrated_gradients", {"n_steps": 10**6}, "n_steps.*at most"),
    ("occlusion", {"window": 1, "stride": 1}, "16,385 passes.*at most"),  # 128 x 128 windows and one more
    ("lime", {"grid": 4096}, "grid.*at most"),
    ("kernel_shap", {"grid": 100}, "grid.*at most"),
    ("integrated_gradients", {"internal_batch_size": 10**5}, "internal_batch_size.*at most"),
    ("kernel_shap", {"perturbations_per_eval": 10**5}, "perturbations_per_eval.*at most"),
    ("occlusion", {"perturbations_per_eval": 10**5}, "perturbations_per_eval.*at most"),
    ("kernel_shap", {"n_samples": 1e8}, "n_samples.*whole number"),
    ("lime", {"grid": True}, "grid.*whole number"),
    ("integrated_gradients", {"n_steps": 0}, "n_steps.*at least 1"),
    ("integrated_gradients", {"baseline": NAN}, "baseline.*finite"),
    ("occlusion", {"baseline": INF}, "baseline.*finite"),
    ("kernel_shap", {"baseline": "black"}, "baseline.*finite"),
    ("gradient_shap", {"stdevs": NAN}, "stdevs.*finite"),
    ("gradient_shap", {"stdevs": -0.1}, "stdevs.*finite"),
    ("gradient_shap", {"black": [NAN, 0.0, 0.0]}, "black.*finite"),
    ("gradient_shap", {"black": "dark"}, "black.*finite"),
    ("lime", {"alpha": INF}, "alpha.*finite"),
    ("lime", {"alpha": -1.0}, "alpha.*finite"),
    ("gradient_shap", {"seed": -1}, "seed.*between"),
    ("lime", {"seed": 2**32}, "seed.*between"),
    ("kernel_shap", {"seed": 0.5}, "seed.*whole number"),
]


@pytest.mark.parametrize("method, params, match", BAD_PARAMETERS, ids=lambda v: str(v) if isinstance(v, dict) else None)
def test_unbounded_or_malformed_parameters_are_refused_when_the_explainer_is_built(tiny_student, count_forwards,
                                                                                   method, params, match):
    counter = count_forwards(tiny_student)
    with pytest.raises(ExplainError, match=match):
        make_explainer(tiny_student, method, 128, **params)
    with pytest.raises(ExplainError, match=match):
        estimate_cost(tiny_student, method, 128, **params)
    with pytest.raises(ExplainError, match=match):
        explain(tiny_student, torch.zeros(1, 3, 128, 128), method, 0, **params)
    assert counter.images == 0


# The largest settings, accepted (built, not run): the limits are the documented ones, not one less.
LARGEST_PARAMETERS = [
    ("kernel_shap", {"n_samples": MAX_PASSES, "grid": MAX_GRID, "perturbations_per_eval": MAX_BATCH}),
    ("lime", {"n_samples": MAX_PASSES, "seed": 2**32 - 1}),
    ("gradient_shap", {"n_samples": MAX_PASSES, "internal_batch_size": MAX_BATCH, "black": [-1.0, 0.0, 1.0]}),
    ("integrated_gradients", {"n_steps": MAX_PASSES, "internal_batch_size": MAX_BATCH}),
    ("occlusion", {"window": 2, "stride": 1}),  # 127 x 127 windows and the unoccluded pass at 128 px
]


@pytest.mark.parametrize("method, params", LARGEST_PARAMETERS, ids=[m for m, _ in LARGEST_PARAMETERS])
def test_the_largest_parameters_are_accepted(tiny_student, method, params):
    explainer = make_explainer(tiny_student, method, 128, **params)
    assert sum(explainer.passes().values()) <= 2 * MAX_PASSES


@pytest.mark.parametrize("black", [[0.0, 0.0], [0.0] * 4], ids=["two", "four"])
def test_gradient_shap_black_needs_one_value_or_one_per_channel(tiny_student, black):
    with pytest.raises(ExplainError, match="black needs one value or one per channel"):
        explain(tiny_student, torch.zeros(1, 3, 32, 32), "gradient_shap", 0, predict=False, black=black)


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


# --------------------------------------------------------------------------- the training command line

# Settings no run can use: refused before anything is trained or written, not after the teacher has trained.
IMPOSSIBLE_SETTINGS = [
    ("--batch-size", "0"), ("--batch-size", "-3"),
    ("--seeds", "-1"), ("--seeds", str(2**32)), ("--seeds", "0 0"),
    ("--input-size", "100000"), ("--input-size", "8"), ("--input-size", "0"),
    ("--input-size", "24"),  # the default DenseNet-121 teacher pools 24 px to nothing
    ("--lr", "inf"), ("--lr", "nan"), ("--lr", "0"), ("--lr", "-0.1"),
    ("--epochs", "0"), ("--student-epochs", "0"), ("--student-epochs", "-2"),
    ("--threads", "0"), ("--threads", "-1"),
    ("--alpha", "1.5"), ("--alpha", "-0.5"), ("--alpha", "nan"),
    ("--temperature", "0"), ("--temperature", "-4"), ("--temperature", "inf"), ("--temperature", "nan"),
    ("--max-per-class", "0"), ("--patience", "0"), ("--depth", "99"), ("--depth", "2"), ("--pooled-blocks", "-1"),
    ("--attention-beta", "inf"), ("--attention-beta", "-1"),
]


# The same refusals for the recipe itself, which the app's Train page and core.reproduce build too: (setting, value).
IMPOSSIBLE_RECIPES = [
    ("batch_size", 0), ("batch_size", 2.5), ("batch_size", True), ("teacher_epochs", 0), ("student_epochs", -1),
    ("patience", 0), ("teacher_patience", 0), ("views", 0), ("max_per_class", 0), ("threads", 0),
    ("pooled_blocks", -1), ("data_seed", -1), ("data_seed", 2**32), ("seeds", (0, 2**32)), ("seeds", (1, 1)),
    ("input_size", 15), ("input_size", 1025), ("input_size", 24), ("depth", 9),
    ("lr", NAN), ("lr", INF), ("lr", 0.0), ("lr", -1e-3), ("weight_decay", -1e-4), ("weight_decay", NAN),
    ("val_fraction", 0.0), ("val_fraction", 1.0), ("val_fraction", NAN), ("attention_beta", INF),
    ("smoothing_control", 1.0), ("smoothing_control", NAN), ("teacher_label_smoothing", 1.0),
    ("time_cap_s", 0.0), ("time_cap_s", NAN), ("alpha", 1.01), ("alpha", NAN), ("temperature", 0.0),
    ("temperature", INF), ("temperature", NAN), ("loss", "kdd"), ("schedule", "linear"), ("teacher_arch", "vgg"),
]


@pytest.mark.parametrize("setting, value", IMPOSSIBLE_RECIPES, ids=[f"{s}={v!r}" for s, v in IMPOSSIBLE_RECIPES])
def test_the_recipe_refuses_impossible_settings(setting, value):
    from core.recipe import SettingError, TrainConfig

    loss_args = {"alpha": 0.5, "temperature": 4.0}
    kwargs = {"loss_args": {**loss_args, setting: value}} if setting in loss_args else {setting: value}
    with pytest.raises(SettingError) as err:
        TrainConfig(**kwargs)
    assert err.value.setting == setting and str(err.value).startswith(f"{setting}: "), str(err.value)
    assert "\n" not in str(err.value)


def _run_train_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``python -m core.train ARGV`` in this process: its exit code and standard error."""
    with pytest.raises(SystemExit) as stop:
        train_main(argv)
    return stop.value.code, capsys.readouterr().err


@pytest.mark.parametrize("option, value", IMPOSSIBLE_SETTINGS, ids=[f"{o} {v}" for o, v in IMPOSSIBLE_SETTINGS])
def test_training_command_line_refuses_impossible_settings(tmp_path, monkeypatch, capsys, option, value):
    monkeypatch.chdir(tmp_path)  # where the default run folder, runs/phantom, would go
    code, err = _run_train_cli([option, *value.split()], capsys)
    assert code == 2 and "Traceback" not in err, err
    assert err.startswith("usage:") and err.count("error:") == 1, err
    assert err.strip().splitlines()[-1].startswith(f"python -m core.train: error: argument {option}: "), err
    assert list(tmp_path.iterdir()) == []


def _diverging_rate(tmp_path: Path, monkeypatch) -> list[str]:
    return ["--lr", "1e30"]


def _out_is_a_file(tmp_path: Path, monkeypatch) -> list[str]:
    (tmp_path / "taken").write_text("a file, not a folder")
    return ["--out", str(tmp_path / "taken")]


def _out_inside_a_file(tmp_path: Path, monkeypatch) -> list[str]:
    (tmp_path / "taken").write_text("a file, not a folder")
    return ["--out", str(tmp_path / "taken" / "run")]


def _looping_link_in_the_data(tmp_path: Path, monkeypatch) -> list[str]:
    for split in ("train", "test"):
        for name in DATASETS["brain_tumor"].classes:
            folder = tmp_path / "data" / "brain_tumor" / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("L", (24, 24), 40 * i).save(folder / f"{i}.png")
    looping = tmp_path / "data" / "brain_tumor" / "train" / "glioma" / "x.png"
    looping.symlink_to(looping)
    return ["--dataset", "brain_tumor", "--root", str(tmp_path / "data")]


def _full_disk(tmp_path: Path, monkeypatch) -> list[str]:
    def no_space(obj, handle, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)  # the first file a teacher stage writes is its state.pt
    return []


def _missing_teacher(tmp_path: Path, monkeypatch) -> list[str]:
    return ["--stage", "student", "--teacher", str(tmp_path / "no_such_teacher.pt")]


# Runs that cannot go on: (setup returning extra options, exit code, what the error line says).
RUN_FAILURES = [
    (_diverging_rate, 1, "loss became"),
    (_out_is_a_file, 2, "argument --out: cannot write the run folder"),
    (_out_inside_a_file, 2, "argument --out: cannot write the run folder"),
    (_looping_link_in_the_data, 1, "x.png: Too many levels of symbolic links"),
    (_full_disk, 1, "No space left on device"),
    (_missing_teacher, 1, "checkpoint file not found"),
]


@pytest.mark.parametrize("setup, code, says", RUN_FAILURES, ids=[f.__name__.strip("_") for f, _, _ in RUN_FAILURES])
def test_a_training_run_that_cannot_go_on_stops_with_one_line(tmp_path, monkeypatch, capsys, single_thread, setup,
                                                                code, says):
    small = ["--teacher-arch", "resnet18", "--input-size", "32", "--max-per-class", "8", "--batch-size", "16",
             "--epochs", "1", "--depth", "3", "--stage", "teacher", "--no-eval", "--out", str(tmp_path / "run")]
    got, err = _run_train_cli(small + setup(tmp_path, monkeypatch), capsys)
    last = err.strip().splitlines()[-1]
    assert got == code and "Traceback" not in err, err
    assert last.startswith("python -m core.train: error: ") and says in last, err
    assert list(tmp_path.rglob("best.pt")) == [] and list(tmp_path.rglob("*.tmp")) == []


def test_a_full_disk_says_how_to_resume(tmp_path, monkeypatch, capsys, single_thread):
    # python -m core.train without --resume trains a stage afresh: "the same command again" would start over
    argv = ["--teacher-arch", "resnet18", "--input-size", "32", "--max-per-class", "8", "--epochs", "1",
            "--stage", "teacher", "--no-eval", "--out", str(tmp_path / "run")]
    _, err = _run_train_cli(argv + _full_disk(tmp_path, monkeypatch), capsys)
    assert "state.pt" in err and "--resume" in err, err



# --------------------------------------------------------------------------- the shipping commands' numbers

# Counts the reproduction, the faithfulness study and the timing table cannot use (``--images 0`` once meant "all",
# ``--steps 0`` divided by zero): refused by the parser, before any model is loaded or any file written.
SHIPPING_COMMAND_SETTINGS = [
    ("core.reproduce", ["phantom"], "--teacher-epochs", "0"), ("core.reproduce", ["phantom"], "--teacher-epochs", "-2"),
    ("core.reproduce", ["phantom"], "--threads", "0"),
    ("core.faithfulness_study", ["phantom"], "--images", "0"), ("core.faithfulness_study", ["phantom"], "--images", "-5"),
    ("core.faithfulness_study", ["phantom"], "--steps", "0"), ("core.faithfulness_study", ["phantom"], "--steps", "-1"),
    ("core.faithfulness_study", ["phantom"], "--slow-images", "0"),
    ("core.faithfulness_study", ["phantom"], "--sanity-images", "0"),
    ("core.faithfulness_study", ["phantom"], "--threads", "0"), ("core.faithfulness_study", ["phantom"], "--seed", "-1"),
    ("core.bench", [], "--images", "0"), ("core.bench", [], "--repeats", "0"), ("core.bench", [], "--warmup", "-1"),
    ("core.bench", [], "--budget", "-1"), ("core.bench", [], "--budget", "nan"), ("core.bench", [], "--threads", "0"),
    ("core.bench", [], "--input-size", "0"), ("core.bench", [], "--student-depth", "0"),
    ("core.bench", [], "--images", "two"),
]


@pytest.mark.parametrize("module, head, option, value", SHIPPING_COMMAND_SETTINGS,
                         ids=[f"{m.split('.')[1]} {o} {v}" for m, _, o, v in SHIPPING_COMMAND_SETTINGS])
def test_shipping_commands_refuse_impossible_counts(tmp_path, monkeypatch, capsys, module, head, option, value):
    import importlib

    monkeypatch.chdir(tmp_path)  # where their default folders (checkpoints/, runs/) would be written
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path / "checkpoints"))
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main([*head, option, value])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err and err.count("error:") == 1, err
    assert f"error: argument {option}: " in err.strip().splitlines()[-1], err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the reproduction's run failures

def _reproduce_missing_data(tmp_path: Path, monkeypatch) -> list[str]:
    return ["brain_tumor", "--root", str(tmp_path / "no_data")]


def _reproduce_runs_inside_a_file(tmp_path: Path, monkeypatch) -> list[str]:
    (tmp_path / "taken").write_text("a file, not a folder")
    return ["phantom", "--runs", str(tmp_path / "taken" / "runs")]


def _reproduce_full_disk(tmp_path: Path, monkeypatch) -> list[str]:
    def no_space(folder, *args, **kwargs):  # the run's first write is its stage folder
        raise OSError(errno.ENOSPC, "No space left on device", str(folder))

    monkeypatch.setattr(Path, "mkdir", no_space)
    return ["phantom"]


def _reproduce_unreadable_kept_stage(tmp_path: Path, monkeypatch) -> list[str]:
    kept = tmp_path / "kept" / "phantom" / "official"
    kept.mkdir(parents=True)
    (kept / "teacher.json").write_text("{not json")
    (kept / "teacher.pt").write_bytes(b"")
    return ["phantom", "--kept", str(tmp_path / "kept")]


def _reproduce_timing_without_checkpoints(tmp_path: Path, monkeypatch) -> list[str]:
    return ["phantom", "--only-timing"]


def _reproduce_impossible_kd(tmp_path: Path, monkeypatch) -> list[str]:
    return ["phantom", "--kd", "1.5", "4"]  # once refused only after the teacher had trained


# Runs of python -m core.reproduce that cannot go on: (setup returning its arguments, exit code, what the error line
# says). Like the training command: one line, no traceback, and the shipped folder untouched.
REPRODUCE_FAILURES = [
    (_reproduce_missing_data, 1, "no_data does not exist"),
    (_reproduce_runs_inside_a_file, 1, "Not a directory"),
    (_reproduce_full_disk, 1, "No space left on device"),
    (_reproduce_unreadable_kept_stage, 1, "teacher.json"),
    (_reproduce_timing_without_checkpoints, 1, "python -m core.reproduce phantom"),
    (_reproduce_impossible_kd, 2, "argument --kd: alpha: "),
]


@pytest.mark.parametrize("setup, code, says", REPRODUCE_FAILURES,
                         ids=[f.__name__.removeprefix("_reproduce_") for f, _, _ in REPRODUCE_FAILURES])
def test_a_reproduction_that_cannot_go_on_stops_with_one_line(tmp_path, monkeypatch, capsys, single_thread, setup,
                                                               code, says):
    from core.reproduce import main as reproduce_main

    monkeypatch.chdir(tmp_path)
    shipped = tmp_path / "checkpoints"
    monkeypatch.setenv("KD_CHECKPOINTS", str(shipped))
    argv = setup(tmp_path, monkeypatch) + ["--budget", "smoke", "--no-timing", "--out", str(shipped)]
    if "--runs" not in argv:
        argv += ["--runs", str(tmp_path / "runs")]
    if "--only-timing" in argv:
        argv.remove("--no-timing")
    with pytest.raises(SystemExit) as stop:
        reproduce_main(argv)
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert stop.value.code == code and "Traceback" not in err, err
    assert last.startswith("python -m core.reproduce: error: ") and says in last, err
    assert not shipped.exists() and list(tmp_path.rglob("best.pt")) == []
