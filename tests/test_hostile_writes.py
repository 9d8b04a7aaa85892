"""Failed and interrupted writes: each ends in one clear error, and nothing already written is lost.

* ``WRITE_FAILURES``: a full disk, a torch save that fails, a failed rename;
* ``KEPT`` and the stale temporaries a killed write leaves behind.
"""

from __future__ import annotations

import errno
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
