"""What the teacher's-evidence head should be made of: each design's fit on held-out images against its cost.

    python benchmarks/evidence_head.py [--datasets brain_tumor ...] [--designs conv3x3 bottleneck pointwise]
                                       [--seeds 0 1] [--epochs 40] [--threads 2] [--state DIR]

For every dataset, the shipped student's and teacher's training pairs are cached once (`core.teacher_evidence
.shipped_pairs`: the student's pooled activations and the teacher's maps as distributions over its cells, on the
training split and on the validation split carved out of it as in training), then a head of every design
(`core.evidence_model.HEAD_DESIGNS`) is trained on them per seed (`fit_head`, the epoch with the lowest
validation loss kept, as `ship_head` does). Reported: that lowest validation loss (KL from the teacher's map to the
head's, nats; lower is better; a uniform map's beside it), the kept epoch, and the design's cost: the head's time
over the student's forward pass, both timed alternately in one run, on the shipped student at its own size and on
the default student at 224 px (where `benchmarks/explainer_speed.py` holds the teacher's evidence to 1.15 forward
passes). No test image is read.

The design `core.teacher_evidence` ships is chosen from this table: the cheapest at 224 px whose validation loss is
within ``--tolerance`` (a share of the best design's loss, default 5 %) of the best design's on every dataset.

State per dataset under ``--state`` (default ~/kd-runs/evidence_head), so an interrupted run resumes with the next
dataset. Writes ``benchmarks/results/evidence_head.json`` and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.report import measured_on, write_results  # noqa: E402
from core import checkpoints  # noqa: E402
from core.arguments import integer, number  # noqa: E402
from core.cam import cam_head, pooled_activation  # noqa: E402
from core.layout import checkpoint_file, dataset_folder  # noqa: E402
from core.metadata import atomic_write_text  # noqa: E402
from core.models import build_student  # noqa: E402
from core.roles import DISTILLED  # noqa: E402
from core.stopwatch import environment  # noqa: E402
from core.teacher_evidence import HEAD_EPOCHS, fit_head, shipped_pairs  # noqa: E402
from core.evidence_model import HEAD_DESIGNS, EvidenceHead, evidence_loss  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("brain_tumor", "eye_disease", "alzheimer", "phantom")


def head_cost(student: torch.nn.Module, x: torch.Tensor, designs, repeats: int = 200) -> dict[str, float]:
    """Each design's head time over the student's forward on ``x``, the two timed alternately (medians)."""
    act = pooled_activation(student, x)[0]
    classes = cam_head(student).classifier.out_features
    heads = {d: EvidenceHead(act.shape[1], classes, design=d).eval() for d in designs}
    times = {name: [] for name in ["forward", *heads]}
    with torch.inference_mode():
        for k in range(repeats + 10):
            for name in times:
                start = time.perf_counter()
                student(x) if name == "forward" else heads[name](act)
                if k >= 10:  # the first ten warm the caches
                    times[name].append(time.perf_counter() - start)
    forward = float(np.median(times["forward"]))
    return {d: float(np.median(times[d])) / forward for d in designs}


def run_dataset(dataset: str, args) -> dict:
    """One dataset's row set: per design and seed, the lowest validation loss and its epoch; the costs."""
    folder = dataset_folder(dataset, root=args.checkpoints)
    started = time.perf_counter()
    data = shipped_pairs(folder, args.root)
    cached = time.perf_counter() - started
    held_acts, held_targets = data.held_out
    uniform = float(evidence_loss(torch.zeros_like(held_targets), held_targets))
    rows = {}
    for design in args.designs:
        runs = []
        for seed in args.seeds:
            val: list[float] = []
            fit_head(data.pairs, data.held_out, epochs=args.epochs, seed=seed, design=design,
                     on_val=lambda epoch, loss: val.append(loss))
            runs.append({"seed": seed, "val_loss": min(val), "kept_epoch": 1 + int(np.argmin(val))})
            print(f"{dataset} {design} seed {seed}: validation loss {min(val):.4f} at epoch {runs[-1]['kept_epoch']}")
        rows[design] = runs
    student, meta = checkpoints.load(checkpoint_file(folder, DISTILLED))
    cost = head_cost(student, torch.randn(1, 3, meta.input_size, meta.input_size), args.designs)
    return {"dataset": dataset, "train_images": len(data.pairs[0]), "val_images": len(held_acts),
            "grid": list(held_acts.shape[-2:]), "channels": int(held_acts.shape[1]), "uniform_val_loss": uniform,
            "designs": rows, "head_over_forward": cost, "input_size": meta.input_size,
            "cache_seconds": round(cached, 1)}


