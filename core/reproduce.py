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
   and every test image's probabilities under the shipped models (`core.predictions`, ``predictions.npz``);
7. the student's evidence head, trained from the shipped teacher (`core.teacher_evidence`,
   ``student_evidence.pt``, seed 0), and the explainer timing table with it (``timing/``).
Every stage writes its run folder and resumes from it, so an interrupted run loses at most an epoch (the evidence
head, minutes long, is trained again).
Shipped files are replaced only by a run with at least their budget and data, or with ``--force``, and what is
replaced is kept under ``earlier/`` (`core.shipping`); a trial run (the smoke budget) writes into its run folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from core import checkpoints, ood, predictions, shipping
from core.arguments import RUN_FAILURES, add_data_option, choose_dataset, failure_line, integer
from core.budgets import BUDGETS, Budget, default_budget
from core.catalog import dataset_status, resolve_root
from core.data import data_fingerprint, load_dataset
from core.evaluate import evaluate_checkpoints
from core.layout import (PREDICTIONS_FILE, RESULTS_FILE, SHIPPED_RUN_FOLDER, TEACHER_LOGITS_FILE, TIMING_FILE,
                         UNSHIPPED_RUN_FOLDER, checkpoint_file, dataset_folder, results_file, timing_file)
from core.metrics import mean_and_spread
from core.results_record import (PAIRED_METRICS, SUMMARY_METRICS, ArmSummary, Evaluation, GridRow, KdSetting,
                                 PairedDifference, ShippedResults, Spread)
from core.roles import CONTROLS, DISTILLED, LABEL_ONLY, SHIPPED, STUDENTS, TEACHER, Role
from core.stats import paired_difference
from core.teacher_evidence import HEAD_FILE, HEAD_META_FILE, ship_head
from core.recipe import SettingError, Stage, TrainConfig, default_stages, recorded_settings, stage_settings
from core.train import TrainResult, run_stages

log = logging.getLogger(__name__)

ALPHAS = (0.3, 0.5, 0.7)
TEMPERATURES = (2.0, 4.0, 8.0)
SEEDS = (0, 1, 2, 3, 4)
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
                       resume=True, threads=threads, teacher_logits=str(runs / TEACHER_LOGITS_FILE))


class KeptStageRefused(ValueError):
    """A kept stage made by another recipe, data or teacher; the message names the stage and each field that
    differs, with the kept value and this run's (the command's refusal, exit 2)."""


def kept_stage(cfg: TrainConfig, stage: Stage, kept: Path, fingerprint: str, teacher_sha: str | None = None,
               weights: bool = True) -> TrainResult | None:
    """A stage finished on an earlier machine and kept as ``kept/<stage>.json`` (and ``.pt`` when its weights
    are used later), or None when it is not kept there.

    Refused (`KeptStageRefused`) unless it was trained with exactly this recipe, on exactly this data and, for a
    student, from this teacher: the metadata written from it never describes a run that did not happen.
    """
    path = kept / f"{stage.name}.pt"
    if not checkpoints.meta_path(path).is_file() or (weights and not path.is_file()):
        return None
    meta = checkpoints.load_meta(path)
    train = {**recorded_settings(meta.train), "input_size": meta.input_size}
    wanted = stage_settings(cfg, stage)
    # (what differs, the kept value, this run's); role and loss against the metadata's own fields
    differ = [(k, repr(train.get(k)), repr(wanted[k])) for k in sorted(wanted)
              if k not in ("role", "loss", "loss_args") and train.get(k) != wanted[k]]
    if meta.role != stage.role:
        differ.append(("role", repr(meta.role), repr(stage.role)))
    if meta.data_fingerprint != fingerprint:
        differ.append(("the training data (fingerprint)", meta.data_fingerprint[:12] or "none", fingerprint[:12]))
    if stage.role == "student":
        loss = {"loss": stage.loss, **stage.loss_args, "attention_beta": cfg.attention_beta}
        if meta.kd != loss:
            differ.append(("the loss", str(meta.kd), str(loss)))
        if teacher_sha is not None and meta.train.get("teacher_sha256") != teacher_sha:
            differ.append(("the teacher (sha256)", str(meta.train.get("teacher_sha256"))[:12], teacher_sha[:12]))
    if differ:
        raise KeptStageRefused(f"{path}: the kept {stage.name} stage is not this recipe's: "
                               + "; ".join(f"{name} {was} (this run: {now})" for name, was, now in differ)
                               + "; remove it to train the stage here")
    log.info("%s: the %s stage, kept from an earlier run of this recipe", path, stage.name)
    model = checkpoints.load(path)[0] if weights else None
    return TrainResult.loaded(model, meta, path, stage)


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
    official = results_file(dataset_folder(dataset, root=out))
    if kd is None and protocol == "pooled" and official.is_file():
        return ShippedResults.read(official).chosen.loss_args()
    return kd


