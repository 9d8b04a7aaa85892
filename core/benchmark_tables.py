"""The benchmark tables docs/benchmarks.md shows: which scripts' Markdown tables (``benchmarks/results/<name>.md``),
in what order, and the command that writes each (`core.results` splices them into the docs block).
"""

from __future__ import annotations

from pathlib import Path

RESULTS_FOLDER = Path(__file__).resolve().parents[1] / "benchmarks" / "results"

# Each benchmark table (results/<name>.md), in the order they are shown, and the command that writes it.
BENCHMARKS = {
    "explainer_speed": "python benchmarks/explainer_speed.py",
    "train_speed": "python benchmarks/train_speed.py",
    "app_memory": "python benchmarks/app_memory.py",
    "app_memory_cpu_build": "python benchmarks/app_memory.py --quick (with torch's CPU build)",
    "app_memory_gpu_build_preload": "KD_APP_PRELOAD=1 python benchmarks/app_memory.py --quick",
    "first_visit": "python benchmarks/first_visit.py",
    "first_visit_preload": "python benchmarks/first_visit.py --preload",
    "first_visit_cpu_build": "python benchmarks/first_visit.py --preload (with torch's CPU build)",
    "training_slowdown": "python benchmarks/training_slowdown.py",
    "app_load": "python benchmarks/app_load.py",
    "student_frontier": "python benchmarks/student_frontier.py",
    "student_frontier_brain_tumor": "python benchmarks/student_frontier.py --dataset brain_tumor",
    "evidence_dependence_phantom": "python benchmarks/evidence_dependence.py",
    "evidence_agreement": "python benchmarks/evidence_agreement.py",
    "evidence_head": "python benchmarks/evidence_head.py",
    "teacher_transfer_alzheimer": "python benchmarks/teacher_transfer.py --dataset alzheimer",
    "teacher_continuation_eye_disease": "python benchmarks/teacher_continuation.py --dataset eye_disease",
    "per_class_recall": "python benchmarks/per_class_recall.py",
    "kd_losses_alzheimer": "python benchmarks/kd_losses.py --dataset alzheimer",
    "slice_scans_alzheimer": "python benchmarks/slice_scans.py --dataset alzheimer",
    "scan_validation_alzheimer": "python benchmarks/scan_validation.py --dataset alzheimer"}


def render_benchmarks(folder: Path = RESULTS_FOLDER) -> str:
    """Each benchmark's table as its script wrote it, or the command that writes it when it has not run."""
    parts = []
    for name, command in BENCHMARKS.items():
        table = folder / f"{name}.md"
        parts.append(table.read_text(encoding="utf-8").strip() if table.is_file() else
                     f"`{command}` has not written its numbers yet.")
    return "\n\n".join(parts) + "\n"
