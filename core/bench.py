"""The paper's timing table: each explainer on teacher and student, with IQR, passes and bounds.

Run ``python -m core.bench --help``. Examples::

    python -m core.bench --dataset phantom --images 8            # shipped phantom checkpoints
    python -m core.bench --dataset brain_tumor --teacher T.pt --student S.pt --images 16
    python -m core.bench --dataset phantom --random-weights --teacher-arch densenet121 --input-size 224

Writes ``bench.csv`` and ``bench.json`` (environment, configuration, rows) to ``--out`` (default
``runs/bench/<dataset>/``). `run_bench` is the same run as a function for the app's Timing page.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from core import checkpoints, shipping
from core.arguments import add_data_option, choose_dataset, integer, number
from core.costs import estimate_cost
from core.explain import explain
from core.explainers import EXPLAINERS, registered_methods
from core.inference import to_model_input
from core.layout import in_checkpoint_root
from core.models import TEACHERS, build_student, build_teacher
from core.stopwatch import TimingResult, environment, time_callable
from core.teacher_evidence import attach_shipped_head
from core.evidence_model import NO_HEAD

log = logging.getLogger(__name__)

__all__ = ["BenchError", "planned_runs", "planned_seconds", "benchmark_methods", "run_bench", "write_results", "format_table", "build_parser", "main"]

ProgressCallback = Callable[[int, int, str], None]

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # random-weights runs only


class BenchError(ValueError):
    """A benchmark that cannot run as configured."""


def _row(model_name: str, method: str, timing: TimingResult, n_images: int, repeats: int, forward_s: float,
         passes: dict, bound_s: float, input_size, params: dict) -> dict:
    return {"model": model_name, "method": method, "images": n_images, "repeats": repeats, "warmup": timing.warmup,
            "mean_s": timing.mean, "median_s": timing.median, "iqr_s": timing.iqr, "q25_s": timing.q25,
            "q75_s": timing.q75, "forward_s": forward_s, "overhead_s": timing.median - forward_s,
            "x_forward": timing.median / forward_s if forward_s > 0 else float("nan"),
            "passes_forward": passes["forward"], "passes_backward": passes["backward"],
            "bound_s": bound_s, "ratio_to_bound": timing.median / bound_s if bound_s > 0 else float("nan"),
            "input_size": "x".join(str(s) for s in input_size), "threads": torch.get_num_threads(),
            "params": json.dumps(params, sort_keys=True)}


def planned_runs(predicted_s: float, images: int, repeats: int, warmup: int,
                 budget_s: float | None) -> tuple[int, int]:
    """``(timed runs per image, warm-up runs)`` of one method within a time budget.

    A method whose predicted time for all ``images x repeats`` runs exceeds ``budget_s`` gets fewer
    repeats (at least one per image), and no warm-up when one run takes over a second.
    """
    if budget_s is None or predicted_s * repeats * images <= budget_s:
        return repeats, warmup
    runs = max(1, int(budget_s / max(predicted_s * images, 1e-9)))
    return runs, 0 if predicted_s > 1.0 else warmup


def planned_seconds(predicted_s: float, images: int, repeats: int, warmup: int, budget_s: float | None) -> float:
    """Predicted wall time of one method's benchmark under `planned_runs` (warm-up included)."""
    runs, method_warmup = planned_runs(predicted_s, images, repeats, warmup, budget_s)
    return predicted_s * (runs * images + method_warmup)


