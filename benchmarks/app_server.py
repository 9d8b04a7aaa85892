"""The app's server for the benchmarks: started in its own process group, stopped with all its children, and the
resident memory (RSS) of its process tree sampled in a thread for the peak.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# --- resident memory of a process tree -------------------------------------------------------------------------

def _children_by_parent() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process (this kernel may lack /proc/<pid>/task/<tid>/children)."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8") as handle:
                stat = handle.read()
        except OSError:  # the process ended meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree, found, todo = _children_by_parent(), [], [pid]
    while todo:
        found.append(todo.pop())
        todo += tree.get(found[-1], [])
    return found


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0  # gone, or a zombie (no VmRSS line)


def tree_rss_mb(pids: list[int]) -> float:
    """Sum of the RSS of ``pids`` in MB (2**20 bytes); psutil when installed, else /proc/<pid>/status."""
    try:
        import psutil
    except ImportError:
        return sum(_rss_kb(p) for p in pids) / 1024
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total / 2**20


class RssSampler(threading.Thread):
    """Samples the RSS of a process and its children every ``interval`` s; keeps the peak and a 1 s timeline."""

    def __init__(self, pid: int, interval: float = 0.1, tree_every: float = 1.0):
        super().__init__(daemon=True, name="rss-sampler")
        self.pid, self.interval, self.tree_every = pid, interval, tree_every
        self.peak_mb, self.samples, self.timeline = 0.0, 0, []
        self.started = time.perf_counter()
        self._stop_event, self._lock = threading.Event(), threading.Lock()  # the walks sample too
        self._pids: list[int] = [pid]
        self._tree_at = -1e9

    def current_mb(self) -> float:
        with self._lock:
            now = time.perf_counter()
            if now - self._tree_at >= self.tree_every:  # scanning /proc is the costly part: children rarely change
                self._pids, self._tree_at = process_tree(self.pid), now
            mb = tree_rss_mb(self._pids)
            self.peak_mb = max(self.peak_mb, mb)
            self.samples += 1
            second = int(now - self.started)
            if not self.timeline or self.timeline[-1][0] < second:
                self.timeline.append([second, round(mb, 1)])
            return mb

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.current_mb()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


# --- the server ----------------------------------------------------------------------------------------------

def server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(ROOT / "explorer" / "Home.py"), "--server.headless", "true",
            "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]


@contextlib.contextmanager
def server(port: int, log_path: Path):
    """The app in its own process group (stopped with all its children afterwards, whatever happened)."""
    env = {**os.environ, "KD_APP_THREADS": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(server_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            yield proc
        finally:
            stop_group(proc)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 15 s; the group id is the server's pid."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # children that outlived the server
        os.killpg(proc.pid, signal.SIGKILL)


def wait_healthy(url: str, proc: subprocess.Popen, deadline: float, log_path: Path) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before answering; see {log_path}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    return
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the server did not answer on {url} in time; see {log_path}")
        time.sleep(0.05)
