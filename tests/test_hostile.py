"""Hostile input for the library: every bad checkpoint, model output, image or failed write ends in one clear error.

Each group is a parametrised test over a list of cases, so a new hostile input is one line in a list:

* ``WRONG_TYPE`` / ``OUT_OF_RANGE``: metadata fields (the fuzz covers every field of `CheckpointMeta`);
* ``BAD_META_FILES``: metadata files that are not a JSON object;
* ``BAD_ARCH_ARGS`` / ``BAD_WEIGHTS``: checkpoints whose metadata reads but whose model cannot be built;
* ``BROKEN_MODELS``: models whose outputs are not finite;
* ``REDUCED_MODES``, ``ORIENTATIONS``, ``NON_FINITE``, ``TOO_SMALL``: images;
* ``WRITE_FAILURES``, ``TEMPORARIES``: atomic writes.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import struct
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import checkpoints, images
from core.checkpoints import CheckpointError, CheckpointMeta
from core.data import DATASETS
from core.images import ImageError, open_image, to_rgb
from core import inference
from core.inference import predict, predict_tensor, preprocess
from core.models import build_student

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "checkpoints").rglob("*.pt"))
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
    monkeypatch.setattr(checkpoints, "MAX_META_BYTES", 100)
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


# --------------------------------------------------------------------------- images

def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in a few dozen bytes (its pixel data is empty)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height, match", [(8000, 8000, "too large"), (100_000, 100_000, "decompression bomb|too large")])
def test_bomb_headers_are_refused_before_decoding(width, height, match):
    with pytest.raises(ImageError, match=match):
        open_image(png_header(width, height))


def test_large_sixteen_bit_png_is_reduced_while_decoding(monkeypatch):
    arr = np.zeros((7000, 7000), dtype=np.uint16)
    arr[:, 3500:] = 4000
    data = encode(Image.fromarray(arr))
    del arr
    converted = []
    original_convert = Image.Image.convert
    monkeypatch.setattr(Image.Image, "convert", lambda self, *a, **k: (converted.append(self.size),
                                                                       original_convert(self, *a, **k))[1])
    img = open_image(data)
    assert max(img.size) <= images.MAX_SIDE and img.size[0] == img.size[1]
    assert img.mode.startswith("I")
    rgb = np.asarray(to_rgb(img))
    assert rgb.min() == 0 and rgb.max() == 255
    assert all(max(size) <= images.MAX_SIDE for size in converted), converted


# (mode, format) pairs reduced below MAX_SIDE (patched to 64) without changing mode.
REDUCED_MODES = [("L", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("1", "PNG"),
                 ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF"), ("CMYK", "TIFF"), ("RGB", "JPEG"), ("L", "JPEG"),
                 ("CMYK", "JPEG"), ("RGB", "WEBP"), ("RGB", "BMP")]


@pytest.mark.parametrize("mode, fmt", REDUCED_MODES, ids=lambda v: str(v))
def test_large_images_are_reduced_in_their_own_mode(monkeypatch, mode, fmt):
    monkeypatch.setattr(images, "MAX_SIDE", 64)
    arr = (np.add.outer(np.arange(200), np.arange(300)) % 256).astype(np.uint8)
    img = Image.fromarray(arr, "L").convert(mode)
    out = open_image(encode(img, fmt))
    assert max(out.size) <= 64 and out.size[0] > out.size[1]
    assert out.mode == img.mode or fmt == "JPEG"
    assert to_rgb(out).mode == "RGB"


def test_jpeg_is_reduced_during_decoding_not_after(monkeypatch):
    monkeypatch.setattr(images, "MAX_SIDE", 256)
    monkeypatch.setattr(images, "MAX_DECODED_BYTES", 2**20)  # a full 1024x1024 RGB decode needs 4 MiB
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8))
    assert max(open_image(encode(img, "JPEG")).size) <= 256  # draft mode decodes at 1/4
    with pytest.raises(ImageError, match="MiB"):
        open_image(encode(img, "PNG"))  # PNG has no reduced decode: refused


# EXIF orientation -> whether width and height swap.
ORIENTATIONS = [(1, False), (3, False), (6, True), (8, True), (5, True)]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation, swapped", ORIENTATIONS)
def test_exif_orientation_is_applied(fmt, orientation, swapped):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = open_image(encode(img, fmt, exif=exif.tobytes()))
    assert out.size == ((20, 40) if swapped else (40, 20))
    assert out.getexif().get(0x0112, 1) == 1
    if orientation == 3:  # rotated 180 degrees: the white half is now on the right
        assert np.asarray(out.convert("L"))[10, 35] > 200 and np.asarray(out.convert("L"))[10, 5] < 50


def test_exif_orientation_survives_reduction(monkeypatch):
    monkeypatch.setattr(images, "MAX_SIDE", 64)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = open_image(encode(Image.new("RGB", (400, 200), (9, 9, 9)), "JPEG", exif=exif.tobytes()))
    assert out.size[0] < out.size[1] <= 64


# A float image with one bad pixel at (3, 5).
NON_FINITE = [NAN, INF, -INF]


@pytest.mark.parametrize("bad", NON_FINITE, ids=str)
def test_float_image_with_a_non_finite_pixel_is_not_black(bad):
    arr = np.linspace(0.0, 1000.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    arr[3, 5] = bad
    img = open_image(encode(Image.fromarray(arr, "F"), "TIFF"))
    rgb = np.asarray(to_rgb(img))[..., 0]
    finite = np.isfinite(arr)
    assert rgb[finite].min() == 0 and rgb[finite].max() == 255
    assert rgb[3, 5] == 0
    assert rgb[31, 31] == 255


@pytest.mark.parametrize("fill", [NAN, INF, -INF])
def test_float_image_without_a_finite_pixel_is_refused(fill):
    img = Image.fromarray(np.full((16, 16), fill, dtype=np.float32), "F")
    with pytest.raises(ImageError, match="finite"):
        to_rgb(img)


# (width, height) below the one minimum side.
TOO_SMALL = [(1, 1), (7, 7), (7, 100), (100, 7), (0, 0)]


@pytest.mark.parametrize("size", TOO_SMALL, ids=str)
def test_tiny_images_are_refused_by_predict_and_upload_alike(size):
    meta = CheckpointMeta(arch="student", num_classes=4, classes=list("abcd"), input_size=32, mean=[0.5] * 3,
                          std=[0.25] * 3)
    img = Image.new("L", size, 50)
    with pytest.raises(ImageError, match="too small"):
        preprocess(meta, [img])
    if min(size) > 0:  # PNG cannot hold an empty image
        with pytest.raises(ImageError, match="too small"):
            open_image(encode(img))


def test_one_minimum_side_constant(monkeypatch):
    meta = CheckpointMeta(arch="student", num_classes=4, classes=list("abcd"), input_size=32, mean=[0.5] * 3,
                          std=[0.25] * 3)
    img = Image.new("L", (16, 16), 50)
    assert preprocess(meta, [img]).shape == (1, 3, 32, 32) and open_image(encode(img)).size == (16, 16)
    monkeypatch.setattr(images, "MIN_SIDE", 20)
    with pytest.raises(ImageError, match="too small"):
        preprocess(meta, [img])
    with pytest.raises(ImageError, match="too small"):
        open_image(encode(img))


def test_preprocess_refuses_what_is_not_an_image():
    meta = CheckpointMeta(arch="student", num_classes=4, classes=list("abcd"), input_size=32, mean=[0.5] * 3,
                          std=[0.25] * 3)
    with pytest.raises(ImageError, match="PIL image"):
        preprocess(meta, [np.zeros((32, 32, 3))])


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
