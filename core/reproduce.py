"""Regenerate a dataset's shipped checkpoints, metadata and results: ``python -m core.reproduce DATASET``.

The protocol:
1. a DenseNet121 teacher from scratch;
2. KD students over alpha in {0.3, 0.5, 0.7} x T in {2, 4, 8} (one seed), the setting chosen on
   validation accuracy (the test split is never used for a choice);
3. the chosen setting with 5 seeds, and with the same seeds the label-only student (alpha = 1) and a
   label-smoothing control (no teacher);
4. evaluation of all of them on test (bootstrap 95% intervals, agreement with the teacher);
5. ``checkpoints/<dataset>/{teacher,student,student_label_only}.pt`` in float16 with their JSON, and
   ``results.json`` holding every run, the grid and the mean/spread over seeds;
6. the out-of-distribution check of uploads (`core.ood`, ``ood.json`` and ``ood.npz``) for the shipped teacher,
   and every test image's probabilities under the shipped models (`core.predictions`, ``predictions.npz``).
Every stage writes its run folder and resumes from it, so an interrupted run loses at most an epoch.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from core import checkpoints, ood, predictions
from core.catalog import DATASETS, dataset_status, resolve_root
from core.data import data_fingerprint, load_dataset
from core.evaluate import evaluate_checkpoints
from core.metrics import mean_and_spread
from core.models import STUDENT_POOLED_BLOCKS
from core.stats import paired_difference
from core.recipe import Stage, TrainConfig, default_stages, recorded_settings, stage_settings
from core.train import TrainResult, run_stages

log = logging.getLogger(__name__)

ALPHAS = (0.3, 0.5, 0.7)
TEMPERATURES = (2.0, 4.0, 8.0)
SEEDS = (0, 1, 2, 3, 4)
# The paper's comparison: the student's feature maps against the teacher's usual explainers.
TIMED_METHODS = ("feature_maps", "cam", "grad_cam", "saliency", "integrated_gradients", "gradient_shap", "kernel_shap")


@dataclass(frozen=True)
class Budget:
    """How much training each stage gets; ``cpu`` fits a 2-core machine, ``gpu`` is the paper's 224 px."""

    input_size: int
    teacher_epochs: int
    grid_epochs: int
    student_epochs: int
    batch_size: int = 64
    lr: float = 2e-3
    max_per_class: int | None = None  # training and validation images per class (None: all)
    schedule: str = "cosine"
    progressive: bool = False
    teacher_label_smoothing: float = 0.0
    # of the student's blocks, how many end in pooling: fewer keep its last map finer (better localised)
    student_pooled_blocks: int = STUDENT_POOLED_BLOCKS


# The teacher recipe for a 2-core CPU: progressive resizing (cheap small epochs first), a one-cycle schedule and
# label smoothing; classes are sampled in balance where the training split is skewed (see `SKEW`).
STRONG = dict(schedule="onecycle", progressive=True, teacher_label_smoothing=0.1)
BUDGETS = {
    # 128 px: at 64 px the teacher's last map is 2 x 2 and its class maps cannot point at a lesion. Two pooled
    # blocks: the student's last map is 16 x 16, where its CAM finds the lesion (the measured student frontier).
    "phantom": Budget(input_size=128, teacher_epochs=15, grid_epochs=8, student_epochs=15, batch_size=32,
                      student_pooled_blocks=2, **STRONG),
    "cpu": Budget(input_size=128, teacher_epochs=20, grid_epochs=5, student_epochs=12, batch_size=32, **STRONG),
    "gpu": Budget(input_size=224, teacher_epochs=30, grid_epochs=15, student_epochs=30, batch_size=32, lr=1e-3,
                  **STRONG),
    "smoke": Budget(input_size=32, teacher_epochs=1, grid_epochs=1, student_epochs=1, max_per_class=24),
    # The budget of the checkpoints shipped before the recipe above (kept to name their results).
    "cpu_v1": Budget(input_size=96, teacher_epochs=8, grid_epochs=5, student_epochs=10),
    "phantom_v1": Budget(input_size=64, teacher_epochs=15, grid_epochs=10, student_epochs=15),
}
SKEW = 3.0  # largest / smallest class count above which training samples classes in balance
SMOOTHING_CONTROL = 0.1


