"""Does a teacher gain from more epochs at a larger input size? The shipped teacher, trained on, against itself.

    python benchmarks/teacher_continuation.py [--dataset eye_disease] [--sizes 160 128] [--epochs 6] [--lr 5e-4]
                                              [--threads 2] [--runs runs/teacher_continuation]

Each arm starts from every weight of the shipped teacher (its classifier included) and trains ``--epochs`` more
epochs at one input size with the shipped recipe's batch, label smoothing, augmentation and data seed, under a
one-cycle schedule peaking at ``--lr`` (a quarter of the recipe's: the weights are already trained) and without
progressive resizing. One arm per ``--sizes`` entry: the larger size asks whether small lesions need more pixels,
the shipped size is its control (the same extra epochs without more pixels). The arm that validation prefers (lowest
validation loss at its kept epoch, the shipped teacher included) is the one to keep; test accuracy and balanced
accuracy are reported beside it and never choose. Resumable: the run state lives in ``--runs``; a run cut short
continues where it stopped when started again, a finished arm is read back.

Writes ``benchmarks/results/teacher_continuation_<dataset>.json`` and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.teacher_transfer import best, curve, curves_and_choice, start_weights  # noqa: E402
from core import checkpoints  # noqa: E402
from benchmarks.report import write_results  # noqa: E402
from core.budgets import STRONG, Budget  # noqa: E402
from core.evaluate import evaluate_checkpoints  # noqa: E402
from core.layout import checkpoint_file, dataset_folder  # noqa: E402
from core.recipe import Stage  # noqa: E402
from core.reproduce import recipe  # noqa: E402
from core.roles import TEACHER  # noqa: E402
from core.stopwatch import environment  # noqa: E402
from core.train import run_stages  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHIPPED = "shipped"


def arm_budget(meta: checkpoints.CheckpointMeta, size: int, epochs: int, lr: float,
               max_per_class: int | None = None) -> Budget:
    train = meta.train
    return Budget(input_size=size, teacher_epochs=epochs, grid_epochs=1, student_epochs=1,
                  batch_size=int(train["batch_size"]), lr=lr, max_per_class=max_per_class or train.get("max_per_class"),
                  **{**STRONG, "progressive": False,
                     "teacher_label_smoothing": float(train.get("teacher_label_smoothing", 0.0))})


def scores_on_test(report: dict) -> dict:
    return {"accuracy": report["accuracy"], "balanced_accuracy": report["balanced_accuracy"],
            "accuracy_ci": report.get("accuracy_ci")}


def markdown(result: dict) -> str:
    arms = result["arms"]
    lines = [f"The shipped {result['dataset']} teacher trained on (`python benchmarks/teacher_continuation.py "
             f"--dataset {result['dataset']}`): every weight as the start, {result['epochs']} more epochs at each "
             f"input size, one-cycle to lr {result['lr']:g}, seed 0. Validation chooses; test is reported only.", "",
             "| teacher | kept epoch | validation accuracy there | validation loss there | test accuracy (95% CI) "
             "| test balanced accuracy |", "| --- | --- | --- | --- | --- | --- |"]
    for name, arm in arms.items():
        b, t = arm["best"], arm["test"]
        ci = t.get("accuracy_ci") or [float("nan")] * 2
        lines.append(f"| {name} | {b['epoch']} | {b['val_acc']:.4f} | {b['val_loss']:.4f} | {t['accuracy']:.4f} "
                     f"({ci[0]:.3f}-{ci[1]:.3f}) | {t['balanced_accuracy']:.4f} |")
    return "\n".join(lines + curves_and_choice(result, result["epochs"], " (the shipped teacher's last epochs)")) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="eye_disease")
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 128])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoints", default=None, help="checkpoint root (default: the shipped one)")
    parser.add_argument("--root", default=None, help="data root (default: the project's)")
    parser.add_argument("--max-per-class", type=int, default=None,
                        help="training, validation and test images per class (a quick look; default: all)")
    parser.add_argument("--runs", default="runs/teacher_continuation", help="run state (resumable)")
    parser.add_argument("--out", default=None, help="results file (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.threads < 1 or not 0 < args.lr < 1 or min(args.sizes) < 32 or \
            (args.max_per_class is not None and args.max_per_class < 2):
        parser.error("--epochs and --threads at least 1, --lr in (0, 1), --sizes at least 32 px, "
                     "--max-per-class at least 2")
    runs = Path(args.runs)
    shipped_file = checkpoint_file(dataset_folder(args.dataset, root=args.checkpoints), TEACHER)
    shipped_meta = checkpoints.load_meta(shipped_file)
    start, shipped_sha = start_weights(args.dataset, runs, classifier=True, root=args.checkpoints)
    paths, arms = {SHIPPED: shipped_file}, {}
    for size in args.sizes:
        name = f"{size} px, {args.epochs} more epochs"
        cfg = replace(recipe(args.dataset, arm_budget(shipped_meta, size, args.epochs, args.lr, args.max_per_class),
                             runs / f"{size}px_{args.epochs}e", root=args.root, threads=args.threads),
                      teacher_arch=shipped_meta.arch)
        result = run_stages(cfg, runs / f"{size}px_{args.epochs}e", [Stage.of(TEACHER)],
                            pretrained_weights=str(start))[TEACHER.stage()]
        paths[name], arms[name] = result.path, {"curve": curve(result.history), "best": best(result.history)}
    arms = {SHIPPED: {"curve": curve(shipped_meta.train["history"]), "best": best(shipped_meta.train["history"])},
            **arms}
    test = evaluate_checkpoints(paths, "test", root=args.root, teacher_key=SHIPPED,
                                max_per_class=args.max_per_class)["models"]
    for name in arms:
        arms[name]["test"] = scores_on_test(test[name])
    preferred = min(arms, key=lambda name: arms[name]["best"]["val_loss"])
    out = {"dataset": args.dataset, "epochs": args.epochs, "lr": args.lr, "sizes": args.sizes,
           "max_per_class": args.max_per_class,
           "shipped_teacher_sha256": shipped_sha, "arms": arms, "preferred": preferred,
           "created": checkpoints.now_iso(), "environment": {**environment(), "threads": args.threads}}
    target = Path(args.out) if args.out else RESULTS / f"teacher_continuation_{args.dataset}.json"
    print(write_results(target, out, markdown(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
