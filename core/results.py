"""Render the generated blocks of the README and docs/: the README's headline rows and docs/results.md from the
shipped ``checkpoints/*/results.json`` files, docs/benchmarks.md from the Markdown tables the scripts in
``benchmarks/`` write into ``benchmarks/results/``.

``python -m core.results`` rewrites each block between its ``<name>:start``/``<name>:end`` markers (`BLOCKS` says
which file holds which); ``--check`` fails if a file differs from what the shipped files say (run by the tests).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from core import checkpoints
from core.bench import factor_lines, speed_factors
from core.benchmark_tables import render_benchmarks
from core.budgets import BUDGETS, Budget, default_budget
from core.layout import EARLIER_FOLDER, checkpoint_file, dataset_folder, results_file, timing_file
from core.metadata import file_sha256
from core.metrics import never_predicted
from core.ood import FILE as OOD_FILE
from core.results_record import ShippedResults, Spread
from core.roles import CONTROLS, DISTILLED, LABEL_ONLY, TEACHER, Role
from core.study_report import (faithfulness_answer_lines, faithfulness_lines, method_name,
                               readme_answer_lines)

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
BENCH_START, BENCH_END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
HEADLINE_START, HEADLINE_END = "<!-- headline:start -->", "<!-- headline:end -->"
FAITHFULNESS_START, FAITHFULNESS_END = "<!-- faithfulness:start -->", "<!-- faithfulness:end -->"
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


def _spread(spread: Spread | None) -> str:
    return "–" if spread is None else f"{spread.mean:.4f} ± {spread.std:.4f}"


def dataset_section(results: ShippedResults, meta_dir: Path) -> list[str]:
    """Markdown lines for one dataset's results file."""
    test, budget = results.test, results.budget
    lines = [f"### {results.dataset} ({results.protocol} split)", "",
             f"Reproduce: `{reproduce_command(results)}`. Input {budget.input_size} px; teacher {budget.teacher_epochs} epochs, students "
             f"{budget.student_epochs} epochs; KD setting chosen on validation: alpha = "
             f"{results.chosen.alpha}, T = {results.chosen.temperature:g}; seeds "
             f"{', '.join(map(str, results.seeds))}; {test.report(TEACHER)['n']} test images.", "",
             "| model | accuracy [95% CI] | balanced accuracy | macro F1 [95% CI] | ECE | agreement with teacher "
             "| ms / image |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    t = test.report(TEACHER)
    lines.append(f"| teacher (DenseNet121) | {_ci(t, 'accuracy')} | {t['balanced_accuracy']:.4f} | {_ci(t, 'macro_f1')} "
                 f"| {t['ece']:.3f} | – | {t['latency']['median_ms']:.1f} |")
    first = results.seeds[0]
    for role in results.arms:
        m0, s = test.report(role, first), results.arm_summary(role)
        lines.append(f"| {role.noun}, seed 0 | {_ci(m0, 'accuracy')} | {m0['balanced_accuracy']:.4f} | {_ci(m0, 'macro_f1')} "
                     f"| {m0['ece']:.3f} | {test.agreement(role, first):.4f} | "
                     f"{m0['latency']['median_ms']:.1f} |")
        lines.append(f"| {role.noun}, mean ± std over seeds | {_spread(s.accuracy)} | {_spread(s.balanced_accuracy)} | "
                     f"{_spread(s.macro_f1)} | {_spread(s.ece)} | {_spread(s.agreement)} | |")
    lines += recall_lines([(TEACHER.key, test.report(TEACHER))]
                          + [(role.noun, test.report(role, first)) for role in results.arms])
    lines += paired_lines(results)
    clean = results.test_without_near_duplicates
    if clean:
        ct = clean.report(TEACHER)
        lines += ["", f"Without the test images that have a near-duplicate in train ({ct['n']} left): "
                  f"teacher {ct['accuracy']:.4f}, {DISTILLED.noun} (seed 0) "
                  f"{clean.report(DISTILLED, first)['accuracy']:.4f}, {LABEL_ONLY.noun} (seed 0) "
                  f"{clean.report(LABEL_ONLY, first)['accuracy']:.4f}."]
    lines += size_lines(meta_dir) + curve_lines(checkpoints.meta_path(checkpoint_file(meta_dir, TEACHER)))
    lines += timing_lines(timing_file(meta_dir))
    lines += faithfulness_lines(results.study(), meta_dir)
    lines += ood_lines(meta_dir)
    if results.dataset in PAPER:
        lines += ["", f"Paper: {PAPER[results.dataset]}."]
    v = results.versions
    took = f"{results.seconds / 60:.0f} min for the whole protocol"
    if (results.training_seconds or 0) > results.seconds:  # stages kept from earlier runs trained there
        took = (f"{results.training_seconds / 60:.0f} min of training in all stages, those kept from earlier "
                f"runs included; {results.seconds / 60:.0f} min for this run")
    lines += ["", f"Measured {results.created[:10]} on {v['machine']}, torch {v['torch']}; {took}.", ""]
    return lines


def recall_lines(named: list[tuple[str, dict]]) -> list[str]:
    """Per-class recall of each listed model's report, and the classes a model never predicts (flagged)."""
    lines = ["", "Per-class recall:"]
    for label, report in named:
        recall = ", ".join(f"{c} {r:.2f}" for c, r in zip(report["classes"], report["per_class"]["recall"]))
        never = never_predicted(report["confusion_matrix"], report["classes"])
        lines.append(f"- {label}: {recall}" + (f"; **never predicts {', '.join(never)}**" if never else ""))
    return lines


def paired_lines(results: ShippedResults) -> list[str]:
    """Distilled minus each control over seeds, paired by seed, with its interval and tests."""
    lines = []
    for control in CONTROLS:
        d = results.paired_difference(control, "accuracy")
        if d:
            label = control.noun.removesuffix(" student")
            lines.append(f"Distilled minus {label} student, test accuracy paired by seed: {100 * d.mean:+.2f} "
                         f"points, 95% CI [{100 * d.ci[0]:+.2f}, {100 * d.ci[1]:+.2f}] ({d.test}: "
                         f"p = {d.p_value:.3g}; exact sign-flip test over {d.n} seeds: p = {d.p_sign_flip:.3g}).")
    return [""] + lines if lines else []


def reproduce_command(results: ShippedResults) -> str:
    """The `core.reproduce` command line that wrote ``results`` (budget by name, teacher epochs if overridden)."""
    budget, name = results.budget, results.dataset
    named = next((k for k, b in BUDGETS.items() if b.input_size == budget.input_size
                  and b.student_epochs == budget.student_epochs and b.grid_epochs == budget.grid_epochs), None)
    parts = ["python -m core.reproduce", name]
    if named and named != default_budget(name):
        parts.append(f"--budget {named}")
    if results.protocol != "official":
        parts.append(f"--protocol {results.protocol}")
    if named and BUDGETS[named].teacher_epochs != budget.teacher_epochs:
        parts.append(f"--teacher-epochs {budget.teacher_epochs}")
    return " ".join(parts)


def _budget_words(budget: Budget) -> str:
    return f"{budget.input_size} px, {budget.teacher_epochs} teacher epochs"


def split_mismatch(official: ShippedResults, pooled: ShippedResults) -> str | None:
    """Why the two splits' results cannot be compared as they are (another budget), or None when they can."""
    a, b = official.budget, pooled.budget
    if a == b:
        return None
    return f"budgets differ (official {_budget_words(a)}; pooled {_budget_words(b)})"


@dataclass(frozen=True)
class SplitGain:
    """One model's test accuracy on the official and the pooled split of a dataset (a student's: its mean over
    seeds), the points the pooled (leaky) split adds, and a student's spread over seeds on each split
    (``std_points``: official, pooled; None for the teacher, one run)."""

    role: Role
    official: float
    pooled: float
    std_points: tuple[float, float] | None

    @property
    def gain_points(self) -> float:
        return 100 * (self.pooled - self.official)


def split_gain(official: ShippedResults, pooled: ShippedResults) -> list[SplitGain]:
    """The teacher's, the distilled student's and the label-only student's `SplitGain`, in that order. Raises
    ValueError where the two ran with different budgets: the gain would mix the split with the recipe."""
    mismatch = split_mismatch(official, pooled)
    if mismatch:
        raise ValueError(f"the official and pooled splits cannot be compared: {mismatch}")

    def std_points(role: Role) -> tuple[float, float] | None:
        return None if role == TEACHER else tuple(100 * r.arm_summary(role).accuracy.std for r in (official, pooled))

    return [SplitGain(role, official.accuracy(role), pooled.accuracy(role), std_points(role))
            for role in (TEACHER, DISTILLED, LABEL_ONLY)]


def leakage_lines(found: list[ShippedResults]) -> list[str]:
    """For datasets shipped on both splits: how many points the pooled (leaky) split adds, same recipe."""
    lines = []
    by_key = {(r.dataset, r.protocol): r for r in found}
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
        rows = {row.role: row for row in split_gain(official, pooled)}

        def spread(role: Role) -> str:
            sd = rows[role].std_points
            return "" if sd is None else " (seed std {:.1f} and {:.1f} points)".format(*sd)

        a, b = official.chosen, pooled.chosen
        kd = "the same KD setting" if a == b else (
            f"KD settings chosen separately: alpha {a.alpha} / T {a.temperature:g} vs {b.alpha} / {b.temperature:g}")
        lines.append(f"On {name}, the paper's pooled random split (train and test pooled and re-split at random, "
                     f"same recipe and budget, {kd}) adds {rows[TEACHER].gain_points:+.1f} points of test accuracy "
                     f"to the teacher, {rows[DISTILLED].gain_points:+.1f} to the {DISTILLED.noun}{spread(DISTILLED)} "
                     f"and {rows[LABEL_ONLY].gain_points:+.1f} to the {LABEL_ONLY.noun}{spread(LABEL_ONLY)} over the "
                     "official split.")
    return lines + [""] if lines else []


def size_lines(meta_dir: Path) -> list[str]:
    """Parameters and FLOPs of the shipped teacher and student (counted from the files themselves)."""
    from core.models import count_flops, count_parameters

    cells = []
    for role in (TEACHER, DISTILLED):
        path = checkpoint_file(meta_dir, role)
        if path.is_file():
            model, meta = checkpoints.load(path)
            cells.append(f"{role.shipped} {count_parameters(model) / 1e6:.2f} M parameters, "
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


def summary_lines(found: list[ShippedResults], earlier: list[ShippedResults] = ()) -> list[str]:
    """One row per dataset and protocol: teacher, students over seeds, target, paper; then the ``earlier`` runs
    (superseded, kept for the record), marked so."""
    lines = ["| dataset | split | input, teacher epochs | teacher | distilled student (mean ± std over seeds) | "
             "label-only student (mean ± std) | seeds | teacher target | teacher − distilled, points (target 0 to "
             f"{MAX_STUDENT_GAP_POINTS:g}) | paper |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for res, was_earlier in [(r, False) for r in found] + [(r, True) for r in earlier]:
        name, teacher = res.dataset, res.accuracy(TEACHER)
        target = TEACHER_TARGET.get(name) if res.protocol == "official" else None
        balanced = TEACHER_BALANCED_TARGET.get(name)
        verdict = "–"
        if target:
            def held(ok: bool) -> str:
                return "met" if ok else "not met"

            verdict = f"{target:.3f} ({held(teacher >= target)})"
            if balanced:
                reached = res.test.report(TEACHER).get("balanced_accuracy", 0.0)
                verdict += f", balanced {balanced:.3f} ({held(reached >= balanced)})"
        # rounded: a tie reads 1e-16 apart after the mean over seeds (and + 0.0 turns -0.0 into 0.0)
        gap = round(100 * (teacher - res.accuracy(DISTILLED)), 9) + 0.0
        gap_cell = f"{gap:+.1f}" + (f" ({'met' if 0 <= gap <= MAX_STUDENT_GAP_POINTS else 'not met'})"
                                    if target else "")  # targets of the real datasets' official split
        budget = f"{res.budget.input_size} px, {res.budget.teacher_epochs}"
        split = res.protocol + (" (earlier run)" if was_earlier else "")
        lines.append(f"| {name} | {split} | {budget} | {teacher:.4f} | {_spread(res.arm_summary(DISTILLED).accuracy)} "
                     f"| {_spread(res.arm_summary(LABEL_ONLY).accuracy)} | {len(res.seeds)} | {verdict} "
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
    path = meta_dir / OOD_FILE
    if not path.is_file():
        return []
    ood = json.loads(path.read_text())
    stale = ood.get("model_sha256") != file_sha256(checkpoint_file(meta_dir, TEACHER))
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
        for protocol in ("official", "pooled"):
            path = results_file(dataset_folder(name, protocol, ckpt_root))
            if path.is_file():
                found.append(ShippedResults.read(path))
                sections += dataset_section(found[-1], path.parent)
        # Superseded runs kept for the record (e.g. a shorter teacher budget): summary rows only. The files a run
        # replaced, kept in earlier/replaced-<time>/ folders (`core.shipping`), are not rows: the glob skips them.
        earlier += [ShippedResults.read(p) for p in sorted((dataset_folder(name, root=ckpt_root) / EARLIER_FOLDER)
                                                            .glob("*.json"))]
    if not found:
        return lines[0] + "\n\nNo results yet: run `python -m core.reproduce phantom`.\n"
    lines += summary_lines(found, earlier) + leakage_lines(found) + faithfulness_answer_lines(found) + sections
    return "\n".join(lines).rstrip() + "\n"


def speed_up_cell(bench_json: Path) -> str:
    """Teacher Grad-CAM over the student's average feature maps, from one dataset's `core.bench` run, or –."""
    if not bench_json.is_file():
        return "–"
    factors = speed_factors(json.loads(bench_json.read_text())["rows"]) or {}
    ratio = factors.get("headline", {}).get("feature_maps")
    return f"{ratio:.1f}x" if ratio else "–"


def official_results(ckpt_root: Path) -> list[ShippedResults]:
    """Each dataset's shipped results on its official split, in `ORDER` (datasets without one left out)."""
    paths = [results_file(dataset_folder(name, root=ckpt_root)) for name in ORDER]
    return [ShippedResults.read(path) for path in paths if path.is_file()]


def render_headline(ckpt_root: Path = REPO / "checkpoints") -> str:
    """The README's headline: one row per dataset (its official split), in the figures docs/results.md gives."""
    lines = ["| dataset | test images | teacher (DenseNet121) | distilled student (mean ± std over seeds) | "
             "label-only student (mean ± std) | teacher Grad-CAM / student's average feature maps, time |",
             "| --- | --- | --- | --- | --- | --- |"]
    for res in official_results(ckpt_root):
        teacher = res.test.report(TEACHER)
        lines.append(f"| {res.dataset} | {teacher['n']} | {teacher['accuracy']:.4f} | "
                     f"{_spread(res.arm_summary(DISTILLED).accuracy)} | "
                     f"{_spread(res.arm_summary(LABEL_ONLY).accuracy)} | "
                     f"{speed_up_cell(timing_file(dataset_folder(res.dataset, root=ckpt_root)))} |")
    if len(lines) == 2:
        return "No results yet: run `python -m core.reproduce phantom`.\n"
    return "\n".join(lines) + "\n"


def splice(readme: str, section: str, start: str = START, end: str = END) -> str:
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{section}{end}{tail}"


# Each generated block: the file it lives in (from the repository root), its markers, and its renderer given that
# root. A block moves with its section by changing its file here; what it renders stays the same.
BLOCKS = (("README.md", HEADLINE_START, HEADLINE_END, lambda root: render_headline(root / "checkpoints")),
          ("README.md", FAITHFULNESS_START, FAITHFULNESS_END, lambda root: readme_answer_lines(official_results(root / "checkpoints"))),
          ("docs/results.md", START, END, lambda root: render(root / "checkpoints")),
          ("docs/benchmarks.md", BENCH_START, BENCH_END,
           lambda root: render_benchmarks(root / "benchmarks" / "results")))


def rendered_files(root: Path) -> dict[str, tuple[str, str]]:
    """Each file that holds a generated block: (its text now, its text with every block rendered afresh)."""
    files: dict[str, tuple[str, str]] = {}
    for name, start, end, renderer in BLOCKS:
        old, text = files.get(name) or ((root / name).read_text(encoding="utf-8"),) * 2
        if start not in text or end not in text:
            raise SystemExit(f"{name} has lost its {start} ... {end} markers: put them back where the block goes")
        files[name] = (old, splice(text, renderer(root), start, end))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.results", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated block is out of date")
    parser.add_argument("--root", default=str(REPO), help="repository whose README.md and docs/ to update")
    args = parser.parse_args(argv)
    root = Path(args.root)
    stale = {name: new for name, (old, new) in rendered_files(root).items() if new != old}
    if args.check:
        if stale:
            print(f"{', '.join(stale)}: a generated block differs from checkpoints/*/results.json or "
                  "benchmarks/results/*.md; run python -m core.results")
            return 1
        return 0
    for name, new in stale.items():
        (root / name).write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