def benchmark_methods(models: Mapping[str, nn.Module], images: torch.Tensor | Mapping[str, torch.Tensor],
                      methods: Sequence[str], targets: Sequence[int], *, repeats: int = 5, warmup: int = 1,
                      params: Mapping[str, dict] | None = None, budget_s: float | None = None,
                      threads: int | None = None, clock: Callable[[], float] = time.perf_counter,
                      sync: Callable[[], None] | None = None,
                      on_progress: ProgressCallback | None = None) -> list[dict]:
    """Time every method on every model over the same images and targets.

    Args:
        models: name -> model in eval mode.
        images: normalised (N, 3, H, W) batch shared by all models, or name -> batch when the models
            preprocess differently (the same N images in the same order).
        methods: registry names of `core.explainers.EXPLAINERS`.
        targets: one class per image, used for every model and method.
        repeats: timed runs per image; warmup: untimed runs on the first image.
        params: method -> parameters.
        budget_s: if set, a method whose predicted time for all runs exceeds it gets fewer repeats
            (at least one per image) and no warm-up when one run takes over a second; the row says so.
        threads: torch CPU threads for the run (restored afterwards).

    Returns:
        One row per (model, method), plus a ``"forward"`` row per model: median and IQR of seconds per
        image, the model's plain forward time, passes, the pass-count bound and the ratio to it.
    """
    params = dict(params or {})
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    usable = {name: [m for m in methods if EXPLAINERS[m].can_explain(model)] for name, model in models.items()}
    rows, done, total = [], 0, sum(len(m) + 1 for m in usable.values())  # the teacher's evidence: the student's
    try:
        for name, model in models.items():
            batch = images[name] if isinstance(images, Mapping) else images
            if len(batch) != len(targets) or len(batch) == 0:
                raise ValueError(f"{len(batch)} images for {len(targets)} targets")
            size = tuple(batch.shape[-2:])
            samples = []
            for i in range(len(batch)):
                x = batch[i:i + 1]

                def forward(x=x):
                    with torch.inference_mode():
                        model(x)

                samples += time_callable(forward, repeats, warmup if i == 0 else 0, clock=clock, sync=sync).samples
            fwd = TimingResult(samples, warmup)
            rows.append(_row(name, "forward", fwd, len(batch), repeats, fwd.median, {"forward": 1, "backward": 0},
                             fwd.median, size, {}))
            done += 1
            if on_progress:
                on_progress(done, total, f"{name}: forward")
            for method in usable[name]:
                method_params = dict(params.get(method, {}))
                cost = estimate_cost(model, method, size, **method_params)
                runs, method_warmup = planned_runs(cost.predicted_seconds, len(batch), repeats, warmup, budget_s)
                samples = []
                for i in range(len(batch)):
                    x, target = batch[i:i + 1], int(targets[i])

                    def call(x=x, target=target):
                        explain(model, x, method, target, predict=False, **method_params)

                    samples += time_callable(call, runs, method_warmup if i == 0 else 0,
                                             clock=clock, sync=sync).samples
                timing = TimingResult(samples, method_warmup)
                rows.append(_row(name, method, timing, len(batch), runs, fwd.median, cost.passes,
                                 cost.predicted_seconds, size, method_params))
                done += 1
                if on_progress:
                    on_progress(done, total, f"{name}: {method}")
    finally:
        torch.set_num_threads(previous_threads)
    return rows