def train_fingerprint(cfg: TrainConfig) -> Callable[[int], str]:
    """The fingerprint of a recipe's training data at an input size (the phantom's pixels depend on it)."""
    return lambda size: data_fingerprint(load_dataset(cfg.dataset, "train", root=cfg.root, input_size=size,
                                                      seed=cfg.data_seed, val_fraction=cfg.val_fraction,
                                                      protocol=cfg.protocol, val_carve=cfg.val_carve))


def destination(cfg: TrainConfig, budget: Budget, grid: bool, runs: Path, out: Path, force: bool) -> Path:
    """The dataset folder a run writes into, decided before it trains (`core.shipping`): the shipped one, unless
    it holds checkpoints this run has less than (refused: `core.shipping.ShippingRefused`) or this is a trial run
    (training images capped per class, as the smoke budget is), which writes into its run folder instead."""
    target = dataset_folder(cfg.dataset, cfg.protocol, out)
    if force or not shipping.has_shipped_checkpoints(target):
        return target
    if budget.max_per_class is not None:
        own = dataset_folder(cfg.dataset, cfg.protocol, runs / UNSHIPPED_RUN_FOLDER)
        log.warning("a trial run (%d training images per class): the files shipped in %s are kept and this run's "
                    "go to %s (--force ships them)", budget.max_per_class, target, own)
        return own
    shipping.refuse_lesser("checkpoints", target,
                           shipping.checkpoint_shortfalls(target, budget, grid, train_fingerprint(cfg)), force)
    return target


def replaced_files(protocol: str, timing: bool) -> list[Path]:
    """Every file of a dataset folder that a run of ``protocol`` writes (relative to the folder)."""
    names = [Path(f"{role.shipped}{suffix}") for role in SHIPPED for suffix in (".pt", ".json")]
    names.append(Path(RESULTS_FILE))
    if protocol == "official":
        names += [Path(ood.FILE), Path(ood.STATS_FILE), Path(PREDICTIONS_FILE), Path(HEAD_FILE), Path(HEAD_META_FILE)]
        if timing:
            names += [TIMING_FILE, TIMING_FILE.with_suffix(".csv")]
    return names


