"""Hostile checkpoints, model outputs and explainer inputs: each ends in one clear error.

Each group is a parametrised test over a list of cases, so a new hostile input is one line in a list:

* ``WRONG_TYPE`` / ``OUT_OF_RANGE``: metadata fields (the fuzz covers every field of `CheckpointMeta`);
* ``BAD_META_FILES``: metadata files that are not a JSON object;
* ``BAD_ARCH_ARGS`` / ``BAD_WEIGHTS``: checkpoints whose metadata reads but whose model cannot be built;
* ``BROKEN_MODELS``: models whose outputs are not finite;
* ``MALFORMED_INPUTS`` / ``BAD_PARAMETERS``: tensors and settings that predict and every explainer refuse before
  any pass.

Failed writes are in tests/test_hostile_writes.py, the commands' hostile settings in tests/test_hostile_commands.py.
"""

from __future__ import annotations

import dataclasses
import json
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

ROOT = Path(__file__).resolve().parents[1]
# the shipped checkpoints; the stages a run keeps (`core.reproduce --kept`) hold a teacher-logit cache too, and
# tests/test_shipped.py loads those, and the students' evidence heads
SHIPPED = sorted(p for p in (ROOT / "checkpoints").rglob("*.pt")
                 if ROOT / "checkpoints" / "stages" not in p.parents and p.name != "student_evidence.pt")
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


def test_finite_values_whose_sum_overflows_are_not_taken_for_inf(tiny_student):
    x = torch.full((1, 3, 32, 32), 3e38)  # each value finite, their float32 sum is inf
    assert torch.isinf(x.sum()) and torch.isfinite(x).all()
    inference.check_input(tiny_student, x)  # no refusal: the values are finite
    x[0, 0, 0, 0] = NAN
    with pytest.raises(inference.PredictionError, match="NaN or inf"):
        inference.check_input(tiny_student, x)


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
