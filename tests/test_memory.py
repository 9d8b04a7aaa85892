"""The server's C heap: what a run freed goes back to the system, and the sessions' threads share few heaps."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

from core import memory

# Fill the heap of a second thread with 300 MB of small blocks (each under glibc's mmap threshold), free all but
# the last one (which pins the heap's top) and print the resident MB before and after the release.
FRAGMENTED = textwrap.dedent("""
    import sys, threading
    sys.path.insert(0, {root!r})
    from core import memory

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024

    def run():
        blocks = [b"\\x01" * 65536 for _ in range(4800)]
        del blocks[:-1]
        print(rss_mb(), flush=True)
        memory.release_freed_memory()
        print(rss_mb(), flush=True)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
""")


def test_what_a_thread_freed_goes_back_to_the_system_when_released():
    root = str(__import__("pathlib").Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", FRAGMENTED.format(root=root)], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    before, after = (int(v) for v in out)
    assert before - after > 200, (before, after)  # 300 MB were freed; without the release they stay resident


def test_the_c_library_here_can_release_and_limit_heaps():
    """This project's machines run glibc: both calls must take effect here (they do nothing elsewhere)."""
    assert memory.release_freed_memory() is True
    assert memory.limit_heap_arenas(8) is True


def test_a_slow_run_releases_what_it_freed_before_the_next_run_takes_its_slot(monkeypatch):
    from core.explainers import EXPLAINERS
    from explorer import explanations_view

    events = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda: events.append("released"))
    slow = next(m for m, cls in EXPLAINERS.items() if cls.slow)
    cheap = next(m for m, cls in EXPLAINERS.items() if not cls.slow)
    with explanations_view.run_slot([cheap], on_wait=None):
        events.append("cheap run")
    with explanations_view.run_slot([slow], on_wait=None):
        events.append("slow run")
        assert explanations_view.SLOW_RUNS.ahead() == 1  # held while it runs
    assert events == ["cheap run", "slow run", "released"]
    assert explanations_view.SLOW_RUNS.ahead() == 0


def test_a_calibration_releases_its_batches_before_the_next_thread_measures(monkeypatch, tiny_student):
    from core import costs

    released = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda: released.append(threading.get_ident()))
    costs.calibrate(tiny_student, 20, 3, repeats=1, warmup=0)
    assert len(released) == 1
    costs.calibrate(tiny_student, 20, 3, repeats=1, warmup=0)  # cached: nothing measured, nothing to release
    assert len(released) == 1
