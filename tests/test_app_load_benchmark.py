"""The load benchmark end to end in its quick mode: a real server per slot setting, headless Chromium sessions
explaining at once while another session times a light page.

Checks what ``benchmarks/app_load.py --quick`` writes (both settings, every number, the targets and their ratios,
the Markdown table), that the queued setting showed a waiting session its place, and that every server and its
children are gone afterwards. Needs Debian's ``chromium`` and ``chromium-driver``, found as
``tests/test_browser.py`` finds them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.screenshots import chromium_paths
from tests.test_app_memory_benchmark import group_members

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not all(Path(p).is_file() for p in chromium_paths()),
                                 reason="chromium or chromedriver is missing (scripts/test.sh installs them)")]
ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_measures_both_settings_in_one_run_and_leaves_no_server(tmp_path):
    out = tmp_path / "app_load.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "app_load.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # 1: a target missed, not an error
    result = json.loads(out.read_text())

    assert result["load"]["quick"] and result["load"]["sessions"] == 2 and result["load"]["explain_poll_s"] == 0.25
    no_queue, shipped = result["settings"]
    assert (no_queue["slots"], shipped["slots"]) == ("2", "default")
    for setting in (no_queue, shipped):
        assert setting["rss_peak_mb"] >= max(setting["rss_before_mb"], setting["rss_after_mb"]) - 1
        assert setting["rss_before_mb"] > 0 and setting["last_result_s"] > 0
        assert setting["light_alone_s"] and setting["light_under_load_s"]
        assert all(s > 0 for s in setting["light_alone_s"] + setting["light_under_load_s"])
        assert [s["session"] for s in setting["sessions"]] == ["session 1", "session 2"]
        assert not [s for s in setting["sessions"] if s["errors"]], setting["sessions"]
        assert not Path(f"/proc/{setting['server_pid']}").exists(), "a server process is still there"
        assert not group_members(setting["server_pid"]), "a child of a server outlived it"
    assert max(s["most_ahead_shown"] for s in no_queue["sessions"]) == 0, "no queue: no one waits"
    # queued: the two pressed Explain together, so one ran while the other was shown its place in the line
    assert max(s["most_ahead_shown"] for s in shipped["sessions"]) == 1, shipped["sessions"]

    for key, check in result["checks"].items():
        assert check["measured"] == shipped[key], "the targets judge the app as shipped"
        assert check["target"] > 0 and check["ratio"] == pytest.approx(check["measured"] / check["target"], rel=1e-2)
    env = result["environment"]
    assert env["cpu"] and env["cpu_count"] > 0 and all(env[k] for k in ("python", "torch", "streamlit"))
    snippet = out.with_suffix(".md").read_text()
    assert "| RSS at peak, MB |" in snippet and "KD_APP_EXPLAINERS=2" in snippet and env["torch"] in snippet
    assert "light page under load / alone" in proc.stdout and "last / first" in proc.stdout  # the printed table


def test_explaining_sessions_look_at_their_pages_less_often_than_the_timed_user_unless_quick():
    from benchmarks import app_load

    assert app_load.parse_args([]).explain_poll == 2.0
    assert app_load.parse_args(["--quick"]).explain_poll == 0.25
    assert app_load.parse_args(["--explain-poll", "1"]).explain_poll == 1.0
    for bad in ("0", "-1", "11", "nan"):
        with pytest.raises(SystemExit):
            app_load.parse_args(["--explain-poll", bad])
