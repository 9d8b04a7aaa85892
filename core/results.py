"""Render the README's results section from the shipped ``checkpoints/*/results.json`` files, and its benchmark
section from the Markdown tables the scripts in ``benchmarks/`` write into ``benchmarks/results/``.

``python -m core.results`` rewrites the parts of README.md between the ``results:start``/``results:end`` and the
``benchmarks:start``/``benchmarks:end`` markers; ``--check`` fails if the README differs from what the files say
(run by the tests).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.bench import factor_lines, speed_factors
from core.metadata import file_sha256
from core.metrics import never_predicted
from core.study_report import faithfulness_answer_lines, faithfulness_lines, method_name

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
BENCH_START, BENCH_END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
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
    "train_worker": "python benchmarks/train_worker.py",
    "student_frontier": "python benchmarks/student_frontier.py",
    "student_frontier_brain_tumor": "python benchmarks/student_frontier.py --dataset brain_tumor",
}
ORDER = ("phantom", "brain_tumor", "eye_disease", "alzheimer")
# Test accuracies reported in the paper, as far as its tables can be read.
PAPER = {"brain_tumor": "teacher 0.9676, student 0.9748", "eye_disease": "student 0.9351",
         "alzheimer": "teacher 0.9938, student 0.9946 (augmented 33,984-image set, random split)"}
# Teacher test-accuracy targets on the official split: a teacher below them is under-trained for KD.
TEACHER_TARGET = {"brain_tumor": 0.975, "eye_disease": 0.90, "alzheimer": 0.78}
# Where classes are skewed, accuracy alone is met by a teacher that ignores the small classes.
TEACHER_BALANCED_TARGET = {"alzheimer": 0.60}
# The teacher at least as accurate as the mean distilled student, and that student at most this far below it.
MAX_STUDENT_GAP_POINTS = 2.0


def _ci(report: dict, key: str) -> str:
    lo, hi = report[f"{key}_ci"]
    return f"{report[key]:.4f} [{lo:.3f}, {hi:.3f}]"


def _spread(summary: dict, key: str) -> str:
    s = summary[key]
    return f"{s['mean']:.4f} ± {s['std']:.4f}"


def dataset_section(results: dict, meta_dir: Path) -> list[str]:
    """Markdown lines for one dataset's results file."""
    test, summary = results["test"], results["summary"]
    models = test["models"]
    budget = results["budget"]
    lines = [f"### {results['dataset']} ({results['protocol']} split)", "",
             f"Reproduce: `{reproduce_command(results)}`. Input {budget['input_size']} px; teacher {budget['teacher_epochs']} epochs, students "
             f"{budget['student_epochs']} epochs; KD setting chosen on validation: alpha = "
             f"{results['chosen']['alpha']}, T = {results['chosen']['temperature']:g}; seeds "
             f"{', '.join(map(str, results['seeds']))}; {models['teacher']['n']} test images.", "",
             "| model | accuracy [95% CI] | balanced accuracy | macro F1 [95% CI] | ECE | agreement with teacher "
             "| ms / image |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    t = models["teacher"]
    lines.append(f"| teacher (DenseNet121) | {_ci(t, 'accuracy')} | {t['balanced_accuracy']:.4f} | {_ci(t, 'macro_f1')} "
                 f"| {t['ece']:.3f} | – | {t['latency']['median_ms']:.1f} |")
    arms = [a for a in ARMS if a[2] in summary]
    for label, prefix, key in arms:
        m0 = models[f"{prefix}_s0"]
        s = summary[key]
        lines.append(f"| {label}, seed 0 | {_ci(m0, 'accuracy')} | {m0['balanced_accuracy']:.4f} | {_ci(m0, 'macro_f1')} "
                     f"| {m0['ece']:.3f} | {test['pairs'][f'{prefix}_s0']['agreement']:.4f} | "
                     f"{m0['latency']['median_ms']:.1f} |")
        balanced = _spread(s, "balanced_accuracy") if "balanced_accuracy" in s else "–"
        lines.append(f"| {label}, mean ± std over seeds | {_spread(s, 'accuracy')} | {balanced} | "
                     f"{_spread(s, 'macro_f1')} | {_spread(s, 'ece')} | {_spread(s, 'agreement')} | |")
    lines += recall_lines(models, [("teacher", "teacher")] + [(label, f"{prefix}_s0") for label, prefix, _ in arms])
    lines += paired_lines(results)
    clean = results.get("test_without_near_duplicates")
    if clean:
        cm = clean["models"]
        lines += ["", f"Without the test images that have a near-duplicate in train ({cm['teacher']['n']} left): "
                  f"teacher {cm['teacher']['accuracy']:.4f}, distilled student (seed 0) "
                  f"{cm['student_s0']['accuracy']:.4f}, label-only student (seed 0) {cm['label_only_s0']['accuracy']:.4f}."]
    lines += size_lines(meta_dir) + curve_lines(meta_dir / "teacher.json")
    lines += timing_lines(meta_dir / "timing" / "bench.json")
    lines += faithfulness_lines(results.get("faithfulness"), meta_dir)
    lines += ood_lines(meta_dir)
    if results["dataset"] in PAPER:
        lines += ["", f"Paper: {PAPER[results['dataset']]}."]
    v = results["versions"]
    took = f"{results['seconds'] / 60:.0f} min for the whole protocol"
    if results.get("training_seconds", 0) > results["seconds"]:  # stages kept from earlier runs trained there
        took = (f"{results['training_seconds'] / 60:.0f} min of training in all stages, those kept from earlier "
                f"runs included; {results['seconds'] / 60:.0f} min for this run")
    lines += ["", f"Measured {results['created'][:10]} on {v['machine']}, torch {v['torch']}; {took}.", ""]
    return lines


ARMS = (("distilled student", "student", "student"), ("label-only student", "label_only", "label_only"),
        ("label-smoothing student", "smoothing", "smoothing"))


def recall_lines(models: dict, named: list[tuple[str, str]]) -> list[str]:
    """Per-class recall of each listed model, and the classes a model never predicts (flagged)."""
    lines = ["", "Per-class recall:"]
    for label, key in named:
        report = models[key]
        recall = ", ".join(f"{c} {r:.2f}" for c, r in zip(report["classes"], report["per_class"]["recall"]))
        never = never_predicted(report["confusion_matrix"], report["classes"])
        lines.append(f"- {label}: {recall}" + (f"; **never predicts {', '.join(never)}**" if never else ""))
    return lines


def paired_lines(results: dict) -> list[str]:
    """Distilled minus each control over seeds, paired by seed, with its interval and tests."""
    lines = []
    for name, label in (("student_minus_label_only", "label-only"), ("student_minus_smoothing", "label-smoothing")):
        d = (results.get("paired") or {}).get(name, {}).get("accuracy")
        if d:
            lines.append(f"Distilled minus {label} student, test accuracy paired by seed: {100 * d['mean']:+.2f} "
                         f"points, 95% CI [{100 * d['ci'][0]:+.2f}, {100 * d['ci'][1]:+.2f}] ({d['test']}: "
                         f"p = {d['p_value']:.3g}; exact sign-flip test over {d['n']} seeds: p = {d['p_sign_flip']:.3g}).")
    return [""] + lines if lines else []


def reproduce_command(results: dict) -> str:
    """The `core.reproduce` command line that wrote ``results`` (budget by name, teacher epochs if overridden)."""
    from core.reproduce import BUDGETS

    budget, name = results["budget"], results["dataset"]
    named = next((k for k, b in BUDGETS.items() if b.input_size == budget["input_size"]
                  and b.student_epochs == budget["student_epochs"] and b.grid_epochs == budget["grid_epochs"]), None)
    parts = ["python -m core.reproduce", name]
    if named and named != ("phantom" if name == "phantom" else "cpu"):
        parts.append(f"--budget {named}")
    if results["protocol"] != "official":
        parts.append(f"--protocol {results['protocol']}")
    if named and BUDGETS[named].teacher_epochs != budget["teacher_epochs"]:
        parts.append(f"--teacher-epochs {budget['teacher_epochs']}")
    return " ".join(parts)


def _accuracy(results: dict, key: str) -> float:
    """Test accuracy of the teacher, or the mean over seeds of the ``student`` / ``label_only`` runs."""
    if key == "teacher":
        return results["test"]["models"]["teacher"]["accuracy"]
    return results["summary"][key]["accuracy"]["mean"]


def _budget_words(budget: dict) -> str:
    return f"{budget.get('input_size')} px, {budget.get('teacher_epochs')} teacher epochs"


def split_mismatch(official: dict, pooled: dict) -> str | None:
    """Why the two splits' results cannot be compared as they are (another budget), or None when they can."""
    a, b = official.get("budget") or {}, pooled.get("budget") or {}
    if a == b:
        return None
    return f"budgets differ (official {_budget_words(a)}; pooled {_budget_words(b)})"


def split_gain(official: dict, pooled: dict) -> list[dict]:
    """Teacher and mean-over-seeds student accuracies on the official and the pooled split of one dataset,
    with the points the pooled (leaky) split adds and, for the students, the spread over seeds on each split
    (``std_points``: official, pooled; None for the teacher, one run); one row per model key (teacher, student,
    label_only). Raises ValueError where the two ran with different budgets: the gain would mix the split with the
    recipe."""
    mismatch = split_mismatch(official, pooled)
    if mismatch:
        raise ValueError(f"the official and pooled splits cannot be compared: {mismatch}")

    def std_points(key: str) -> tuple[float, float] | None:
        try:  # the spread is told where both files have it; a file without it keeps its accuracies
            return None if key == "teacher" else tuple(100 * float(r["summary"][key]["accuracy"]["std"])
                                                       for r in (official, pooled))
        except (KeyError, TypeError, ValueError):
            return None

    return [{"model": key, "official": _accuracy(official, key), "pooled": _accuracy(pooled, key),
             "gain_points": 100 * (_accuracy(pooled, key) - _accuracy(official, key)), "std_points": std_points(key)}
            for key in ("teacher", "student", "label_only")]


def leakage_lines(found: list[dict]) -> list[str]:
    """For datasets shipped on both splits: how many points the pooled (leaky) split adds, same recipe."""
    lines = []
    by_key = {(r["dataset"], r["protocol"]): r for r in found}
    for (name, protocol), pooled in by_key.items():
        official = by_key.get((name, "official"))
        if protocol != "pooled" or official is None:
            continue
        mismatch = split_mismatch(official, pooled)
        if mismatch:
            lines.append(f"On {name}, the pooled random split is not compared with the official split here: their "
                         f"{mismatch}; `python -m core.reproduce {name} --protocol pooled` reruns it with the "
                         "official split's budget.")
            continue
        rows = {row["model"]: row for row in split_gain(official, pooled)}
        gain = {key: row["gain_points"] for key, row in rows.items()}

        def spread(key: str) -> str:
            sd = rows[key]["std_points"]
            return "" if sd is None else " (seed std {:.1f} and {:.1f} points)".format(*sd)

        same_kd = official.get("chosen") == pooled.get("chosen")
        kd = "the same KD setting" if same_kd else (
            f"KD settings chosen separately: alpha {official['chosen']['alpha']} / T {official['chosen']['temperature']:g}"
            f" vs {pooled['chosen']['alpha']} / {pooled['chosen']['temperature']:g}")
        lines.append(f"On {name}, the paper's pooled random split (train and test pooled and re-split at random, "
                     f"same recipe and budget, {kd}) adds {gain['teacher']:+.1f} points of test accuracy to the "
                     f"teacher, {gain['student']:+.1f} to the distilled student{spread('student')} and "
                     f"{gain['label_only']:+.1f} to the label-only student{spread('label_only')} over the "
                     "official split.")
    return lines + [""] if lines else []


def size_lines(meta_dir: Path) -> list[str]:
    """Parameters and FLOPs of the shipped teacher and student (counted from the files themselves)."""
    from core.checkpoints import load
    from core.models import count_flops, count_parameters

    cells = []
    for role in ("teacher", "student"):
        path = meta_dir / f"{role}.pt"
        if path.is_file():
            model, meta = load(path)
            cells.append(f"{role} {count_parameters(model) / 1e6:.2f} M parameters, "
                         f"{count_flops(model, meta.input_size) / 1e9:.3f} GFLOPs per image")
    return ["", "Size: " + "; ".join(cells) + "."] if cells else []


def curve_lines(teacher_json: Path) -> list[str]:
    """What the teacher's training curve shows: per-epoch validation accuracy and the last training accuracy."""
    if not teacher_json.is_file():
        return []
    history = json.loads(teacher_json.read_text())["train"].get("history") or []
    if not history:
        return []
    vals = ", ".join(f"{r['val_acc']:.2f}" for r in history)
    last = history[-1]
    return ["", f"Teacher curve: validation accuracy by epoch {vals}; training accuracy at the last epoch "
            f"{last['train_acc']:.3f} (training loss {last['train_loss']:.3f})."]


def summary_lines(found: list[dict]) -> list[str]:
    """One row per dataset and protocol: teacher, students over seeds, target, paper."""
    lines = ["| dataset | split | input, teacher epochs | teacher | distilled student (mean ± std over seeds) | "
             "label-only student (mean ± std) | seeds | teacher target | teacher − distilled, points (target 0 to "
             f"{MAX_STUDENT_GAP_POINTS:g}) | paper |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for res in found:
        name, teacher = res["dataset"], res["test"]["models"]["teacher"]["accuracy"]
        target = TEACHER_TARGET.get(name) if res["protocol"] == "official" else None
        balanced = TEACHER_BALANCED_TARGET.get(name)
        verdict = "–"
        if target:
            def held(ok: bool) -> str:
                return "met" if ok else "not met"

            verdict = f"{target:.3f} ({held(teacher >= target)})"
            if balanced:
                reached = res["test"]["models"]["teacher"].get("balanced_accuracy", 0.0)
                verdict += f", balanced {balanced:.3f} ({held(reached >= balanced)})"
        # rounded: a tie reads 1e-16 apart after the mean over seeds (and + 0.0 turns -0.0 into 0.0)
        gap = round(100 * (teacher - res["summary"]["student"]["accuracy"]["mean"]), 9) + 0.0
        gap_cell = f"{gap:+.1f}" + (f" ({'met' if 0 <= gap <= MAX_STUDENT_GAP_POINTS else 'not met'})"
                                    if target else "")  # targets of the real datasets' official split
        budget = f"{res['budget']['input_size']} px, {res['budget']['teacher_epochs']}"
        split = res["protocol"] + (" (earlier run)" if res.get("earlier") else "")
        lines.append(f"| {name} | {split} | {budget} | {teacher:.4f} | {_spread(res['summary']['student'], 'accuracy')} "
                     f"| {_spread(res['summary']['label_only'], 'accuracy')} | {len(res['seeds'])} | {verdict} "
                     f"| {gap_cell} | {PAPER.get(name, '–')} |")
    return lines + [""]


def timing_lines(path: Path) -> list[str]:
    """Explainer times on teacher and student (median and IQR over repeats, mean over images)."""
    if not path.is_file():
        return []
    bench = json.loads(path.read_text())
    rows = {(r["model"], r["method"]): r for r in bench["rows"]}
    env, cfg = bench["environment"], bench["config"]
    lines = ["", f"Explainer time per image ({cfg['images']} test images, {env['threads']} thread(s), load average "
             f"{env['load_average']:.1f}, `core.bench`):", "",
             "| method | passes F/B | teacher ms (IQR) | student ms (IQR) | teacher / student (same method) |",
             "| --- | --- | --- | --- | --- |"]
    methods = [m for (model, m) in rows if model == "teacher"]
    for method in methods:
        t, st = rows[("teacher", method)], rows.get(("student", method))
        ratio = f"{t['median_s'] / st['median_s']:.1f}x" if st else "–"
        stu = f"{1e3 * st['median_s']:.1f} ({1e3 * st['iqr_s']:.1f})" if st else "–"
        lines.append(f"| {method_name(method)} | {t['passes_forward']}/{t['passes_backward']} | {1e3 * t['median_s']:.1f} "
                     f"({1e3 * t['iqr_s']:.1f}) | {stu} | {ratio} |")
    factors = factor_lines(speed_factors(bench["rows"]))
    if factors:
        lines += ["", "The speed-up in two factors (distillation, then the method on the student): "
                  + "; ".join(factors) + "."]
    return lines


def ood_lines(meta_dir: Path) -> list[str]:
    """The upload check `core.ood` fitted for the shipped teacher: the score chosen, what it flags, its AUROC."""
    path = meta_dir / "ood.json"
    if not path.is_file():
        return []
    ood = json.loads(path.read_text())
    stale = ood.get("model_sha256") != file_sha256(meta_dir / "teacher.pt")
    chosen = ", ".join(f"{k} {v:.3f}" for k, v in sorted((ood.get("selection_auroc") or {}).items()))
    tested = ", ".join(f"{k} {v:.3f}" for k, v in sorted((ood.get("test_auroc") or {}).items()))
    return ["", f"Upload check (`python -m core.ood {meta_dir.name}`"
            + ("; **stale: fitted for an earlier teacher**" if stale else "") + f"): the {ood['score']} score"
            + (f", chosen on validation against other datasets' training images (AUROC {chosen})" if chosen else "")
            + f"; the threshold that {ood['quantile']:.0%} of the {ood['val_images']} validation images stay under "
            f"flags {ood['test_flagged']:.1%} of the test images"
            + (f"; AUROC against other datasets' test images: {tested}" if tested else "")
            + accuracy_by_flag_text(ood.get("test_accuracy")) + "."]


def accuracy_by_flag_text(split: dict | None) -> str:
    """The teacher's test accuracy on flagged and on unflagged images, when the check recorded it."""
    try:
        flagged, rest = split["flagged"], split["not_flagged"]
    except (TypeError, KeyError):
        return ""

    def acc(side: dict) -> str:
        return "n/a" if side.get("accuracy") is None else f"{side['accuracy']:.3f}"
    return (f"; the teacher's test accuracy is {acc(flagged)} on the {flagged['images']} flagged images and "
            f"{acc(rest)} on the {rest['images']} others")


def render(ckpt_root: Path = REPO / "checkpoints") -> str:
    """The results section for every dataset that has a results.json (official split, then pooled)."""
    lines = ["Every number below is written by `python -m core.reproduce DATASET` into "
             "`checkpoints/<dataset>/results.json` and rendered here by `python -m core.results`. Test accuracy:", ""]
    found, earlier, sections = [], [], []
    for name in ORDER:
        for path in (ckpt_root / name / "results.json", ckpt_root / name / "pooled" / "results.json"):
            if path.is_file():
                found.append(json.loads(path.read_text()))
                sections += dataset_section(found[-1], path.parent)
        # Superseded runs kept for the record (e.g. a shorter teacher budget): summary rows only.
        earlier += [{**json.loads(p.read_text()), "earlier": True}
                    for p in sorted((ckpt_root / name / "earlier").glob("*.json"))]
    if not found:
        return lines[0] + "\n\nNo results yet: run `python -m core.reproduce phantom`.\n"
    lines += summary_lines(found + earlier) + leakage_lines(found) + faithfulness_answer_lines(found) + sections
    return "\n".join(lines).rstrip() + "\n"


def render_benchmarks(folder: Path = REPO / "benchmarks" / "results") -> str:
    """Each benchmark's table as its script wrote it, or the command that writes it when it has not run."""
    parts = []
    for name, command in BENCHMARKS.items():
        table = folder / f"{name}.md"
        parts.append(table.read_text(encoding="utf-8").strip() if table.is_file() else
                     f"`{command}` has not written its numbers yet.")
    return "\n\n".join(parts) + "\n"


def splice(readme: str, section: str, start: str = START, end: str = END) -> str:
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{section}{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.results", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    parser.add_argument("--readme", default=str(REPO / "README.md"), help="README to update")
    args = parser.parse_args(argv)
    readme = Path(args.readme)
    text = readme.read_text(encoding="utf-8")
    new = splice(splice(text, render()), render_benchmarks(), BENCH_START, BENCH_END)
    if args.check:
        if new != text:
            print("README results or benchmark section differs from checkpoints/*/results.json or "
                  "benchmarks/results/*.md; run python -m core.results")
            return 1
        return 0
    readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