def _load_models(dataset: str, teacher, student, random_weights: bool, teacher_arch: str,
                 student_depth: int, input_size: int | None, seed: int) -> tuple[dict, dict]:
    """Return ``(name -> model, name -> (input_size, mean, std))``."""
    from core.catalog import get_info

    info = get_info(dataset)
    if random_weights:
        if teacher or student:
            raise BenchError("--random-weights builds both models; do not also pass --teacher/--student")
        size = int(input_size or info.input_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            models = {"teacher": build_teacher(teacher_arch, len(info.classes)).eval(),
                      "student": build_student(len(info.classes), depth=student_depth).eval()}
        return models, {name: (size, IMAGENET_MEAN, IMAGENET_STD) for name in models}
    models, prep = {}, {}
    for role, path in (("teacher", teacher), ("student", student)):
        path = Path(path) if path else REPO_ROOT / "checkpoints" / dataset / f"{role}.pt"
        if not path.is_file():
            raise BenchError(f"{path}: no {role} checkpoint; pass --{role} CKPT or use --random-weights")
        model, meta = checkpoints.load(path, expected_classes=list(info.classes))
        if role == "student" and (unattached := attach_shipped_head(model, path)):
            log.warning("the student's evidence head is left out: %s", unattached)
        models[role] = model
        prep[role] = (int(input_size or meta.input_size), meta.mean, meta.std)
    return models, prep


def _load_images(dataset: str, split: str, n: int, prep: dict, seed: int,
                 root: str | None = None) -> tuple[dict, list[int]]:
    """The same ``n`` images (spread evenly over the split) preprocessed for each model, and their labels."""
    from core.data import load_dataset

    images, labels = {}, None
    for name, (size, mean, std) in prep.items():
        ds = load_dataset(dataset, split, root=root, input_size=size, seed=seed)
        if n < 1 or n > len(ds):
            raise BenchError(f"--images must be between 1 and {len(ds)} for {dataset} {split}, got {n}")
        picks = np.linspace(0, len(ds) - 1, n).round().astype(int)
        items = [ds[int(i)] for i in picks]
        images[name] = to_model_input(torch.stack([img for img, _ in items]), mean, std)
        labels = [int(label) for _, label in items]
    return images, labels


def run_bench(dataset: str = "phantom", teacher: str | Path | None = None, student: str | Path | None = None, *,
              images: int = 8, split: str = "test", methods: Sequence[str] | None = None, repeats: int = 5,
              warmup: int = 1, budget_s: float | None = 60.0, threads: int | None = None,
              random_weights: bool = False, teacher_arch: str = "densenet121", student_depth: int = 5,
              input_size: int | None = None, seed: int = 0, params: dict | None = None,
              out: str | Path | None = None, on_progress: ProgressCallback | None = None,
              force: bool = False, root: str | None = None) -> list[dict]:
    """Time every method on teacher and student over the same images and targets (their labels).

    Args:
        dataset, split, images: which images (spread evenly over the split).
        teacher, student: checkpoint paths; default ``checkpoints/<dataset>/{teacher,student}.pt``.
        methods: registry names (default: every registered method, `core.explainers.registered_methods`).
        repeats, warmup, budget_s, threads: see `benchmark_methods`.
        random_weights: build ``teacher_arch`` and a default student of ``student_depth`` blocks with
            seeded random weights at ``input_size`` (timings do not depend on weight values).
        params: method -> parameters. out: folder for bench.csv and bench.json (None: write nothing).
        on_progress: ``on_progress(done, total, label)`` after each (model, method).
        force: replace a shipped table (``out`` in the checkpoint root) even with fewer images, repeats, methods
            or a shorter time budget; otherwise such a run is refused before it starts (`core.shipping`).

    Returns:
        Rows as in `benchmark_methods`, each with ``dataset`` added.
    """
    known = registered_methods() + registered_methods(needs_head=True)
    methods = list(methods or registered_methods())  # a head's method when asked for: not every model has one
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise BenchError(f"unknown methods {unknown}; choose from {', '.join(known)}")
    config = {"dataset": dataset, "split": split, "images": images, "methods": methods, "repeats": repeats,
              "warmup": warmup, "budget_s": budget_s, "threads": threads, "random_weights": random_weights,
              "teacher": str(teacher) if teacher else None, "student": str(student) if student else None,
              "teacher_arch": teacher_arch if random_weights else None, "input_size": input_size,
              "seed": seed, "params": params or {}}
    if out is not None:
        refuse_lesser_table(config, Path(out), force)
    models, prep = _load_models(dataset, teacher, student, random_weights, teacher_arch, student_depth,
                                input_size, seed)
    unable = [m for m in methods if not any(EXPLAINERS[m].can_explain(model) for model in models.values())]
    if unable:
        raise BenchError(f"no model here can explain with {', '.join(unable)}: {NO_HEAD}")
    batches, targets = _load_images(dataset, split, images, prep, seed, root)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        env = environment()  # with the thread count the rows were measured with
        rows = benchmark_methods(models, batches, methods, targets, repeats=repeats, warmup=warmup,
                                 params=params, budget_s=budget_s, on_progress=on_progress)
    finally:
        torch.set_num_threads(previous_threads)
    for row in rows:
        row["dataset"] = dataset
    if out is not None:
        write_results(rows, out, config, env)
    return rows


def refuse_lesser_table(config: dict, out: Path, force: bool) -> None:
    """Refuse (`core.shipping.ShippingRefused`) a run that would replace a shipped table made with more."""
    shipped = out / "bench.json"
    if force or not in_checkpoint_root(out) or not shipped.is_file():
        return
    try:
        made = json.loads(shipped.read_text(encoding="utf-8"))["config"]
        less = shipping.timing_shortfalls(config, made)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        less = [f"its configuration cannot be read ({type(err).__name__}: {err})"]
    shipping.refuse_lesser("a timing table", shipped, less, force)


def write_results(rows: list[dict], out: str | Path, config: dict, env: dict | None = None) -> tuple[Path, Path]:
    """Write ``bench.csv`` and ``bench.json`` (environment, configuration, rows) into ``out``; in the checkpoint
    root the table replaced is kept under ``earlier/replaced-<time>/`` beside ``out`` (`core.shipping`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "bench.csv", out / "bench.json"
    if in_checkpoint_root(out):
        shipping.keep_replaced(out.parent, [Path(out.name) / p.name for p in (csv_path, json_path)])
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    payload = {"environment": env or environment(), "config": config, "rows": rows}
    json_path.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    return csv_path, json_path


def speed_factors(rows: list[dict]) -> dict | None:
    """The headline speed-up split into its two factors (median times of one bench run).

    ``distillation``: teacher Grad-CAM / student Grad-CAM (the same method on the smaller model);
    ``method``: student Grad-CAM / the student's one-pass maps (the ``single_pass`` explainers: ``feature_maps``,
    ``cam``, and the teacher's evidence where the student's head was timed); ``headline``:
    teacher Grad-CAM / each one-pass map, the product of the two. None without both models' Grad-CAM.
    """
    median = {(r["model"], r["method"]): r["median_s"] for r in rows}
    teacher, student = median.get(("teacher", "grad_cam")), median.get(("student", "grad_cam"))
    if not teacher or not student:
        return None
    one_pass = registered_methods(single_pass=True) + registered_methods(single_pass=True, needs_head=True)
    cheap = {m: median[("student", m)] for m in one_pass if median.get(("student", m))}
    return {"distillation": teacher / student, "method": {m: student / t for m, t in cheap.items()},
            "headline": {m: teacher / t for m, t in cheap.items()}}


def factor_lines(factors: dict | None) -> list[str]:
    """The two factors as sentences (docs/results.md, Timing page, the bench's printout)."""
    if not factors:
        return []
    lines = [f"distillation: teacher Grad-CAM / student Grad-CAM = {factors['distillation']:.1f}x"]
    for m, ratio in factors["method"].items():
        lines.append(f"method: student Grad-CAM / student {m} = {ratio:.2f}x; together teacher Grad-CAM / "
                     f"student {m} = {factors['headline'][m]:.1f}x")
    return lines


def format_table(rows: list[dict]) -> str:
    """The paper's table as text: mean and median ms with IQR, passes, bound and ratio to it."""
    head = f"{'model':<8} {'method':<21} {'mean ms':>10} {'median ms':>10} {'IQR ms':>8} {'passes F/B':>11} " \
           f"{'bound ms':>10} {'/bound':>7} {'x fwd':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<8} {r['method']:<21} {1e3 * r['mean_s']:>10.1f} {1e3 * r['median_s']:>10.1f} "
                     f"{1e3 * r['iqr_s']:>8.1f} {str(r['passes_forward']) + '/' + str(r['passes_backward']):>11} "
                     f"{1e3 * r['bound_s']:>10.1f} {r['ratio_to_bound']:>7.2f} {r['x_forward']:>8.1f}")
    return "\n".join(lines)