def near_duplicate_filter(dataset: str, root: str | None):
    """Predicate for brain_tumor test images that have a near-copy in train (listed with the data)."""
    listing = resolve_root(root) / dataset / "near_duplicates_test_vs_train.csv"
    if not listing.is_file():
        return None
    with listing.open(newline="") as handle:
        names = {row["test_image"] for row in csv.DictReader(handle)}
    return lambda path: path in names


def best_val_acc(history: list[dict]) -> float:
    """Validation accuracy at the epoch with the lowest validation loss (the kept weights)."""
    return min(history, key=lambda r: r["val_loss"])["val_acc"]


def recipe(dataset: str, budget: Budget, runs: Path, root: str | None = None, protocol: str = "official",
           threads: int | None = None) -> TrainConfig:
    """The training recipe of a budget (one config for every stage; the KD setting is chosen later)."""
    counts = [n for n in dataset_status(dataset, root)["counts"].get("train", {}).values() if n] or [1]
    return TrainConfig(dataset=dataset, root=root, protocol=protocol, input_size=budget.input_size,
                       batch_size=budget.batch_size, lr=budget.lr, max_per_class=budget.max_per_class,
                       schedule=budget.schedule, progressive=budget.progressive,
                       teacher_label_smoothing=budget.teacher_label_smoothing,
                       pooled_blocks=budget.student_pooled_blocks, class_balance=max(counts) / min(counts) > SKEW,
                       teacher_epochs=budget.teacher_epochs,
                       student_epochs=budget.student_epochs, seeds=SEEDS, smoothing_control=SMOOTHING_CONTROL,
                       resume=True, threads=threads, teacher_logits=str(runs / "teacher_logits.pt"))


def kept_stage(cfg: TrainConfig, stage: Stage, kept: Path, fingerprint: str, teacher_sha: str | None = None,
               weights: bool = True) -> TrainResult | None:
    """A stage finished on an earlier machine and kept as ``kept/<stage>.json`` (and ``.pt`` when its weights
    are used later), or None when it is not kept there.

    Refused (ValueError) unless it was trained with exactly this recipe, on exactly this data and, for a student,
    from this teacher: the metadata written from it never describes a run that did not happen.
    """
    path = kept / f"{stage.name}.pt"
    if not checkpoints.meta_path(path).is_file() or (weights and not path.is_file()):
        return None
    meta = checkpoints.load_meta(path)
    train = {**recorded_settings(meta.train), "input_size": meta.input_size}
    wanted = stage_settings(cfg, stage)
    # role and loss are compared below, against the metadata's own fields
    changed = sorted(k for k in wanted if k not in ("role", "loss", "loss_args") and train.get(k) != wanted[k])
    details = [f"{k} {train.get(k)!r}, recipe {wanted[k]!r}" for k in changed]
    if meta.role != stage.role:
        changed.append(f"role {meta.role!r}")
    if meta.data_fingerprint != fingerprint:
        changed.append("the training data (fingerprint)")
    if stage.role == "student":
        if meta.kd != {"loss": stage.loss, **stage.loss_args, "attention_beta": cfg.attention_beta}:
            changed.append(f"the loss ({meta.kd})")
        if teacher_sha is not None and meta.train.get("teacher_sha256") != teacher_sha:
            changed.append("the teacher (sha256)")
    if changed:
        raise ValueError(f"{path}: not the {stage.name} stage of this recipe ({', '.join(changed)} differ"
                         + "".join(f"; {d}" for d in details) + "); remove it to train the stage here")
    log.info("%s: the %s stage, kept from an earlier run of this recipe", path, stage.name)
    model = checkpoints.load(path)[0] if weights else None
    return TrainResult(model, meta, meta.train.get("history", []), meta.train.get("stopped", ""), path, stage)


