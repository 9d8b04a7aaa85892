"""The server process's own care: torch threads, freed memory back to the system, imports that must be complete
before a page draws, slots that sessions share. Nothing here imports torch at module level: the Home page starts
without it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from core import memory


def count_setting(name: str, default: int) -> int:
    """The environment setting ``name``, a whole number of at least 1 (``default`` when unset or empty).

    Raises ValueError naming the setting when it is anything else.
    """
    setting = (os.environ.get(name) or str(default)).strip()
    if not setting.isdigit() or int(setting) < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {setting!r}")
    return int(setting)


def app_threads() -> int:
    """The torch CPU threads the app runs on: ``$KD_APP_THREADS``, default 1 (see `configure_torch`).

    Raises ValueError naming the setting when it is not a whole number of at least 1.
    """
    return count_setting("KD_APP_THREADS", 1)


def configure_torch() -> int:
    """Use `app_threads` torch CPU threads; returns the number set.

    A Streamlit server runs every session in its own thread and often shares a small machine. Two
    OpenMP threads competing with any other busy process on two cores made one DenseNet121 forward
    pass 3.6 s instead of 20 ms here; one thread per forward keeps the app fast and predictable.
    """
    import torch  # here, not at the top: Home runs without torch

    threads = app_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def configure_server() -> None:
    """What the server process's sessions share, set once before the first model loads: at most
    `SERVER_HEAP_ARENAS` C heaps (`core.memory.limit_heap_arenas`), since a heap per session thread kept what each
    run freed and six sessions explaining at once took the server over 1.5 GB."""
    memory.limit_heap_arenas(SERVER_HEAP_ARENAS)


SERVER_HEAP_ARENAS = 2


def import_pandas() -> None:
    """Import pandas completely before a page draws a Plotly chart (Home calls it for every other page).

    Plotly looks pandas up in ``sys.modules`` without importing it. While another session's thread is still
    importing pandas (Streamlit does at its first ``st.dataframe``), that finds a half-initialised module and
    the chart fails: "partially initialized module 'pandas' has no attribute 'Series'", seen on the Dataset
    page in the two-session walk of ``benchmarks/app_memory.py``. An import statement waits for the other
    thread's import to finish instead. Home skips it: pandas costs about 70 MB and 0.7 s of the cold start.
    """
    importlib.import_module("pandas")


_PRELOAD_GUARD = threading.Lock()
_preload: threading.Thread | None = None
# torch, torchvision and the model code every model page needs, then what the other pages import before a chart
PRELOADED = ("explorer.loaders", "pandas", "explorer.plots")
preload_seconds: float | None = None  # how long the background import took, once it has finished


def _import_model_code() -> None:
    global preload_seconds
    start = time.perf_counter()
    for module in PRELOADED:
        importlib.import_module(module)
    preload_seconds = time.perf_counter() - start


# Libraries that only a GPU build of torch ships (CUDA on Linux and Windows, ROCm): importing such a build maps
# them, about twice the CPU build's resident memory (the app-memory tables of both builds in docs/benchmarks.md).
GPU_LIBRARIES = ("libtorch_cuda.so", "libtorch_hip.so", "torch_cuda.dll")
PRELOAD_SETTINGS = ("auto", "1", "0")


def installed_torch_dir() -> Path | None:
    """The installed torch package's folder, found without importing it (None when torch is not installed)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def preload_wanted(torch_dir: Path | None) -> bool:
    """Whether Home imports the model code in the background: ``$KD_APP_PRELOAD`` ``1`` or ``0``, or by default
    (unset, empty or ``auto``) when the torch in ``torch_dir`` is a CPU build.

    The background import puts torch's resident memory into the cold start. A CPU build (the share link's, from
    ``explorer/requirements.txt``; macOS and Windows wheels) keeps that within the cold start's 600 MB of
    ``benchmarks/app_memory.py``; a GPU build does not, so there the first page that shows a model pays the import.
    """
    setting = (os.environ.get("KD_APP_PRELOAD") or "auto").strip().lower()
    if setting not in PRELOAD_SETTINGS:
        raise ValueError(f"KD_APP_PRELOAD must be one of {', '.join(PRELOAD_SETTINGS)}, got "
                         f"{os.environ['KD_APP_PRELOAD']!r}")
    if setting != "auto":
        return setting == "1"
    return torch_dir is not None and not is_gpu_build(torch_dir)