def _parse_params(items: Sequence[str]) -> dict:
    """``["integrated_gradients.n_steps=50", ...]`` -> ``{"integrated_gradients": {"n_steps": 50}}``."""
    params: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot:
            raise BenchError(f"--param expects METHOD.NAME=VALUE, got {item!r}")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        params.setdefault(method, {})[name] = parsed
    return params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="phantom", help="dataset the images come from: a built-in one, or a "
                        "folder of images under --root")
    parser.add_argument("--root", default=None, help="data root (default: $KD_DATA_ROOT, ../shared/datasets)")
    add_data_option(parser)
    parser.add_argument("--split", default="test", help="dataset split the images come from")
    parser.add_argument("--teacher", help="teacher checkpoint (.pt with its .json); "
                        "default checkpoints/<dataset>/teacher.pt")
    parser.add_argument("--student", help="student checkpoint; default checkpoints/<dataset>/student.pt")
    parser.add_argument("--images", type=integer(1), default=8,
                        help="number of images (spread evenly over the split)")
    parser.add_argument("--methods", nargs="+", choices=registered_methods() + registered_methods(needs_head=True),
                        help="methods to time (default: all but the teacher's evidence, which needs the student's "
                             "head)")
    parser.add_argument("--repeats", type=integer(1), default=5, help="timed runs per image and method")
    parser.add_argument("--warmup", type=integer(0), default=1, help="untimed warm-up runs per model and method")
    parser.add_argument("--budget", type=number(0), default=60.0,
                        help="seconds per (model, method): slower methods get fewer repeats (0: no limit)")
    parser.add_argument("--threads", type=integer(1), help="torch CPU threads (default: torch's current setting)")
    parser.add_argument("--random-weights", action="store_true",
                        help="time seeded random-weight models instead of checkpoints (speed runs)")
    parser.add_argument("--teacher-arch", default="densenet121", choices=list(TEACHERS),
                        help="teacher architecture with --random-weights")
    parser.add_argument("--student-depth", type=integer(1), default=5, help="student blocks with --random-weights")
    parser.add_argument("--input-size", type=integer(1), help="image side in pixels (default: the checkpoint's)")
    parser.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE",
                        help="method parameter, e.g. integrated_gradients.n_steps=50 (repeatable)")
    parser.add_argument("--seed", type=integer(0), default=0, help="seed for random weights and data splits")
    parser.add_argument("--out", help="output folder (default runs/bench/<dataset>/)")
    parser.add_argument("--force", action="store_true",
                        help="replace a shipped table (--out in the checkpoint root) even with fewer images, repeats "
                             "or methods; the replaced one is kept under earlier/")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    choose_dataset(parser, args)
    from tqdm.auto import tqdm

    out = Path(args.out) if args.out else REPO_ROOT / "runs" / "bench" / args.dataset
    bar = tqdm(total=0, disable=args.no_progress, desc="bench", file=sys.stderr)

    def progress(done: int, total: int, label: str) -> None:
        bar.total = total
        bar.set_postfix_str(label)
        bar.update(done - bar.n)

    try:
        rows = run_bench(args.dataset, args.teacher, args.student, images=args.images, split=args.split,
                         methods=args.methods, repeats=args.repeats, warmup=args.warmup,
                         budget_s=args.budget or None, threads=args.threads, random_weights=args.random_weights,
                         teacher_arch=args.teacher_arch, student_depth=args.student_depth,
                         input_size=args.input_size, seed=args.seed, params=_parse_params(args.param), out=out, root=args.root,
                         on_progress=progress, force=args.force)
    except ValueError as err:  # BenchError, CheckpointError, DatasetError, ExplainError: all say what to fix
        bar.close()
        print(f"error: {err}", file=sys.stderr)
        return 2
    bar.close()
    print(format_table(rows))
    for line in factor_lines(speed_factors(rows)):
        print(line)
    print(f"\nwrote {out / 'bench.csv'} and {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