def reproduce(dataset: str, budget: Budget, runs: Path, out: Path, root: str | None = None,
              protocol: str = "official", grid: bool = True, threads: int | None = None,
              timing: bool = True, kd: dict | None = None, kept: Path | None = None,
              force: bool = False, evidence: bool = True) -> ShippedResults:
    """Run the whole protocol for one dataset; returns the results also written to disk (``results.json``, named by
    the record's ``source``).

    ``kd``: a fixed ``{"alpha", "temperature"}`` instead of the grid. The pooled protocol takes the setting
    the official split chose (from its shipped results.json, when there), so the two splits differ only in
    the split. ``timing=False`` skips the explainer timing table (written for the official split only).
    ``evidence=False`` skips the student's evidence head (`core.teacher_evidence.ship_head`, official split only,
    seed 0): a head fits one student, so a run that ships a student replaces its head.
    ``kept``: a folder of stages kept across machines (`run_kept`), ``kept/<dataset>/<protocol>/``.
    ``force``: replace the shipped files even with less (`destination`); the replaced ones are kept under
    ``earlier/`` whether forced or not.
    """
    kd = fixed_kd(out, dataset, protocol, kd)
    started = time.perf_counter()
    runs = runs / dataset / protocol
    kept = kept / dataset / protocol if kept else None
    cfg = recipe(dataset, budget, kept or runs, root, protocol, threads)  # teacher logits beside the kept stages
    target = destination(cfg, budget, grid and not kd, runs, out, force)
    fingerprint = train_fingerprint(cfg)(budget.input_size)
    teacher = run_kept(cfg, runs, [Stage.of(TEACHER)], kept, fingerprint)[TEACHER.stage()]
    grid_results, grid_rows, chosen = [], (), KdSetting(**(kd or DEFAULT_KD))
    if grid and not kd:
        grid_results, grid_rows, chosen = choose_kd(cfg, runs, kept, fingerprint, teacher, budget.grid_epochs)
    cfg = replace(cfg, loss_args=chosen.loss_args())
    students = run_kept(cfg, runs, default_stages(cfg, teacher=False), kept, fingerprint, teacher)
    shipped = float16_copies({TEACHER.stage(): teacher.path} | {name: r.path for name, r in students.items()}, runs)
    # each test image is predicted once; the near-duplicate-free numbers come from the same predictions
    evaluated = evaluate_checkpoints(shipped, write=True, root=root, also_without=near_duplicate_filter(dataset, root))
    clean = evaluated.pop("without", None)
    test, test_set = Evaluation(**evaluated), load_dataset(dataset, "test", root=root, input_size=cfg.input_size,
                                                          seed=cfg.data_seed, protocol=protocol)
    study = earlier_study(target)
    if target == dataset_folder(dataset, protocol, out):  # a trial run's own folder is not shipped work
        replaced = shipping.keep_replaced(target, replaced_files(protocol, timing))
        if replaced:
            log.info("the files this run replaces are kept in %s", replaced)
    ship(shipped, target)
    results = ShippedResults(
        dataset=dataset, protocol=protocol, budget=budget, chosen=chosen, grid=grid_rows, seeds=SEEDS, test=test,
        test_without_near_duplicates=Evaluation(**clean) if clean else None,
        summary={role.key: arm_summary(test, role) for role in STUDENTS},
        paired={control.key: paired_by_seed(test, control) for control in CONTROLS},
        test_fingerprint=data_fingerprint(test_set),
        teacher_sha256=checkpoints.file_sha256(shipped[TEACHER.stage()]),
        recipe={k: v for k, v in asdict(cfg).items() if k not in ("root", "teacher_logits", "threads")},
        seconds=time.perf_counter() - started,
        # every stage's own training time, those kept from earlier runs included (`seconds` counts this run only)
        training_seconds=sum(r.history[-1]["seconds"] for r in (teacher, *grid_results, *students.values())
                             if r.history),
        versions=checkpoints.library_versions(), created=checkpoints.now_iso(), faithfulness=study,
        source=str(results_file(target)))
    checkpoints.atomic_write_text(results_file(target), results.json_text())
    if protocol == "official":  # the app's check of uploads, fitted on the shipped teacher's validation split
        ood.write(*ood.fit(checkpoint_file(target, TEACHER), root), target)
        predictions.write(target, root)  # what the app shows of the test split, without running the models
        if evidence:  # the head this run's student replaced was moved under earlier/ with it
            ship_head(target, root=root, seed=0, force=True)
    if timing and protocol == "official":  # same architectures on either split: their explainer times are the same
        timing_table(dataset, target, root=root, threads=threads)
    return results


# The KD setting of a run without the grid (``--no-grid``).
DEFAULT_KD = {"alpha": 0.5, "temperature": 4.0}