def is_gpu_build(torch_dir: Path) -> bool:
    """Whether the torch in ``torch_dir`` (see `installed_torch_dir`) is a GPU build: it ships a GPU library."""
    return any((torch_dir / "lib" / name).exists() for name in GPU_LIBRARIES)


def torch_build() -> str | None:
    """"GPU" or "CPU": the installed torch's build, as the benchmarks record it (None when torch is missing)."""
    torch_dir = installed_torch_dir()
    return None if torch_dir is None else ("GPU" if is_gpu_build(torch_dir) else "CPU")


def model_code_loaded() -> bool:
    """Whether this process has imported the model code (`PRELOADED`'s first module: torch and the loaders)."""
    return PRELOADED[0] in sys.modules


def preload_model_code() -> threading.Thread | None:
    """When `preload_wanted`: import the model code in a background thread, once per process; Home calls it after
    it has drawn.

    Home runs without torch so that the share link's first page comes fast (the cold start). With the preload
    the import then happens while the user reads Home, instead of on the first page that shows a model
    (``benchmarks/first_visit.py`` with and without ``--preload``); a page that needs the code before the import
    has finished waits for the rest of it (Python's import lock). Returns the thread (None when off).
    """
    global _preload
    if not preload_wanted(installed_torch_dir()):
        return None
    with _PRELOAD_GUARD:
        if _preload is None:
            _preload = threading.Thread(target=_import_model_code, name="kd-preload", daemon=True)
            _preload.start()
        return _preload


class ServerSlots:
    """At most ``size`` runs at a time for the whole server, started in the order they asked (first come, first
    served); a waiting run knows how many runs are ahead of it (running, or waiting before it), for its page to
    show. Streamlit runs each session in its own thread, so one object shared by the sessions is the queue.
    """

    def __init__(self, size: int):
        self.size = size
        self._changed = threading.Condition()
        self._running = 0
        self._waiting: list[object] = []  # tickets, in the order they asked

    def ahead(self) -> int:
        """How many runs a run asking now would wait for: those running and those waiting."""
        with self._changed:
            return self._running + len(self._waiting)

    def _take_or_count(self, ticket: object) -> int:
        """Take a slot for ``ticket`` when it is first in line and one is free (0), else the runs ahead of it."""
        with self._changed:
            if self._waiting[0] is ticket and self._running < self.size:
                self._waiting.pop(0)
                self._running += 1
                self._changed.notify_all()
                return 0
            return self._running + self._waiting.index(ticket)

    @contextlib.contextmanager
    def held(self, on_wait: Callable[[int], None] | None = None, poll_s: float = 1.0) -> Iterator[None]:
        """Hold a slot for the block. While it waits, ``on_wait(runs ahead)`` is called at least every ``poll_s``
        seconds (never when a slot is free at once: a run alone looks as it did without the queue). Whatever
        ``on_wait`` or the block raises (a page's run stopped or rerun) leaves the line or frees the slot."""
        ticket, running = object(), False
        with self._changed:
            self._waiting.append(ticket)
        try:
            while (ahead := self._take_or_count(ticket)) > 0:
                if on_wait is not None:
                    on_wait(ahead)
                with self._changed:
                    self._changed.wait(poll_s)
            running = True
            yield
        finally:
            with self._changed:
                if running:
                    self._running -= 1
                else:
                    self._waiting.remove(ticket)
                self._changed.notify_all()
