"""Failed and interrupted writes: each ends in one clear error, and nothing already written is lost.

* ``WRITE_FAILURES``: a full disk, a torch save that fails, a failed rename;
* ``KEPT`` and the stale temporaries a killed write leaves behind.
"""

from __future__ import annotations

import errno
import json
import io
import os
import tempfile
import time
from pathlib import Path

import pytest
import torch

from core import checkpoints


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


# --------------------------------------------------------------------------- commands that rewrite shipped files

def _contents(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the ``earlier/`` copies included), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _shipped_brain_tumor(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A checkpoint root (``$KD_CHECKPOINTS``) whose brain_tumor folder holds tiny teacher, student and label-only
    checkpoints, and a data root with five images per class and split; returns (dataset folder, data root)."""
    from core.catalog import DATASETS
    from core.models import build_student
    from tests.apptest_support import grey_image_tree

    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path / "checkpoints"))
    grey_image_tree(tmp_path / "data", "brain_tumor", per_class=5)
    folder = tmp_path / "checkpoints" / "brain_tumor"
    for seed, role in enumerate(("teacher", "student", "student_label_only")):
        meta = checkpoints.CheckpointMeta(arch="student", num_classes=4, classes=list(DATASETS["brain_tumor"].classes),
                                          input_size=32, mean=[0.5] * 3, std=[0.25] * 3, dataset="brain_tumor",
                                          role="teacher" if role == "teacher" else "student", arch_args={"depth": 3})
        torch.manual_seed(seed)
        checkpoints.save(build_student(4, depth=3).eval(), meta, folder / f"{role}.pt")
    return folder, tmp_path / "data"


def _fewer_images(tmp_path: Path) -> Path:
    """A data root with two images per class and split (8 test images where the other has 20)."""
    from tests.apptest_support import grey_image_tree

    grey_image_tree(tmp_path / "fewer", "brain_tumor", per_class=2)
    return tmp_path / "fewer"


def _refused(command, argv: list[str], capsys) -> str:
    """The one error line of a command refused with exit 2 (after any progress bar it drew while it ran)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        command(argv)
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert stop.value.code == 2 and err.count("error:") == 1 and "Traceback" not in err, err
    assert ": error: " in last and "--force" in last and "earlier/" in last, err
    return last


def _replaced(folder: Path) -> list[Path]:
    return sorted((folder / "earlier").glob("replaced-*"))


def test_evaluate_write_keeps_the_metadata_it_replaces_and_refuses_lesser_metrics(tmp_path, monkeypatch, capsys,
                                                                                  single_thread):
    import json

    from core.evaluate import main

    folder, data = _shipped_brain_tumor(tmp_path, monkeypatch)
    fewer = _fewer_images(tmp_path)
    pair = ["--teacher", str(folder / "teacher.pt"), "--student", str(folder / "student.pt"), "--write"]
    made = _contents(folder)
    main([*pair, "--root", str(data), "--bootstrap", "20"])
    [kept] = _replaced(folder)  # the metadata held no metrics, and is kept all the same, both files in one folder
    assert _contents(kept) == {name: made[name] for name in ("teacher.json", "student.json")}
    shipped = _contents(folder)
    lesser = [(["--root", str(fewer), "--bootstrap", "20"], "test images 8 (shipped: 20)"),
              (["--root", str(data), "--bootstrap", "10"], "bootstrap resamples 10 (shipped: 20)")]
    for options, named in lesser:
        assert named in _refused(main, [*pair, *options], capsys)
        assert _contents(folder) == shipped, "a refused run wrote or moved a file"
    # the student alone would lose its agreement with the teacher
    alone = ["--student", str(folder / "student.pt"), "--write", "--root", str(data), "--bootstrap", "20"]
    assert "agreement with the teacher" in _refused(main, alone, capsys)
    assert _contents(folder) == shipped
    main([*pair, "--root", str(fewer), "--bootstrap", "20", "--force"])
    assert json.loads((folder / "student.json").read_text())["metrics"]["test"]["n"] == 8
    [forced] = [k for k in _replaced(folder) if k != kept]
    assert _contents(forced) == {name: shipped[name] for name in ("teacher.json", "student.json")}
    # checkpoints outside the checkpoint root are a run's own: their metadata is rewritten freely
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path / "elsewhere"))
    main([*pair, "--root", str(fewer), "--bootstrap", "10"])
    assert len(_replaced(folder)) == 2


