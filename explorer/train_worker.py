"""The Train page's worker process: ``python -m explorer.train_worker FD``.

Reads ``{"recipe": TrainConfig fields, "teacher_path", "classes", "out"}`` as JSON on standard input, lowers its own CPU
priority, runs `explorer.training.run_all` on one torch thread and writes one JSON object per line to file
descriptor ``FD``: ``{"kind": "stage", "role"}``, ``{"kind": "epoch", "role", "record"}``, then
``{"kind": "done", "result"}`` or ``{"kind": "error", "message"}`` (with ``"write_failure": reason`` when a file
could not be written: the page, which removes the run folder, says what to do then). The run folder is the spec's
``"out"``, made and removed by the page's process, which outlives a killed worker. A module of its own, started with
``-m``, so that nothing of the server's (or a test's) main script runs again in the child.
"""

from __future__ import annotations

import errno
import json
import os
import sys

from core.metadata import StateWriteError  # without torch, whose import `main` reports like any other failure

WORKER_NICENESS = 10  # added to the server's: the pages' own work is scheduled first


def write_failure(err: Exception) -> str | None:
    """Why a file of the run could not be written (a full disk, a quota, a refused write), or None for any other
    failure: the command line's hint in such an error (resume the run) does not apply to the page's run."""
    if isinstance(err, StateWriteError) or (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)):
        return os.strerror(err.errno) if err.errno else "the file system refused the write"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = os.fdopen(int(argv[0]), "w", buffering=1, encoding="utf-8")

    def send(kind: str, **fields) -> None:
        out.write(json.dumps({"kind": kind, **fields}, default=float) + "\n")

    os.nice(WORKER_NICENESS)
    try:
        import torch

        from core import checkpoints
        from core.recipe import TrainConfig
        from explorer.training import run_all

        torch.set_num_threads(1)
        spec = json.loads(sys.stdin.read())
        cfg = TrainConfig(**spec["recipe"])
        path = spec.get("teacher_path")
        teacher = checkpoints.load(path, expected_classes=spec.get("classes"))[0].eval() if path else None
        result = run_all(cfg, teacher, lambda role, record: send("epoch", role=role, record=record),
                         lambda role: send("stage", role=role), out=spec["out"])
        result.pop("config")  # the page has its own copy of the recipe
        result["worker"] = {"pid": os.getpid(), "niceness": os.nice(0), "threads": torch.get_num_threads()}
        send("done", result=result)
    except Exception as err:  # the page shows it; a failed run must not leave the session waiting
        message = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
        reason = write_failure(err)
        send("error", message=message, **({"write_failure": reason} if reason else {}))
    finally:
        out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
