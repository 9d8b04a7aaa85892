"""Which student to ship: the speed / faithfulness frontier of student variants, measured in one run.

    python benchmarks/student_frontier.py [--dataset phantom] [--pooled 4 3 2] [--threads 2] [--out FILE]

The default student pools at the end of its first four blocks, so its last map is 1/32 of the input (4 x 4 at
128 px). Each variant here keeps one more block unpooled (`core.models.StudentCNN`'s ``pooled``), doubling the
side of the map CAM and the average feature maps draw, and the cost of the blocks after it. Every variant is
distilled from the dataset's shipped teacher with the recipe, KD setting and seed 0 of the shipped student (its
metadata), then scored by `core.faithfulness_study` on the same test images:
* test accuracy on those images;
* for CAM and the average feature maps: deletion AUC on the *teacher's* predicted-class probability (the
  student's map explaining the teacher; lower is better) beside the random map's, and on the phantom the
  pointing game (with the study's tolerance) and the share of the map's energy inside the lesion;
* the time per image of the student's CAM and feature maps and of the teacher's Grad-CAM, measured in the same
  run (`core.bench.benchmark_methods`), and their ratio against the target (at least `TARGET` times faster).
The recommended default is the variant with the best localisation (the phantom) or cross-model deletion AUC
(a real dataset) among those meeting the speed target. Run it alone: it trains. The numbers go to
``benchmarks/results/student_frontier.json`` (``student_frontier_<dataset>.json`` for a real dataset) with a
Markdown table beside it, rendered into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.report import measured_on, write_results  # noqa: E402
from core import checkpoints  # noqa: E402
from core.bench import benchmark_methods  # noqa: E402
from core.evaluate import evaluation_split  # noqa: E402
from core.faithfulness_study import StudyConfig, run_study  # noqa: E402
from core.inference import batch_for, predict_tensor  # noqa: E402
from core.layout import TEACHER_LOGITS_FILE, checkpoint_file, dataset_folder, stage_folder  # noqa: E402
from core.models import STUDENT_POOLED_BLOCKS, count_parameters  # noqa: E402
from core.recipe import Stage, TrainConfig  # noqa: E402
from core.roles import DISTILLED, TEACHER  # noqa: E402
from core.stopwatch import environment  # noqa: E402
from core.study_record import FaithfulnessStudy  # noqa: E402
from core.train import train_stage  # noqa: E402

TARGET = 8.0  # teacher Grad-CAM time / the student's one-pass map time
ACCURACY_SLACK = 0.01  # validation accuracy a recommended variant may give up against the best variant
METHODS = ("cam", "feature_maps")
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def default_out(dataset: str) -> Path:
    """Each dataset's frontier in its own file (the phantom's keeps the plain name)."""
    return RESULTS / ("student_frontier.json" if dataset == "phantom" else f"student_frontier_{dataset}.json")
# What a run of the recipe records that is not a setting of it (or is this machine's, not the run's).
NOT_SETTINGS = {"root", "threads", "teacher_logits", "loss", "loss_args", "seeds", "resume", "label_only",
                "smoothing_control"}


def shipped_recipe(student_meta: checkpoints.CheckpointMeta, **overrides) -> TrainConfig:
    """The recipe the shipped student was trained with (its metadata), one seed, no control arms."""
    names = {f.name for f in fields(TrainConfig)}
    recorded = {k: v for k, v in student_meta.train.items() if k in names and k not in NOT_SETTINGS}
    kd = student_meta.kd
    # "epochs" is the stage's own count in every metadata version ("student_epochs" came later)
    recorded["student_epochs"] = int(student_meta.train.get("epochs", recorded.get("student_epochs", 12)))
    return TrainConfig(**recorded, loss=kd["loss"], loss_args={"alpha": kd["alpha"], "temperature": kd["temperature"]},
                       seeds=(int(student_meta.seed or 0),), label_only=False, smoothing_control=0.0, resume=True,
                       **overrides)


def shipped_pair(dataset: str, ckpt_root, runs: Path, root: str | None, threads: int, **recipe: object):
    """The dataset's shipped teacher (model, path, metadata) and its student's recipe (`shipped_recipe`), with the
    teacher's logits cached in ``runs`` and ``recipe``'s settings on top."""
    folder = dataset_folder(dataset, root=ckpt_root)
    teacher_path = checkpoint_file(folder, TEACHER)
    teacher, teacher_meta = checkpoints.load(teacher_path)
    _, student_meta = checkpoints.load(checkpoint_file(folder, DISTILLED))
    cfg = replace(shipped_recipe(student_meta, root=root, threads=threads,
                                 teacher_logits=str(runs / TEACHER_LOGITS_FILE)), **recipe)
    return teacher, teacher_path, teacher_meta, cfg


def last_map_side(model, size: int) -> int:
    layer = model.feature_info[-1]
    return max(1, size // layer.reduction)


def recommend(rows: list[dict], localised: bool, baseline: dict) -> dict | None:
    """The fastest-enough, accurate-enough variant with the most faithful map: its best method's pointing-game hit
    rate on the phantom, else its lowest cross-model deletion AUC; None when no variant qualifies (the library
    default then stays).

    Accurate enough: validation accuracy within `ACCURACY_SLACK` of the best variant's (validation, not the test
    images the maps are scored on): a finer map is no better explanation of a student that decides worse. Its map
    must also beat the random map on the same criterion (``baseline``): ranking maps that explain the teacher
    worse than noise does only says which is least wrong."""
    best_val = max(r["val_acc"] for r in rows) if rows else 0.0
    random = baseline["random_hit"] if localised else baseline["random_deletion_on_teacher"]

    def score(row):
        fast = [row["methods"][m] for m in METHODS if row["methods"][m]["speedup"] >= TARGET]
        if not fast or row["val_acc"] < best_val - ACCURACY_SLACK:
            return None
        value = max(b["hit"] for b in fast) if localised else -min(b["deletion_on_teacher"] for b in fast)
        return value if value > (random if localised else -random) else None
    scored = [(value, r) for r in rows if (value := score(r)) is not None]
    return max(scored, key=lambda sr: sr[0])[1] if scored else None


def run(dataset: str, pooled: list[int], ckpt_root: Path, root: str | None, runs: Path, images: int | None = None,
        timing_images: int = 12, threads: int = 2, study_settings: dict | None = None, **recipe: object) -> dict:
    """Train, score and time every variant; ``recipe``: settings that replace the shipped student's (a quick
    check with fewer epochs or images, say); ``study_settings``: `StudyConfig` fields that replace the study's
    (fewer deletion steps or ROAD shares in a quick check: the frontier reads neither ROAD nor the curves' shape)."""
    torch.set_num_threads(threads)
    teacher, teacher_path, teacher_meta, cfg = shipped_pair(dataset, ckpt_root, runs, root, threads, **recipe)
    timing_set = evaluation_split(teacher_meta, root=root, max_per_class=max(1, timing_images // 4))
    rows, baseline, study = [], None, None
    for blocks in pooled:
        variant = replace(cfg, pooled_blocks=blocks)
        stage = Stage(f"pooled{blocks}_s{variant.seeds[0]}", "student", variant.seeds[0], variant.loss,
                      dict(variant.loss_args))
        result = train_stage(variant, stage, stage_folder(runs, stage.name), teacher.eval(), teacher_path=teacher_path)
        with tempfile.TemporaryDirectory() as tmp:  # the study reads the shipped teacher and student of a folder
            pair = dataset_folder(dataset, root=tmp)
            pair.mkdir()
            for suffix in (".pt", ".json"):  # each checkpoint with its metadata beside it
                shutil.copyfile(teacher_path.with_suffix(suffix), checkpoint_file(pair, TEACHER).with_suffix(suffix))
                shutil.copyfile(result.path.with_suffix(suffix), checkpoint_file(pair, DISTILLED).with_suffix(suffix))
            # the previous variant's study: the teacher's baseline scores are taken from it
            study = run_study(StudyConfig(dataset, checkpoints=tmp, root=root, images=images, methods=METHODS,
                                          sanity_images=1, threads=threads, explained=("student",),
                                          **(study_settings or {})), earlier=study)
        model = result.model.eval()
        x_t, x_s = batch_for(teacher_meta, timing_set.images), batch_for(result.meta, timing_set.images)
        targets = predict_tensor(teacher, x_t).argmax(1).tolist()
        times = benchmark_methods({"teacher": teacher}, x_t, ["grad_cam"], targets, repeats=3, threads=threads)
        times += benchmark_methods({"student": model}, x_s, list(METHODS), targets, repeats=3, threads=threads)
        median = {(r["model"], r["method"]): r["median_s"] for r in times}
        teacher_gradcam = median[("teacher", "grad_cam")]
        predicted, truth = np.asarray(study.predicted[DISTILLED]), np.asarray(study.true_class)
        row = {"pooled": blocks, "default": blocks == STUDENT_POOLED_BLOCKS,
               "map_side": last_map_side(model, result.meta.input_size), "input_size": result.meta.input_size,
               "parameters": count_parameters(model), "accuracy": float(np.mean(predicted == truth)),
               "images": study.images, "val_acc": max(r["val_acc"] for r in result.history),
               "forward_ms": 1e3 * median[("student", "forward")], "teacher_grad_cam_ms": 1e3 * teacher_gradcam,
               "methods": {}}
        for method in METHODS:
            local = (study.methods[method].localisation or {}).get(DISTILLED)
            row["methods"][method] = {
                "deletion_on_teacher": study.score(method, DISTILLED, TEACHER).deletion_auc.mean,
                "deletion_on_student": study.score(method, DISTILLED, DISTILLED).deletion_auc.mean,
                "hit": local.hit.mean if local else None, "energy": local.energy.mean if local else None,
                "ms": 1e3 * median[("student", method)],
                "speedup": teacher_gradcam / median[("student", method)]}
        rows.append(row)
        if baseline is None:
            baseline = {"random_deletion_on_teacher": study.score("random", TEACHER, TEACHER).deletion_auc.mean,
                        "random_hit": _teacher_hit(study, "random"),
                        "mask_prior_hit": _teacher_hit(study, "mask_prior"), "tolerance_px": study.tolerance_px}
        print(f"pooled {blocks}: map {row['map_side']} px, accuracy {row['accuracy']:.3f}, " + ", ".join(
            f"{m} {v['ms']:.1f} ms ({v['speedup']:.1f}x), deletion on teacher {v['deletion_on_teacher']:.3f}"
            + (f", hit {v['hit']:.2f}" if v["hit"] is not None else "") for m, v in row["methods"].items()))
    localised = baseline["random_hit"] is not None
    chosen = recommend(rows, localised, baseline)
    return {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "dataset": dataset,
            "target": TARGET, "accuracy_slack": ACCURACY_SLACK, "rows": rows, "baseline": baseline,
            "recommended": chosen["pooled"] if chosen else None, "criterion": "pointing game" if localised
            else "deletion AUC on the teacher", "teacher_sha256": checkpoints.file_sha256(teacher_path),
            "recipe": {"epochs": cfg.student_epochs, "loss_args": cfg.loss_args, "seed": cfg.seeds[0],
                       "input_size": cfg.input_size}, "environment": environment()}


def _teacher_hit(study: FaithfulnessStudy, baseline: str) -> float | None:
    """A baseline map's pointing-game hit rate (None where there are no lesion masks or no such baseline)."""
    found = study.methods.get(baseline)
    local = (found.localisation or {}).get(TEACHER) if found else None
    return local.hit.mean if local else None


def markdown(result: dict) -> str:
    """The docs/benchmarks.md snippet: one row per variant and method, the baselines and the recommendation."""
    base, recipe = result["baseline"], result["recipe"]
    localised = base["random_hit"] is not None
    head = "| pooled blocks | last map | parameters | validation accuracy | test accuracy | method | ms / image |" \
           " teacher Grad-CAM / it |" \
           " deletion AUC on the teacher |" + (" pointing game | energy in lesion |" if localised else "")
    command = "python benchmarks/student_frontier.py" + ("" if result["dataset"] == "phantom" else
                                                         f" --dataset {result['dataset']}")
    lines = [f"Student variants on {result['dataset']} (`{command}`; each distilled "
             f"from the shipped teacher for {recipe['epochs']} epochs at {recipe['input_size']} px, seed "
             f"{recipe['seed']}, KD alpha {recipe['loss_args']['alpha']} / T {recipe['loss_args']['temperature']:g}; "
             f"scored on {result['rows'][0]['images']} test images):", "", head,
             "|" + " --- |" * (head.count("|") - 1)]
    for row in result["rows"]:
        for method, v in row["methods"].items():
            name = {"cam": "CAM", "feature_maps": "average feature maps"}[method]
            cells = [f"{row['pooled']}" + (" (library default)" if row["default"] else ""),
                     f"{row['map_side']} x {row['map_side']}", f"{row['parameters'] / 1e6:.2f} M",
                     f"{row['val_acc']:.3f}", f"{row['accuracy']:.3f}", name, f"{v['ms']:.1f}", f"{v['speedup']:.1f}x",
                     f"{v['deletion_on_teacher']:.3f}"]
            if localised:
                cells += [f"{v['hit']:.2f}", f"{v['energy']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    baseline = f"Baselines: the random map's deletion AUC on the teacher {base['random_deletion_on_teacher']:.3f}"
    if localised:
        baseline += (f"; pointing game (tolerance {base['tolerance_px']} px): random map {base['random_hit']:.2f}, "
                     f"mask prior {base['mask_prior_hit']:.2f}")
    chosen = result["recommended"]
    slack = result.get("accuracy_slack")
    among = f"at least {result['target']:g}x faster than the teacher's Grad-CAM" + (
        f", within {100 * slack:g} point of the best validation accuracy and better than the random map"
        if slack is not None else "")
    verdict = (f"Recommended (best {result['criterion']} among variants {among}): {chosen} pooled blocks."
               if chosen is not None else
               f"No variant is {among}: the library default stays.")
    lines += [baseline + ". " + verdict + " " + measured_on(result["created"], result["environment"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="phantom")
    parser.add_argument("--pooled", type=int, nargs="+", default=[4, 3, 2], help="pooled blocks of each variant")
    parser.add_argument("--checkpoints", default=str(REPO / "checkpoints"))
    parser.add_argument("--root", help="data root (default: ../shared/datasets or $KD_DATA_ROOT)")
    parser.add_argument("--runs", default=str(Path.home() / "kd-runs" / "frontier"),
                        help="run folders (resumable; outside the repository)")
    parser.add_argument("--images", type=int, help="study images (default: the study's)")
    parser.add_argument("--timing-images", type=int, default=12)
    parser.add_argument("--epochs", type=int, help="student epochs (default: the shipped student's)")
    parser.add_argument("--max-per-class", type=int, help="training images per class (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, help="the study's deletion/insertion steps (default: the study's)")
    parser.add_argument("--road-fractions", type=float, nargs="+", help="the study's ROAD shares (default: its)")
    parser.add_argument("--out", help="JSON file for the numbers (Markdown beside it; default "
                        "benchmarks/results/student_frontier.json, student_frontier_<dataset>.json for a real one)")
    args = parser.parse_args(argv)
    args.out = args.out or str(default_out(args.dataset))
    if (args.steps is not None and args.steps < 1) or any(not 0 < f < 1 for f in args.road_fractions or ()):
        parser.error("--steps must be at least 1 and each --road-fractions share in (0, 1)")
    study_settings = {k: v for k, v in (("steps", args.steps), ("road_fractions", tuple(args.road_fractions or ())))
                      if v}
    result = run(args.dataset, args.pooled, Path(args.checkpoints), args.root, Path(args.runs) / args.dataset,
                 args.images, args.timing_images, args.threads, study_settings,
                 **({"student_epochs": args.epochs} if args.epochs else {}),
                 **({"max_per_class": args.max_per_class} if args.max_per_class else {}))
    print(write_results(args.out, result, markdown(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
