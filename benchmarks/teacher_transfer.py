"""Does a teacher gain from starting at another dataset's teacher? In-domain transfer against the shipped teacher.

    python benchmarks/teacher_transfer.py [--dataset alzheimer] [--source brain_tumor] [--threads 2]
                                          [--runs runs/teacher_transfer]

The teacher of ``--dataset`` is trained with the recipe of its shipped teacher (`core.reproduce.recipe`, the ``cpu``
budget, seed 0), started from the shipped ``--source`` teacher's weights with a new classifier (the weights of a
brain-MRI teacher for an Alzheimer-MRI one), and compared on the validation split, epoch by epoch, with the shipped
teacher, which the same recipe trained from scratch. The start that validation prefers is the one to keep (lowest
best validation loss; the test split is never looked at). Resumable: the run's state lives in ``--runs``; a run
cut short continues where it stopped when started again.

Writes ``benchmarks/results/teacher_transfer_<dataset>.json`` and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.report import measured_on, write_results  # noqa: E402
from core import checkpoints  # noqa: E402
from core.budgets import BUDGETS  # noqa: E402
from core.layout import checkpoint_file, dataset_folder  # noqa: E402
from core.recipe import Stage  # noqa: E402
from core.reproduce import recipe  # noqa: E402
from core.roles import TEACHER  # noqa: E402
from core.stopwatch import environment  # noqa: E402
from core.train import run_stages  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# the recipe's fields that must match for the shipped teacher's curve to be the from-scratch arm of this comparison
SAME = ("input_size", "batch_size", "lr", "schedule", "teacher_epochs", "teacher_label_smoothing", "progressive",
        "class_balance", "data_seed", "val_fraction", "protocol", "max_per_class")


def start_weights(source: str, runs: Path, classifier: bool = False, root: str | None = None) -> tuple[Path, str]:
    """The shipped ``source`` teacher's weights in float32, without its classifier unless ``classifier`` (a start
    for another dataset's teacher, or the same teacher trained on): the file, and the shipped file's sha256."""
    shipped = checkpoint_file(dataset_folder(source, root=root), TEACHER)
    path = runs / f"{source}_teacher_{'fp32' if classifier else 'features'}.pt"
    if not path.is_file():
        state = torch.load(shipped, map_location="cpu", weights_only=True)
        runs.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.float() if v.is_floating_point() else v for k, v in state.items()
                    if classifier or not k.startswith("classifier")}, path)
    return path, checkpoints.file_sha256(shipped)


def curve(history: list[dict]) -> list[dict]:
    return [{"epoch": r["epoch"], "val_acc": r["val_acc"], "val_loss": r["val_loss"]} for r in history]


def best(history: list[dict]) -> dict:
    """The epoch the recipe keeps: the lowest validation loss."""
    return min(curve(history), key=lambda r: r["val_loss"])


def markdown(result: dict) -> str:
    arms = result["arms"]
    lines = [f"In-domain transfer for the {result['dataset']} teacher (`python benchmarks/teacher_transfer.py "
             f"--dataset {result['dataset']}`): the {result['source']} teacher's weights as the start, against the "
             f"shipped teacher from scratch; same recipe ({result['recipe']}), seed 0, validation split only.", "",
             "| start | best epoch | validation accuracy there | validation loss there | last epoch's accuracy |",
             "| --- | --- | --- | --- | --- |"]
    for name, arm in arms.items():
        b, last = arm["best"], arm["curve"][-1]
        lines.append(f"| {name} | {b['epoch']} | {b['val_acc']:.4f} | {b['val_loss']:.4f} | {last['val_acc']:.4f} |")
    return "\n".join(lines + curves_and_choice(result)) + "\n"


def curves_and_choice(result: dict, last: int | None = None, note: str = "") -> list[str]:
    """The table's tail: each arm's validation accuracy by epoch (its ``last`` epochs), what validation prefers and
    where it was measured."""
    curves = "; ".join(f"{name}: " + ", ".join(f"{r['val_acc']:.2f}" for r in arm["curve"][-(last or 0):])
                       for name, arm in result["arms"].items())
    return ["", f"Validation accuracy by epoch: {curves}{note}.", "",
            f"Validation prefers: **{result['preferred']}**. {measured_on(result['created'], result['environment'])}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="alzheimer")
    parser.add_argument("--source", default="brain_tumor", help="the dataset whose shipped teacher is the start")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", default="runs/teacher_transfer", help="run state (resumable)")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    shipped_meta = checkpoints.load_meta(checkpoint_file(dataset_folder(args.dataset), TEACHER))
    cfg = recipe(args.dataset, BUDGETS["cpu"], runs, threads=args.threads)
    differ = [k for k in SAME if shipped_meta.train.get(k) != getattr(cfg, k)]
    if differ:
        sys.exit(f"the shipped {args.dataset} teacher was trained with another recipe ({', '.join(differ)}): it "
                 "cannot be the from-scratch arm; reproduce it first")
    start, source_sha = start_weights(args.source, runs)
    result = run_stages(cfg, runs, [Stage.of(TEACHER)], pretrained_weights=str(start))[TEACHER.stage()]
    arms = {f"from the {args.source} teacher": {"curve": curve(result.history), "best": best(result.history)},
            "from scratch (shipped)": {"curve": curve(shipped_meta.train["history"]),
                                       "best": best(shipped_meta.train["history"])}}
    preferred = min(arms, key=lambda name: arms[name]["best"]["val_loss"])
    out = {"dataset": args.dataset, "source": args.source, "source_teacher_sha256": source_sha,
           "recipe": f"cpu budget, {cfg.teacher_epochs} epochs, {cfg.input_size} px, seed 0", "arms": arms,
           "preferred": preferred, "created": checkpoints.now_iso(),
           "environment": {**environment(), "threads": args.threads}}
    print(write_results(RESULTS / f"teacher_transfer_{args.dataset}.json", out, markdown(out)))


if __name__ == "__main__":
    main()