def choose_kd(cfg: TrainConfig, runs: Path, kept: Path | None, fingerprint: str, teacher: TrainResult,
              epochs: int) -> tuple[list[TrainResult], tuple[GridRow, ...], KdSetting]:
    """Train one seed of every KD setting of the grid (curves only) and choose the best on validation:
    highest validation accuracy, then lowest validation loss. Returns the runs, their rows and the choice."""
    stages = [Stage(f"grid_a{alpha}_t{temp:g}", DISTILLED.kind, 0, "kd", {"alpha": alpha, "temperature": temp},
                    epochs=epochs) for alpha in ALPHAS for temp in TEMPERATURES]
    results = list(run_kept(cfg, runs, stages, kept, fingerprint, teacher, weights=False).values())
    rows = tuple(GridRow(**stage.loss_args, val_acc=best_val_acc(result.history),
                         val_loss=min(r["val_loss"] for r in result.history))
                 for stage, result in zip(stages, results))
    best = max(rows, key=lambda r: (r.val_acc, -r.val_loss))
    return results, rows, KdSetting(best.alpha, best.temperature)


def float16_copies(paths: dict[str, Path], runs: Path) -> dict[str, Path]:
    """Every stage's weights as they ship (float16, without machine-local paths), in ``runs/shipped/``: the
    published numbers are evaluated on exactly these files."""
    shipped = {}
    for name, src in paths.items():
        model, meta = checkpoints.load(src)
        meta.weights_dtype = "float16"
        meta.train = {k: v for k, v in meta.train.items() if k not in ("root", "teacher_logits")}
        shipped[name] = checkpoints.save(model, meta, runs / SHIPPED_RUN_FOLDER / f"{name}.pt", half=True)
    return shipped


def ship(shipped: dict[str, Path], target: Path) -> None:
    """Copy the teacher and seed 0 of each shipped student into the dataset folder, each with its metadata."""
    target.mkdir(parents=True, exist_ok=True)
    for role in SHIPPED:
        src, dst = shipped[role.stage(SEEDS[0])], checkpoint_file(target, role)
        for suffix in (".pt", ".json"):
            shutil.copyfile(src.with_suffix(suffix), dst.with_suffix(suffix))


def earlier_study(target: Path) -> dict | None:
    """A faithfulness study written into the results file earlier, which survives a re-run: it names the
    checkpoints it scored, so a study of other checkpoints reads as stale rather than vanishing. Read from the
    raw JSON: the study may have been written before any results (`core.faithfulness_study.write_study`)."""
    path = results_file(target)
    return json.loads(path.read_text(encoding="utf-8")).get("faithfulness") if path.is_file() else None


def arm_summary(test: Evaluation, role: Role) -> ArmSummary:
    """A student's test metrics over the seeds, and its agreement with the teacher."""
    def over_seeds(values: list[float]) -> Spread:
        return Spread(**mean_and_spread(values))

    return ArmSummary(**{m: over_seeds([test.report(role, seed)[m] for seed in SEEDS]) for m in SUMMARY_METRICS},
                      agreement=over_seeds([test.agreement(role, seed) for seed in SEEDS]))


def paired_by_seed(test: Evaluation, control: Role) -> dict[str, PairedDifference]:
    """Distilled minus a control, paired by seed (same initialisation and data order for every arm of a seed)."""
    out = {}
    for metric in PAIRED_METRICS:
        d = paired_difference([test.report(DISTILLED, s)[metric] for s in SEEDS],
                              [test.report(control, s)[metric] for s in SEEDS])
        out[metric] = PairedDifference(**{**d, "ci": tuple(d["ci"]), "differences": tuple(d["differences"])})
    return out