def run_kept(cfg: TrainConfig, runs: Path, stages: list[Stage], kept: Path | None, fingerprint: str,
             teacher: TrainResult | None = None, weights: bool = True) -> dict[str, TrainResult]:
    """`run_stages`, except that with ``kept`` a stage kept there is taken as it is, and a stage finished here is
    kept there in float16 (only its metadata when ``weights`` is False) and used from there on.

    ``kept`` is for runs longer than one machine's life: commit it and a later run on a fresh machine continues
    with the next stage.
    """
    results = {}
    teacher_sha = checkpoints.file_sha256(teacher.path) if kept and teacher else None  # once, not per student
    for stage in stages:
        result = kept_stage(cfg, stage, kept, fingerprint, teacher_sha, weights) if kept else None
        if result is None:
            result = run_stages(cfg, runs, [stage], teacher=teacher.model if teacher else None,
                                teacher_path=teacher.path if teacher else None)[stage.name]
            if kept:
                kept.mkdir(parents=True, exist_ok=True)
                path = kept / f"{stage.name}.pt"
                if weights:  # later stages learn from, and are evaluated on, exactly the kept weights
                    checkpoints.save(result.model, result.meta, path, half=True)
                    result = replace(result, model=checkpoints.load(path)[0], path=path)
                else:
                    checkpoints.atomic_write_text(checkpoints.meta_path(path), result.meta.to_json())
        results[stage.name] = result
    return results


def fixed_kd(out: Path, dataset: str, protocol: str, kd: dict | None) -> dict | None:
    """The KD setting a run must use instead of its grid: the one given, or for the pooled protocol the
    setting the official split chose (its shipped results.json), so the two splits differ only in the split."""
    official = out / dataset / "results.json"
    if kd is None and protocol == "pooled" and official.is_file():
        return json.loads(official.read_text(encoding="utf-8"))["chosen"]
    return kd


