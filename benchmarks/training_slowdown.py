"""How much one session's training slows another session's page, with training in the page's thread or in
the Train page's worker process, measured in one run.

    python benchmarks/training_slowdown.py [--dataset brain_tumor] [--repeats 20] [--out FILE]

The other session's page: Grad-CAM of the shipped teacher and the average feature maps of the shipped
student on one test image, on the app's one torch thread (`explorer.runtime.configure_torch`), timed
``--repeats`` times (median). It is timed three ways in the same server-like process: alone; while the Train
page's default recipe on the phantom trains in a thread of this process (how the page ran it before, on the
app's one torch thread); and while the same recipe trains in an `explorer.training.TrainingJob` (a child
process, one torch thread, a lower CPU priority, one at a time for the server); each with one and with two
sessions training. The slow-down factors are the medians over the median alone. Target: the worker's factors
at most 1.5. Run it alone on the machine. The numbers go to
``benchmarks/results/training_slowdown.json`` with a Markdown table beside it (``.md``), which
``python -m core.results`` renders into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from core import checkpoints  # noqa: E402
from core.catalog import DATASETS  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.explain import explain  # noqa: E402
from core.images import open_image  # noqa: E402
from core.inference import preprocess  # noqa: E402
from benchmarks.report import measured_on, write_results  # noqa: E402
from core.recipe import TrainConfig  # noqa: E402
from core.stopwatch import environment  # noqa: E402
from core.layout import checkpoint_file, dataset_folder  # noqa: E402
from core.roles import DISTILLED, TEACHER  # noqa: E402
from explorer import runtime, train_worker, training  # noqa: E402

TARGET = 1.5  # the other page's time while a worker trains, over its time alone
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "training_slowdown.json"


class Stopped(Exception):
    """Raised from the epoch callback to end the in-thread training once the timing is done."""


def page_work(dataset: str):
    """The other session's page as a function: teacher Grad-CAM and student feature maps on test image 0."""
    teacher_file, student_file = (checkpoint_file(dataset_folder(dataset), r) for r in (TEACHER, DISTILLED))
    classes = list(DATASETS[dataset].classes)
    teacher = checkpoints.load(teacher_file, expected_classes=classes)[0].eval()
    student = checkpoints.load(student_file, expected_classes=classes)[0].eval()
    meta = checkpoints.load_meta(teacher_file)
    x = preprocess(meta, open_image(load_dataset(dataset, "test").path(0)))

    def run():
        explain(teacher, x, "grad_cam")
        explain(student, x, "feature_maps")
    return run


SCENARIOS = {"thread_1": "one session trains, in its page's thread (before)",
             "worker_1": "one session trains, in the worker (now)",
             "thread_2": "two sessions train, each in its page's thread (before)",
             "worker_2": "two sessions train, in the worker (now: one waits for the slot)"}


@contextmanager
def trainers_in_threads(recipe: TrainConfig, n: int):
    """``n`` runs of the recipe in threads of this process, as the page ran them, stopped on leaving."""
    stop = threading.Event()

    def epoch_end(role, record):
        if stop.is_set():
            raise Stopped

    def train():
        try:
            training.run_all(recipe, None, epoch_end)
        except Stopped:
            pass

    threads = [threading.Thread(target=train, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(5.0)  # past data decoding, into the training steps
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join()


@contextmanager
def trainers_in_workers(recipe: TrainConfig, n: int):
    """``n`` `TrainingJob`s of the recipe (they share the server's training slots), stopped on leaving."""
    jobs = [training.TrainingJob(f"benchmark {i}", recipe).start() for i in range(n)]
    try:
        while not any(job.snapshot() for job in jobs):  # a worker has imported torch and trains
            if all(job.finished for job in jobs):
                raise SystemExit(f"the training workers ended before the timing: {[j.error for j in jobs]}")
            time.sleep(0.5)
        yield
    finally:
        for job in jobs:
            job.stop()
        for job in jobs:
            job.wait()


def timed(work, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="brain_tumor", help="dataset of the other session's page")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON file for the numbers (Markdown beside it)")
    args = parser.parse_args(argv)
    runtime.configure_torch()
    work = page_work(args.dataset)
    work()  # warm-up: first-call allocations and lazy initialisation
    # The Train page's defaults on the phantom, with enough epochs to outlast the timing.
    recipe = TrainConfig(dataset="phantom", teacher_arch="resnet18", teacher_epochs=20, student_epochs=20,
                         max_per_class=120, input_size=64, time_cap_s=600.0, label_only=True)

    seconds = {"alone": timed(work, args.repeats)}
    for n in (1, 2):
        with trainers_in_threads(recipe, n):
            seconds[f"thread_{n}"] = timed(work, args.repeats)
        with trainers_in_workers(recipe, n):
            seconds[f"worker_{n}"] = timed(work, args.repeats)
    base = statistics.median(seconds["alone"])
    factors = {name: statistics.median(v) / base for name, v in seconds.items() if name != "alone"}
    env = environment()
    print(f"other page ({args.dataset}: teacher Grad-CAM + student feature maps), median of {args.repeats}, "
          f"torch {torch.__version__}, load average {env['load_average']:.1f}")
    print(f"alone: {base:.3f} s")
    for name, factor in factors.items():
        print(f"{SCENARIOS[name]}: {statistics.median(seconds[name]):.3f} s ({factor:.2f}x)")
    worst = max(factors["worker_1"], factors["worker_2"])
    met = worst <= TARGET
    print(f"worker slow-down at most {worst:.2f}x (target <= {TARGET}): {'PASS' if met else 'FAIL'}")
    payload = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "seconds": seconds, "factors": factors,
               "target": TARGET, "config": vars(args), "environment": env,
               "worker_niceness": train_worker.WORKER_NICENESS}
    write_results(args.out, payload, markdown(payload))
    return 0 if met else 1


def markdown(result: dict) -> str:
    """The docs/benchmarks.md snippet: the other page's time in each case, the factors, and the conditions."""
    cfg, env, f = result["config"], result["environment"], result["factors"]
    med = {k: statistics.median(v) for k, v in result["seconds"].items()}
    worst = max(f["worker_1"], f["worker_2"])
    return "\n".join([
        f"Training beside another session (`python benchmarks/training_slowdown.py`; the other page: teacher Grad-CAM "
        f"and student feature maps on one {cfg['dataset']} image, median of {cfg['repeats']}; the training: the "
        "Train page's defaults on the phantom; the app's one torch thread):", "",
        "| while | other page (s) | slow-down |", "| --- | --- | --- |",
        f"| nothing else runs | {med['alone']:.3f} | 1.00x |",
        *[f"| {SCENARIOS[name]} | {med[name]:.3f} | {f[name]:.2f}x |" for name in SCENARIOS], "",
        f"Worker slow-down at most {worst:.2f}x (target <= {result['target']}: "
        f"{'met' if worst <= result['target'] else 'not met'}). " + measured_on(result["created"], env), ""])


if __name__ == "__main__":
    raise SystemExit(main())