def choose(per_dataset: list[dict], cost_224: dict[str, float], tolerance: float) -> str | None:
    """The cheapest design at 224 px within ``tolerance`` of the best design's mean validation loss everywhere."""
    def fits(design: str) -> bool:
        for row in per_dataset:
            means = {d: np.mean([r["val_loss"] for r in runs]) for d, runs in row["designs"].items()}
            if means[design] > min(means.values()) * (1 + tolerance):
                return False
        return True
    fitting = [d for d in cost_224 if fits(d)]
    return min(fitting, key=cost_224.get) if fitting else None


def markdown(result: dict) -> str:
    lines = [f"Evidence head designs (`python benchmarks/evidence_head.py`; seeds {result['seeds']}, "
             f"{result['epochs']} epochs, the epoch with the lowest validation loss kept, {result['threads']} "
             "threads). Validation loss: KL from the teacher's map to the head's over the pooled layer's cells, nats, "
             "mean over seeds (min-max); cost: the head's time over the student's forward pass.", "",
             "| dataset | grid | design | validation loss | kept epoch | cost, shipped student | cost, default "
             "student at 224 px |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["datasets"]:
        grid = "x".join(map(str, row["grid"]))
        lines.append(f"| {row['dataset']} | {grid} | uniform map | {row['uniform_val_loss']:.4f} | – | – | – |")
        for design, runs in row["designs"].items():
            losses = [r["val_loss"] for r in runs]
            epochs = "/".join(str(r["kept_epoch"]) for r in runs)
            lines.append(f"| {row['dataset']} | {grid} | {design} | {np.mean(losses):.4f} ({min(losses):.4f}-"
                         f"{max(losses):.4f}) | {epochs} | {row['head_over_forward'][design]:.3f} | "
                         f"{result['head_over_forward_224'][design]:.3f} |")
    chosen = result["chosen"]
    lines += ["", f"Chosen (the cheapest at 224 px within {100 * result['tolerance']:.0f} % of the best design's "
              f"validation loss on every dataset): **{chosen or 'none'}**.", "",
              measured_on(result["created"], result["environment"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--designs", nargs="+", choices=HEAD_DESIGNS, default=list(HEAD_DESIGNS))
    parser.add_argument("--seeds", nargs="+", type=integer(0), default=[0, 1])
    parser.add_argument("--epochs", type=integer(1, 1000), default=HEAD_EPOCHS)
    parser.add_argument("--tolerance", type=number(0, 1), default=0.05, help="a share of the best design's loss")
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--root", default=None, help="data root of the real datasets")
    parser.add_argument("--threads", type=integer(1, 256), default=2)
    parser.add_argument("--state", default=str(Path.home() / "kd-runs" / "evidence_head"))
    parser.add_argument("--out", default=str(RESULTS / "evidence_head.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    settings = {"designs": args.designs, "seeds": args.seeds, "epochs": args.epochs}
    per_dataset = []
    for dataset in args.datasets:
        done = state / f"{dataset}.json"
        row = json.loads(done.read_text()) if done.is_file() else None
        if row is None or row.get("settings") != settings:
            row = {**run_dataset(dataset, args), "settings": settings}
            atomic_write_text(done, json.dumps(row, indent=1))
        per_dataset.append(row)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        default = build_student(4).eval()
    cost_224 = head_cost(default, torch.randn(1, 3, 224, 224), args.designs)
    result = {"seeds": args.seeds, "epochs": args.epochs, "threads": args.threads, "tolerance": args.tolerance,
              "datasets": per_dataset, "head_over_forward_224": cost_224,
              "chosen": choose(per_dataset, cost_224, args.tolerance),
              "created": checkpoints.now_iso(), "environment": environment()}
    print(write_results(args.out, result, markdown(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