def reproduce(dataset: str, budget: Budget, runs: Path, out: Path, root: str | None = None,
              protocol: str = "official", grid: bool = True, threads: int | None = None,
              timing: bool = True, kd: dict | None = None, kept: Path | None = None) -> dict:
    """Run the whole protocol for one dataset; returns the results dictionary also written to disk.

    ``kd``: a fixed ``{"alpha", "temperature"}`` instead of the grid. The pooled protocol takes the setting
    the official split chose (from its shipped results.json, when there), so the two splits differ only in
    the split. ``timing=False`` skips the explainer timing table (written for the official split only).
    ``kept``: a folder of stages kept across machines (`run_kept`), ``kept/<dataset>/<protocol>/``.
    """
    kd = fixed_kd(out, dataset, protocol, kd)
    started = time.perf_counter()
    runs = runs / dataset / protocol
    kept = kept / dataset / protocol if kept else None
    cfg = recipe(dataset, budget, kept or runs, root, protocol, threads)  # teacher logits beside the kept stages
    fingerprint = data_fingerprint(load_dataset(dataset, "train", root=root, input_size=budget.input_size,
                                                seed=cfg.data_seed, val_fraction=cfg.val_fraction, protocol=protocol))
    teacher = run_kept(cfg, runs, [Stage("teacher", "teacher")], kept, fingerprint)["teacher"]

    grid_results: list[TrainResult] = []
    grid_rows, chosen = [], dict(kd) if kd else {"alpha": 0.5, "temperature": 4.0}
    if grid and not kd:
        stages = [Stage(f"grid_a{alpha}_t{temp:g}", "student", 0, "kd", {"alpha": alpha, "temperature": temp},
                        epochs=budget.grid_epochs) for alpha in ALPHAS for temp in TEMPERATURES]
        # the grid needs curves only
        grid_results = list(run_kept(cfg, runs, stages, kept, fingerprint, teacher, weights=False).values())
        for stage, result in zip(stages, grid_results):
            grid_rows.append({**stage.loss_args, "val_acc": best_val_acc(result.history),
                              "val_loss": min(r["val_loss"] for r in result.history)})
        best = max(grid_rows, key=lambda r: (r["val_acc"], -r["val_loss"]))
        chosen = {"alpha": best["alpha"], "temperature": best["temperature"]}

    cfg = replace(cfg, loss_args=chosen)
    students = run_kept(cfg, runs, default_stages(cfg, teacher=False), kept, fingerprint, teacher)
    paths = {"teacher": teacher.path} | {name: result.path for name, result in students.items()}
    # Evaluate the weights exactly as shipped (float16), so the published numbers are of those files.
    target = out / dataset if protocol == "official" else out / dataset / protocol
    shipped = {}
    for name, src in paths.items():
        model, meta = checkpoints.load(src)
        meta.weights_dtype = "float16"
        meta.train = {k: v for k, v in meta.train.items() if k not in ("root", "teacher_logits")}
        shipped[name] = checkpoints.save(model, meta, runs / "shipped" / f"{name}.pt", half=True)
    # each test image is predicted once; the near-duplicate-free numbers come from the same predictions
    result = evaluate_checkpoints(shipped, write=True, root=root, also_without=near_duplicate_filter(dataset, root))
    clean = result.pop("without", None)

    def per_seed(prefix: str, key: str) -> list[float]:
        return [result["models"][f"{prefix}_s{seed}"][key] for seed in SEEDS]

    def summary(prefix: str) -> dict:
        pick = {k: per_seed(prefix, k) for k in ("accuracy", "macro_f1", "ece", "balanced_accuracy")}
        pick["agreement"] = [result["pairs"][f"{prefix}_s{seed}"]["agreement"] for seed in SEEDS]
        return {k: mean_and_spread(v) for k, v in pick.items()}

    # Distilled minus control, paired by seed (same initialisation and data order for every arm of a seed).
    arms = ["label_only", "smoothing"]
    paired = {f"student_minus_{arm}": {key: paired_difference(per_seed("student", key), per_seed(arm, key))
                                       for key in ("accuracy", "balanced_accuracy")} for arm in arms}
    test_set = load_dataset(dataset, "test", root=root, input_size=cfg.input_size, seed=cfg.data_seed,
                            protocol=protocol)

    target.mkdir(parents=True, exist_ok=True)
    # A faithfulness study written into the results file earlier survives a re-run; it names the checkpoints it
    # scored, so one of other checkpoints reads as stale rather than vanishing.
    previous = target / "results.json"
    study = json.loads(previous.read_text(encoding="utf-8")).get("faithfulness") if previous.is_file() else None
    for src_name, dst_name in (("teacher", "teacher"), (f"student_s{SEEDS[0]}", "student"),
                               (f"label_only_s{SEEDS[0]}", "student_label_only")):
        for suffix in (".pt", ".json"):
            shutil.copyfile(shipped[src_name].with_suffix(suffix), (target / dst_name).with_suffix(suffix))
    results = {
        "dataset": dataset, "protocol": protocol, "budget": asdict(budget), "chosen": chosen, "grid": grid_rows,
        "seeds": list(SEEDS), "test": result,
        "test_without_near_duplicates": clean,
        "summary": {"student": summary("student"), "label_only": summary("label_only"),
                    "smoothing": summary("smoothing")},
        "paired": paired, "test_fingerprint": data_fingerprint(test_set),
        "teacher_sha256": checkpoints.file_sha256(shipped["teacher"]),
        "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("root", "teacher_logits", "threads")},
        "seconds": time.perf_counter() - started,
        # every stage's own training time, those kept from earlier runs included (`seconds` counts this run only)
        "training_seconds": sum(r.history[-1]["seconds"] for r in (teacher, *grid_results, *students.values())
                                if r.history),
        "versions": checkpoints.library_versions(), "created": checkpoints.now_iso(),
    }
    if study is not None:
        results["faithfulness"] = study
    checkpoints.atomic_write_text(target / "results.json", json.dumps(results, indent=1))
    if protocol == "official":  # the app's check of uploads, fitted on the shipped teacher's validation split
        ood.write(*ood.fit(target / "teacher.pt", root), target)
        predictions.write(target, root)  # what the app shows of the test split, without running the models
    if timing and protocol == "official":  # same architectures on either split: their explainer times are the same
        timing_table(dataset, target, root=root, threads=threads)
    return results