def test_predictions_keep_the_file_they_replace_and_refuse_fewer_images_or_models(tmp_path, monkeypatch, capsys,
                                                                                  single_thread):
    import numpy as np

    from core.predictions import main

    folder, data = _shipped_brain_tumor(tmp_path, monkeypatch)
    fewer = _fewer_images(tmp_path)
    command = ["brain_tumor", "--checkpoints", str(tmp_path / "checkpoints")]
    main([*command, "--root", str(data)])
    assert not (folder / "earlier").exists(), "nothing was replaced, yet something was kept"
    shipped = _contents(folder)
    assert "test images 8 (shipped: 20)" in _refused(main, [*command, "--root", str(fewer)], capsys)
    assert _contents(folder) == shipped
    for suffix in (".pt", ".json"):  # the label-only student set aside: its rows would be lost
        (folder / f"student_label_only{suffix}").rename(tmp_path / f"aside{suffix}")
    assert "without student_label_only" in _refused(main, [*command, "--root", str(data)], capsys)
    assert (folder / "predictions.npz").read_bytes() == shipped["predictions.npz"]
    for suffix in (".pt", ".json"):
        (tmp_path / f"aside{suffix}").rename(folder / f"student_label_only{suffix}")
    main([*command, "--root", str(fewer), "--force"])
    with np.load(folder / "predictions.npz") as written:
        assert written["probs_student"].shape == (8, 4)
    [kept] = _replaced(folder)
    assert _contents(kept) == {"predictions.npz": shipped["predictions.npz"]}
    # a checkpoint folder outside the checkpoint root is a run's own: its predictions are rewritten freely
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path / "elsewhere"))
    main([*command, "--root", str(data)])
    assert len(_replaced(folder)) == 1


def _timing_rows(models, images, methods, targets, **kwargs) -> list[dict]:
    """Stands in for the timing itself: what is tested is where the table goes, not how fast anything is."""
    return [{"model": model, "method": method, "median_s": 0.001} for model in models for method in methods]


def test_reproduce_only_timing_follows_the_timing_tables_rule(tmp_path, monkeypatch, capsys, single_thread):
    import json
    import shutil

    import core.bench
    from core.reproduce import main

    monkeypatch.setattr(core.bench, "benchmark_methods", _timing_rows)
    folder, data = _shipped_brain_tumor(tmp_path, monkeypatch)
    monkeypatch.setenv("KD_DATA_ROOT", str(data))
    command = ["brain_tumor", "--only-timing", "--threads", "1"]
    main([*command, "--out", str(tmp_path / "checkpoints")])
    assert not (folder / "earlier").exists()
    table = folder / "timing" / "bench.json"
    made = json.loads(table.read_text())
    made["config"]["images"] = 40  # a table shipped with more images than --only-timing times
    table.write_text(json.dumps(made))
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(folder, elsewhere / "brain_tumor", symlinks=True)
    shipped = _contents(folder)
    err = _refused(main, [*command, "--out", str(tmp_path / "checkpoints")], capsys)
    assert "images 20 (shipped: 40)" in err and str(table) in err
    assert _contents(folder) == shipped
    # the same folder named another way is the same shipped work
    monkeypatch.chdir(tmp_path)
    assert "images 20" in _refused(main, [*command, "--out", "checkpoints/../checkpoints"], capsys)
    assert _contents(folder) == shipped
    main([*command, "--out", str(tmp_path / "checkpoints"), "--force"])
    [kept] = _replaced(folder)
    assert _contents(kept) == {name: data for name, data in shipped.items() if name.startswith("timing/")}
    assert json.loads(table.read_text())["config"]["images"] == 20
    # --out outside the checkpoint root: the run's own table, rewritten freely
    main([*command, "--out", str(elsewhere)])
    assert json.loads((elsewhere / "brain_tumor" / "timing" / "bench.json").read_text())["config"]["images"] == 20
    assert not (elsewhere / "brain_tumor" / "earlier").exists()


def test_training_a_student_from_a_shipped_teacher_leaves_the_teachers_metadata_as_it_was(tmp_path, monkeypatch,
                                                                                          single_thread):
    """`core.train --stage student --teacher checkpoints/<ds>/teacher.pt` evaluated the shipped teacher beside its
    student and wrote the teacher's metrics into the shipped teacher.json (kept under earlier/ each time, or a
    traceback when lesser): a run writes only its own checkpoints' metadata."""
    from core.train.cli import main

    folder, data = _shipped_brain_tumor(tmp_path, monkeypatch)
    shipped = _contents(folder)
    main(["--dataset", "brain_tumor", "--root", str(data), "--stage", "student", "--teacher", str(folder / "teacher.pt"),
          "--depth", "3", "--input-size", "32", "--student-epochs", "1", "--batch-size", "8", "--threads", "1",
          "--out", str(tmp_path / "run")])
    assert _contents(folder) == shipped and not (folder / "earlier").exists()
    [student] = (tmp_path / "run").glob("student_s*/best.json")
    assert "test" in json.loads(student.read_text())["metrics"]  # its own metadata holds its evaluation