def timing_table(dataset: str, target: Path, images: int = 20, root: str | None = None,
                 threads: int | None = None, force: bool = False) -> Path:
    """Time the explainers on the shipped teacher and student (20 test images); writes ``timing/`` (a shipped table
    made with more is kept unless ``force``: `core.bench.run_bench`)."""
    from core.bench import run_bench
    from core.explainers import registered_methods

    # the teacher's evidence where the student's head is shipped: its cost beside the teacher's Grad-CAM
    head = registered_methods(needs_head=True) if (target / HEAD_FILE).is_file() else []

    if root:  # core.bench reads the data root from the environment like every loader
        import os
        os.environ.setdefault("KD_DATA_ROOT", str(root))
    run_bench(dataset, checkpoint_file(target, TEACHER), checkpoint_file(target, DISTILLED), images=images,
              methods=registered_methods(in_timing_table=True) + head,
              repeats=3, warmup=1, budget_s=120.0, threads=threads, out=timing_file(target).parent, force=force)
    return timing_file(target)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default=None,
                        help="dataset to reproduce: a built-in one, or a folder of images under --root")
    add_data_option(parser)
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
    parser.add_argument("--threads", type=integer(1), default=None, help="torch CPU threads")
    parser.add_argument("--teacher-epochs", type=integer(1), default=None,
                        help="override the budget's teacher epochs (use a fresh --runs folder: runs resume)")
    parser.add_argument("--kept", default=None, metavar="DIR",
                        help="keep every finished stage in DIR/<dataset>/<protocol>/ (float16) and take the stages "
                             "kept there instead of training them: commit DIR to continue on another machine")
    parser.add_argument("--no-timing", action="store_true", help="skip the explainer timing table")
    parser.add_argument("--no-evidence", action="store_true", help="skip the student's evidence head")
    parser.add_argument("--only-timing", action="store_true",
                        help="only (re)write the timing table of the shipped checkpoints")
    parser.add_argument("--force", action="store_true",
                        help="replace the shipped files even with a lesser or trial run (they are kept under earlier/)")
    args = parser.parse_args(argv)
    choose_dataset(parser, args)
    kd = {"alpha": args.kd[0], "temperature": args.kd[1]} if args.kd else None
    if kd:  # the recipe would refuse it only once the teacher had trained
        try:
            TrainConfig(loss_args=kd)
        except SettingError as err:
            parser.error(f"argument --kd: {err}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    budget = BUDGETS[args.budget or default_budget(args.dataset)]
    if args.teacher_epochs:
        budget = replace(budget, teacher_epochs=args.teacher_epochs)
    from core.bench import BenchError  # the timing table's own refusals (core.bench is loaded only to time)

    # as python -m core.train: what stops a run is one line and exit 1; a setting or a shipping refusal, exit 2
    try:
        if args.only_timing:
            # explainer times are taken once per dataset, on the official split
            target = dataset_folder(args.dataset, root=args.out)
            for role in (TEACHER, DISTILLED):
                if not checkpoint_file(target, role).is_file():
                    raise checkpoints.CheckpointError(
                        f"{checkpoint_file(target, role)} is missing: --only-timing times the shipped checkpoints; "
                        f"train them first with python -m core.reproduce {args.dataset}")
            print(f"wrote {timing_table(args.dataset, target, root=args.root, threads=args.threads, force=args.force)}")
            return
        res = reproduce(args.dataset, budget, Path(args.runs), Path(args.out), args.root, args.protocol,
                        grid=not args.no_grid, threads=args.threads, timing=not args.no_timing, kd=kd,
                        kept=Path(args.kept) if args.kept else None, force=args.force,
                        evidence=not args.no_evidence)
    except (shipping.ShippingRefused, KeptStageRefused) as err:  # nothing was shipped
        parser.exit(2, f"{parser.prog}: error: {failure_line(err)}\n")
    except SettingError as err:  # a budget the recipe cannot use, refused before anything trains
        parser.error(str(err))
    except (*RUN_FAILURES, BenchError) as err:
        parser.exit(1, f"{parser.prog}: error: {failure_line(err)}\n")
    student, label_only = (res.arm_summary(role).accuracy for role in (DISTILLED, LABEL_ONLY))
    print(f"{args.dataset} ({args.protocol}): chosen {res.chosen.loss_args()}; teacher acc "
          f"{res.accuracy(TEACHER):.4f}; student acc {student.mean:.4f} ± {student.std:.4f}; label-only "
          f"{label_only.mean:.4f} ± {label_only.std:.4f}; {res.seconds / 60:.1f} min")
    written, shipped = Path(res.source).parent, dataset_folder(args.dataset, args.protocol, args.out)
    if written != shipped:
        print(f"a trial run: the files shipped in {shipped} are kept; this run's files are in {written} "
              "(pass --force to ship them)")
    else:
        print(f"wrote {written}")


if __name__ == "__main__":
    main()
