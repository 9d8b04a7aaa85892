"""Teachers judged on slices beyond those they train on: validation carved from the outer slices of every scan.

    python benchmarks/scan_validation.py [--dataset alzheimer] [--arms scratch transfer] [--threads 2]
                                         [--runs runs/scan_validation]

alzheimer's test split holds the outer slices of the scans its training images come from, while a validation share
carved at random holds near copies of training slices (`benchmarks/slice_scans.py`): that validation cannot tell
which teacher does better on the test images. Here every arm is validated on the outer slices of each training scan
(``val_carve="scan_ends"``, the same share as the random carve), so its kept epoch and its validation loss judge
what the test split asks. Arms, each the shipped teacher's recipe (the ``cpu`` budget, seed 0):
``scratch`` trained from scratch; ``transfer`` started from the shipped ``--source`` teacher's weights with a new
classifier (as `benchmarks/teacher_transfer.py`, whose verdict was reached on the random carve). Validation
chooses; the test split is reported only, with the shipped teacher's for reference. Resumable: each arm's state
lives in ``--runs/<arm>``; a run cut short continues where it stopped.

Writes ``benchmarks/results/scan_validation_<dataset>.json`` and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.teacher_continuation import scores_on_test  # noqa: E402
from benchmarks.teacher_transfer import best, curve, curves_and_choice, start_weights  # noqa: E402
from core import checkpoints  # noqa: E402
from benchmarks.report import write_results  # noqa: E402
from core.budgets import BUDGETS  # noqa: E402
from core.evaluate import evaluate_checkpoints  # noqa: E402
from core.layout import checkpoint_file, dataset_folder  # noqa: E402
from core.recipe import Stage  # noqa: E402
from core.reproduce import recipe  # noqa: E402
from core.roles import TEACHER  # noqa: E402
from core.stopwatch import environment  # noqa: E402
from core.train import run_stages  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ARMS = ("scratch", "transfer")
SHIPPED = "shipped (random carve)"


def arm_name(arm: str, source: str) -> str:
    return "from scratch" if arm == "scratch" else f"from the {source} teacher"


def markdown(result: dict) -> str:
    lines = [f"Teachers of {result['dataset']} validated on the outer slices of every training scan "
             f"(`python benchmarks/scan_validation.py --dataset {result['dataset']}`; `val_carve=\"scan_ends\"`, "
             f"{result['val_images']} validation images): {result['recipe']}. Validation chooses; test is reported "
             "only. The shipped teacher was validated on a random carve (near copies of its training slices), so "
             "its validation numbers are not comparable and are left out.", "",
             "| teacher | kept epoch | validation accuracy there | validation loss there | test accuracy (95% CI) "
             "| test balanced accuracy |", "| --- | --- | --- | --- | --- | --- |"]
    for name, arm in result["arms"].items():
        t = arm["test"]
        ci = t.get("accuracy_ci") or [float("nan")] * 2
        b = arm.get("best")
        kept = f"{b['epoch']} | {b['val_acc']:.4f} | {b['val_loss']:.4f}" if b else "– | – | –"
        lines.append(f"| {name} | {kept} | {t['accuracy']:.4f} ({ci[0]:.3f}-{ci[1]:.3f}) | "
                     f"{t['balanced_accuracy']:.4f} |")
    trained = {"arms": {k: v for k, v in result["arms"].items() if "curve" in v}, "preferred": result["preferred"],
               "created": result["created"], "environment": result["environment"]}
    return "\n".join(lines + curves_and_choice(trained)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="alzheimer")
    parser.add_argument("--source", default="brain_tumor", help="the dataset whose shipped teacher starts 'transfer'")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--epochs", type=int, default=None, help="teacher epochs (default: the cpu budget's)")
    parser.add_argument("--input-size", type=int, default=None, help="default: the cpu budget's")
    parser.add_argument("--max-per-class", type=int, default=None, help="a quick look (default: all images)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoints", default=None, help="checkpoint root (default: the shipped one)")
    parser.add_argument("--root", default=None, help="data root (default: the project's)")
    parser.add_argument("--runs", default="runs/scan_validation", help="run state (resumable)")
    parser.add_argument("--out", default=None, help="results file (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    if (args.epochs is not None and args.epochs < 1) or args.threads < 1 or \
            (args.input_size is not None and args.input_size < 32) or \
            (args.max_per_class is not None and args.max_per_class < 2):
        parser.error("--epochs and --threads at least 1, --input-size at least 32 px, --max-per-class at least 2")
    runs = Path(args.runs)
    budget = BUDGETS["cpu"]
    budget = replace(budget, teacher_epochs=args.epochs or budget.teacher_epochs,
                     input_size=args.input_size or budget.input_size, max_per_class=args.max_per_class)
    shipped_file = checkpoint_file(dataset_folder(args.dataset, root=args.checkpoints), TEACHER)
    if "transfer" in args.arms:  # refused before any arm trains
        source = checkpoint_file(dataset_folder(args.source, root=args.checkpoints), TEACHER)
        if not source.is_file():
            parser.error(f"--source {args.source}: no shipped teacher at {source}")
    paths, arms, val_images = {}, {}, 0
    for arm in args.arms:
        folder = runs / arm
        cfg = replace(recipe(args.dataset, budget, folder, root=args.root, threads=args.threads),
                      val_carve="scan_ends")
        start = str(start_weights(args.source, runs, root=args.checkpoints)[0]) if arm == "transfer" else None
        result = run_stages(cfg, folder, [Stage.of(TEACHER)], pretrained_weights=start)[TEACHER.stage()]
        name = arm_name(arm, args.source)
        paths[name], arms[name] = result.path, {"curve": curve(result.history), "best": best(result.history)}
        val_images = int(checkpoints.load_meta(result.path).train.get("val_images", 0))
    if shipped_file.is_file():
        paths, arms = {SHIPPED: shipped_file, **paths}, {SHIPPED: {}, **arms}
    test = evaluate_checkpoints(paths, "test", root=args.root, teacher_key=next(iter(paths)),
                                max_per_class=args.max_per_class)["models"]
    for name in arms:
        arms[name]["test"] = scores_on_test(test[name])
    trained = [name for name, arm in arms.items() if "best" in arm]
    out = {"dataset": args.dataset, "source": args.source, "val_images": val_images,
           "recipe": f"the cpu budget, {budget.teacher_epochs} epochs, {budget.input_size} px, seed 0",
           "max_per_class": args.max_per_class, "arms": arms,
           "preferred": min(trained, key=lambda name: arms[name]["best"]["val_loss"]),
           "created": checkpoints.now_iso(), "environment": {**environment(), "threads": args.threads}}
    target = Path(args.out) if args.out else RESULTS / f"scan_validation_{args.dataset}.json"
    print(write_results(target, out, markdown(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
