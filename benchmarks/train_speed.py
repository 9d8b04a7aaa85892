"""Training throughput of the project's pipeline against the bare model step, measured in one run.

    python benchmarks/train_speed.py [--dataset phantom] [--arch densenet121] [--size 128] [--threads 2] [--out FILE]

The pipeline: one teacher epoch of `core.train.train_stage` on a capped training split (augmentation,
normalisation, loss, optimiser; the time of its training batches only, validation excluded). The bare
step: the same architecture, batch size and optimiser on random tensors already in memory. Target:
the pipeline within 10% of the bare step (images per second). Run it alone: another busy process on a
2-core machine distorts both numbers. The numbers go to ``benchmarks/results/train_speed.json`` with a Markdown
table beside it (``.md``), which ``python -m core.results`` renders into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.report import measured_on, write_results  # noqa: E402
from core.models import build_teacher  # noqa: E402
from core.stopwatch import environment  # noqa: E402
from core.recipe import Stage, TrainConfig  # noqa: E402
from core.roles import TEACHER  # noqa: E402
from core.train import train_stage  # noqa: E402

TARGET = 0.9  # pipeline images/s over bare-step images/s
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "train_speed.json"


def bare_images_per_second(arch: str, classes: int, size: int, batch: int, steps: int, lr: float) -> float:
    """Forward, backward and AdamW step of ``arch`` on random tensors (one untimed warm-up step)."""
    torch.manual_seed(0)
    model = build_teacher(arch, classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, classes, (batch,))

    def step():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="phantom", help="dataset the pipeline reads")
    parser.add_argument("--arch", default="densenet121", help="teacher architecture")
    parser.add_argument("--size", type=int, default=128, help="input side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-per-class", type=int, default=64, help="training images per class in the epoch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON file for the numbers (Markdown beside it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(dataset=args.dataset, input_size=args.size, batch_size=args.batch_size,
                      max_per_class=args.max_per_class, teacher_arch=args.arch, teacher_epochs=1, resume=False)
    with tempfile.TemporaryDirectory() as out:
        result = train_stage(cfg, Stage.of(TEACHER), out)
    record = result.history[0]
    pipeline = result.meta.train["train_images"] / record["train_seconds"]
    steps = -(-result.meta.train["train_images"] // args.batch_size)
    bare = bare_images_per_second(args.arch, result.meta.num_classes, args.size, args.batch_size, steps, cfg.lr)
    ratio = pipeline / bare
    env = environment()
    print(f"{args.arch} at {args.size} px, batch {args.batch_size}, {args.threads} thread(s), "
          f"load average {env['load_average']:.1f}")
    print(f"pipeline: {pipeline:.1f} images/s over {result.meta.train['train_images']} images")
    print(f"bare step: {bare:.1f} images/s over {steps} steps")
    print(f"pipeline / bare = {ratio:.3f} (target >= {TARGET}): {'PASS' if ratio >= TARGET else 'FAIL'}")
    payload = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "pipeline_images_per_s": pipeline, "bare_images_per_s": bare, "ratio": ratio, "target": TARGET,
               "config": vars(args), "environment": env}
    write_results(args.out, payload, markdown(payload))
    return 0 if ratio >= TARGET else 1


def markdown(result: dict) -> str:
    """The docs/benchmarks.md snippet: both throughputs, their ratio against the target, and the conditions."""
    cfg, env = result["config"], result["environment"]
    return "\n".join([
        f"Training throughput (`python benchmarks/train_speed.py`; {cfg['arch']} on {cfg['dataset']} at "
        f"{cfg['size']} px, batch {cfg['batch_size']}, {cfg['threads']} thread(s)):", "",
        "| measure | images / s |", "| --- | --- |",
        f"| one epoch through the training pipeline | {result['pipeline_images_per_s']:.1f} |",
        f"| the bare model step on random tensors | {result['bare_images_per_s']:.1f} |", "",
        f"Pipeline / bare step = {result['ratio']:.3f} (target >= {result['target']}: "
        f"{'met' if result['ratio'] >= result['target'] else 'not met'}). " + measured_on(result["created"], env), ""])


if __name__ == "__main__":
    raise SystemExit(main())