def timing_table(dataset: str, target: Path, images: int = 20, root: str | None = None,
                 threads: int | None = None) -> Path:
    """Time the explainers on the shipped teacher and student (20 test images); writes ``timing/``."""
    from core.bench import run_bench

    if root:  # core.bench reads the data root from the environment like every loader
        import os
        os.environ.setdefault("KD_DATA_ROOT", str(root))
    run_bench(dataset, target / "teacher.pt", target / "student.pt", images=images, methods=list(TIMED_METHODS),
              repeats=3, warmup=1, budget_s=120.0, threads=threads, out=target / "timing")
    return target / "timing" / "bench.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(DATASETS), help="dataset to reproduce")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default=None,
                        help="training budget (default: phantom for phantom, cpu otherwise)")
    parser.add_argument("--protocol", choices=["official", "pooled"], default="official",
                        help="official split, or the paper's pooled random split (to measure leakage)")
    parser.add_argument("--no-grid", action="store_true", help="skip the alpha/T grid (use alpha=0.5, T=4)")
    parser.add_argument("--kd", nargs=2, type=float, metavar=("ALPHA", "T"), default=None,
                        help="a fixed KD setting instead of the grid (pooled: default the official split's)")
    parser.add_argument("--root", default=None, help="data root (default: $KD_DATA_ROOT, ../shared/datasets)")
    parser.add_argument("--runs", default="runs/reproduce", help="folder for run state (resumable)")
    parser.add_argument("--out", default="checkpoints", help="where shipped checkpoints and results go")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--teacher-epochs", type=int, default=None,
                        help="override the budget's teacher epochs (use a fresh --runs folder: runs resume)")
    parser.add_argument("--kept", default=None, metavar="DIR",
                        help="keep every finished stage in DIR/<dataset>/<protocol>/ (float16) and take the stages "
                             "kept there instead of training them: commit DIR to continue on another machine")
    parser.add_argument("--no-timing", action="store_true", help="skip the explainer timing table")
    parser.add_argument("--only-timing", action="store_true",
                        help="only (re)write the timing table of the shipped checkpoints")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    budget = BUDGETS[args.budget or ("phantom" if args.dataset == "phantom" else "cpu")]
    if args.teacher_epochs:
        budget = replace(budget, teacher_epochs=args.teacher_epochs)
    if args.only_timing:
        target = Path(args.out) / args.dataset  # explainer times are taken once per dataset, on the official split
        print(f"wrote {timing_table(args.dataset, target, root=args.root, threads=args.threads)}")
        return
    res = reproduce(args.dataset, budget, Path(args.runs), Path(args.out), args.root, args.protocol,
                    grid=not args.no_grid, threads=args.threads, timing=not args.no_timing,
                    kd={"alpha": args.kd[0], "temperature": args.kd[1]} if args.kd else None,
                    kept=Path(args.kept) if args.kept else None)
    s = res["summary"]
    print(f"{args.dataset} ({args.protocol}): chosen {res['chosen']}; teacher acc "
          f"{res['test']['models']['teacher']['accuracy']:.4f}; student acc {s['student']['accuracy']['mean']:.4f} "
          f"± {s['student']['accuracy']['std']:.4f}; label-only {s['label_only']['accuracy']['mean']:.4f} "
          f"± {s['label_only']['accuracy']['std']:.4f}; {res['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
