"""Which classes do the students miss? Per-class recall of the teacher and of every student arm over its seeds, read
from each dataset's shipped results (no model runs).

    python benchmarks/per_class_recall.py [--datasets brain_tumor eye_disease alzheimer]

For each dataset's official split (`core.reproduce`'s ``results.json``): the teacher's recall of each class, and for
the distilled, label-only and label-smoothing students the mean and standard deviation over their seeds, beside
the class's share of the test split and whether the recipe sampled classes in balance (one setting for the teacher
and every student: `core.recipe.TrainConfig.class_balance`). Writes ``benchmarks/results/per_class_recall.json``
and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.report import write_results  # noqa: E402
from core.checkpoints import now_iso  # noqa: E402
from core.layout import dataset_folder, results_file  # noqa: E402
from core.results_record import ShippedResults  # noqa: E402
from core.roles import STUDENTS, TEACHER  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("brain_tumor", "eye_disease", "alzheimer")


def recalls(results: ShippedResults) -> dict:
    """``{"classes", "share", "class_balance", "teacher": [...], <arm key>: {"mean": [...], "std": [...]}}``."""
    teacher = results.test.report(TEACHER)
    support = np.asarray(teacher["per_class"]["support"], dtype=float)
    out = {"classes": list(teacher["classes"]), "share": (support / support.sum()).round(4).tolist(),
           "class_balance": bool(results.recipe.get("class_balance")),
           "teacher": [round(float(r), 4) for r in teacher["per_class"]["recall"]]}
    for role in STUDENTS:
        per_seed = [results.test.report(role, seed)["per_class"]["recall"] for seed in results.seeds
                    if role.stage(seed) in results.test.models]
        if per_seed:
            values = np.asarray(per_seed, dtype=float)
            out[role.key] = {"mean": values.mean(0).round(4).tolist(), "std": values.std(0).round(4).tolist(),
                             "seeds": len(per_seed)}
    return out


def markdown(found: dict) -> str:
    lines = ["Per-class recall on each official test split (`python benchmarks/per_class_recall.py`, read from the "
             "shipped results): the teacher, and each student arm's mean ± std over its seeds."]
    for dataset, r in found["datasets"].items():
        arms = [key for key in ("student", "label_only", "smoothing") if key in r]
        lines += ["", f"**{dataset}** (class-balanced sampling for the teacher and every student: "
                      f"{'on' if r['class_balance'] else 'off'})", "",
                  "| class | share of test | teacher | " + " | ".join(f"{a} ({r[a]['seeds']} seeds)" for a in arms)
                  + " |", "| --- | --- | --- | " + " | ".join("---" for _ in arms) + " |"]
        for i, name in enumerate(r["classes"]):
            cells = [f"{r[a]['mean'][i]:.3f} ± {r[a]['std'][i]:.3f}" for a in arms]
            lines.append(f"| {name} | {r['share'][i]:.1%} | {r['teacher'][i]:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--checkpoints", default=None, help="checkpoint root (default: $KD_CHECKPOINTS, checkpoints/)")
    args = parser.parse_args(argv)
    found = {}
    for name in args.datasets:
        path = results_file(dataset_folder(name, root=args.checkpoints))
        if path.is_file():
            found[name] = recalls(ShippedResults.read(path))
    if not found:
        sys.exit("no shipped results.json for " + ", ".join(args.datasets))
    out = {"datasets": found, "created": now_iso()}
    print(write_results(RESULTS / "per_class_recall.json", out, markdown(out)))


if __name__ == "__main__":
    main()
