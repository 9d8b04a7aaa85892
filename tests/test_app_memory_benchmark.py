"""The app-memory benchmark end to end in its quick mode: real server, two headless Chromium sessions.

Checks what ``benchmarks/app_memory.py --quick`` writes (every field, positive numbers, each measure with its
target and ratio, the Markdown snippet) and that the server and all its children are gone afterwards. Needs
Debian's ``chromium`` and ``chromium-driver``, found as ``tests/test_browser.py`` finds them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.screenshots import chromium_paths

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not all(Path(p).is_file() for p in chromium_paths()),
                                 reason="chromium or chromedriver is missing (scripts/test.sh installs them)")]
ROOT = Path(__file__).resolve().parents[1]
MEASURES = ("cold_start_s", "rss_after_cold_start_mb", "rss_after_walk_mb", "rss_peak_mb")


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group ``pgid`` (the server started its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # after ")": state, ppid, pgrp
            found.append(int(entry.name))
    return found


def test_quick_run_writes_every_number_and_leaves_no_server(tmp_path):
    out = tmp_path / "app_memory.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "app_memory.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # 1: a target missed, not an error
    result = json.loads(out.read_text())

    for key in MEASURES:
        assert result[key] > 0, key
        check = result["checks"][key]
        assert check["target"] > 0 and check["ratio"] == pytest.approx(check["measured"] / check["target"], rel=1e-2)
    assert result["rss_peak_mb"] >= max(result["rss_after_cold_start_mb"], result["rss_after_walk_mb"]) - 1
    env = result["environment"]
    assert env["cpu"] and env["cpu_count"] > 0 and all(env[k] for k in ("python", "torch", "streamlit"))
    assert result["walk"]["quick"] and result["walk"]["sessions"] == 2
    # whether Home imported the model code in the background, and the torch build that decided it
    assert result["walk"]["torch_build"] in ("CPU", "GPU") and isinstance(result["walk"]["preload"], bool)
    steps = result["steps"]
    assert {s["session"] for s in steps} == {"session 1", "session 2"}
    assert any("upload" in s["step"] for s in steps) and any("explain" in s["step"] for s in steps)
    assert all(s["seconds"] > 0 and s["rss_mb"] > 0 for s in steps)
    assert not [s for s in steps if s["errors"]], [s for s in steps if s["errors"]]

    snippet = out.with_suffix(".md").read_text()
    assert "| RSS at peak, MB |" in snippet and env["torch"] in snippet
    assert f"torch's {result['walk']['torch_build']} build" in snippet
    assert "measured" in proc.stdout and "RSS at peak" in proc.stdout  # the printed table
    assert not Path(f"/proc/{result['server_pid']}").exists(), "the server process is still there"
    assert not group_members(result["server_pid"]), "a child of the server outlived it"
