"""How well the teacher's evidence read off the student agrees with a map of the teacher it never learnt from.

    python benchmarks/evidence_agreement.py [--datasets brain_tumor ...] [--images 40] [--threads 2]

The evidence head learnt the teacher's Grad-CAM (`core.teacher_evidence`), so its agreement with that map measures
how well it learnt, not whether it shows the teacher's evidence. Here each dataset's shipped student, with its
shipped head, is compared with the teacher's **occlusion** map (the drop of the teacher's score for the class
under a sliding zero patch: a perturbation the head never saw), on test images (the study's stratified selection,
at most ``--images``), each for the teacher's predicted class. Beside it, as references on the same images: the
teacher's own Grad-CAM and the student's CAM and average feature maps against the same occlusion map, and the head
against the Grad-CAM it learnt from. Median Spearman rank correlation over images (maps compared at the teacher's
input size).

Writes ``benchmarks/results/evidence_agreement.json`` and a Markdown table beside it.
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
from core.explain import explain  # noqa: E402
from core.faithfulness import agreement  # noqa: E402
from core.faithfulness_study import study_images  # noqa: E402
from core.inference import batch_for, predict_tensor  # noqa: E402
from core.layout import checkpoint_file, dataset_folder  # noqa: E402
from core.roles import DISTILLED, TEACHER  # noqa: E402
from core.stopwatch import environment  # noqa: E402
from core.teacher_evidence import HEAD_FILE, attach_shipped_head  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("brain_tumor", "eye_disease", "alzheimer", "phantom")
REFERENCE = "occlusion"  # the teacher's map the head never learnt from
# (the map, the model that makes it); the head's map is the first
COMPARED = (("teacher_evidence", DISTILLED), ("grad_cam", TEACHER), ("cam", DISTILLED), ("feature_maps", DISTILLED))
LEARNT = "grad_cam"  # the teacher's map the head learnt


def measure(dataset: str, images: int, checkpoints_root: str | None = None, root: str | None = None) -> dict | None:
    """One dataset's medians, or None where its student has no shipped head."""
    folder = dataset_folder(dataset, root=checkpoints_root)
    if not (folder / HEAD_FILE).is_file():
        return None
    student_file = checkpoint_file(folder, DISTILLED)
    student, meta = checkpoints.load(student_file)
    refused = attach_shipped_head(student, student_file)
    if refused:
        raise ValueError(f"{dataset}: {refused}")
    teacher, teacher_meta = checkpoints.load(checkpoint_file(folder, TEACHER), meta.classes)
    chosen = study_images(teacher_meta, images, root)
    models = {DISTILLED: (student, batch_for(meta, chosen.images)), TEACHER: (teacher, batch_for(teacher_meta,
                                                                                                chosen.images))}
    targets = predict_tensor(teacher, models[TEACHER][1]).argmax(1).tolist()

    def maps(method: str, role) -> list[np.ndarray]:
        model, x = models[role]
        return [explain(model, x[i:i + 1], method, t, predict=False).heatmap for i, t in enumerate(targets)]

    reference = maps(REFERENCE, TEACHER)
    made = {method: maps(method, role) for method, role in COMPARED}

    def median(against: list[np.ndarray], method: str) -> float:
        return float(np.nanmedian([agreement(a, m)["spearman"] for a, m in zip(against, made[method])]))

    return {"images": len(targets), "teacher_input_size": teacher_meta.input_size,
            "with_teacher_occlusion": {method: median(reference, method) for method, _ in COMPARED},
            "head_with_teacher_grad_cam": median(made[LEARNT], "teacher_evidence")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--checkpoints", default=None, help="checkpoint root (default: the shipped one)")
    parser.add_argument("--root", default=None, help="data root (default: the project's)")
    parser.add_argument("--images", type=int, default=40, help="stratified test images per dataset")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "evidence_agreement.json"))
    args = parser.parse_args(argv)
    if args.images < 1 or args.threads < 1:
        parser.error("--images and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    per_dataset = {}
    for dataset in args.datasets:
        found = measure(dataset, args.images, args.checkpoints, args.root)
        if found is None:
            print(f"{dataset}: no evidence head shipped, left out")
            continue
        per_dataset[dataset] = found
        print(dataset, json.dumps(found))
    result = {"images_per_dataset": args.images, "reference": REFERENCE, "datasets": per_dataset,
              "seconds": round(time.perf_counter() - started, 1), "created": checkpoints.now_iso(),
              "environment": environment()}
    out = Path(args.out)
    write_results(out, result, markdown(result))
    print(f"wrote {out}")
    return 0


def markdown(result: dict) -> str:
    """The table docs/benchmarks.md shows: each map's median Spearman with the teacher's occlusion."""
    lines = ["The teacher's evidence against a map of the teacher it never learnt from, the teacher's occlusion "
             "(the drop of its score under a sliding zero patch, 16 px windows, stride 8 at 128 px), on test images "
             "for the teacher's predicted class: median Spearman over images. The head learnt the teacher's "
             "Grad-CAM; the last column is its agreement with it.",
             "", "| dataset | images | teacher's evidence (student) | teacher's Grad-CAM | student's CAM | "
                 "student's feature maps | teacher's evidence with the Grad-CAM it learnt |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for dataset, found in result["datasets"].items():
        occ = found["with_teacher_occlusion"]
        lines.append(f"| {dataset} | {found['images']} | {occ['teacher_evidence']:.2f} | {occ['grad_cam']:.2f} | "
                     f"{occ['cam']:.2f} | {occ['feature_maps']:.2f} | {found['head_with_teacher_grad_cam']:.2f} |")
    return ("\n".join(lines) + "\n\n" + measured_on(result["created"], result["environment"])
            + f" {result['environment']['threads']} torch thread(s), {result['seconds'] / 60:.1f} min.\n")


if __name__ == "__main__":
    raise SystemExit(main())
