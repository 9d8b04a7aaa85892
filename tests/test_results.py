"""The results renderer (docs/results.md): summary rows, target verdicts, the pooled split beside the official one."""

import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from core import benchmark_tables, results
from core.budgets import Budget
from core.results_record import ArmSummary, Evaluation, KdSetting, PairedDifference, ShippedResults, Spread
from core.roles import DISTILLED, LABEL_ONLY, TEACHER
from core.study_record import PAIRS, FaithfulnessStudy, MethodScores, StudySettings
from core.study_scores import CascadeStep, Comparison, CurveScores, Distribution, Localisation

SEEDS = [0, 1, 2]


CLASSES = ["a", "b", "c", "d"]


def report(accuracy: float, confusion=None) -> dict:
    """A test report with the fields the renderer reads (intervals around the point value)."""
    confusion = confusion or [[40, 5, 3, 2], [5, 40, 3, 2], [2, 3, 40, 5], [2, 3, 5, 40]]
    recall = [row[i] / sum(row) for i, row in enumerate(confusion)]
    return {"accuracy": accuracy, "accuracy_ci": [accuracy - 0.01, accuracy + 0.01], "macro_f1": accuracy - 0.02,
            "macro_f1_ci": [accuracy - 0.03, accuracy - 0.01], "ece": 0.05, "n": 200, "latency": {"median_ms": 3.0},
            "balanced_accuracy": accuracy - 0.05, "classes": CLASSES, "confusion_matrix": confusion,
            "per_class": {"recall": recall}}


def results_file(dataset: str, protocol: str, teacher_acc: float, student_acc: float = 0.9,
                 teacher_epochs: int = 8) -> ShippedResults:
    """The results `core.reproduce` writes (cpu_v1 budget, no label-smoothing control), with chosen accuracies."""
    spread = Spread(mean=student_acc, std=0.01, min=student_acc - 0.01, max=student_acc + 0.01, n=3)
    models = {"teacher": report(teacher_acc)}
    models |= {f"{arm}_s{s}": report(student_acc) for arm in ("student", "label_only") for s in SEEDS}
    return ShippedResults(
        dataset=dataset, protocol=protocol, seeds=tuple(SEEDS), chosen=KdSetting(alpha=0.7, temperature=4.0),
        budget=Budget(input_size=96, teacher_epochs=teacher_epochs, grid_epochs=5, student_epochs=10), grid=(),
        test=Evaluation(models, {n: {"agreement": 0.95} for n in models if n != "teacher"}, "test"),
        summary={k: ArmSummary(accuracy=spread, macro_f1=spread, ece=spread, agreement=spread)
                 for k in ("student", "label_only")},
        versions={"machine": "x86_64", "torch": "2.x"}, created="2026-01-01T00:00:00", seconds=600.0)


def write(path: Path, res: ShippedResults) -> None:
    path.write_text(res.json_text())


def edit(path: Path, **changes) -> ShippedResults:
    """Rewrite a results file with some of its fields changed; returns the new record."""
    res = replace(ShippedResults.read(path), **changes)
    write(path, res)
    return res


def _results_tree(tmp_path: Path, teacher_acc: float) -> Path:
    teacher_json = {"train": {"history": [{"epoch": 1, "val_acc": 0.5, "train_acc": 0.6, "train_loss": 1.0},
                                          {"epoch": 2, "val_acc": 0.7, "train_acc": 0.8, "train_loss": 0.5}]}}
    for protocol, folder in (("official", tmp_path / "brain_tumor"), ("pooled", tmp_path / "brain_tumor" / "pooled")):
        folder.mkdir(parents=True)
        write(folder / "results.json", results_file("brain_tumor", protocol,
                                                    teacher_acc if protocol == "official" else 0.999))
        (folder / "teacher.json").write_text(json.dumps(teacher_json))
    return tmp_path


def test_summary_states_whether_the_teacher_target_is_met(tmp_path):
    text = results.render(_results_tree(tmp_path, 0.95))
    rows = [line for line in text.splitlines() if line.startswith("| brain_tumor |")]
    assert len(rows) == 2, "one summary row per split"
    assert "| official | 96 px, 8 | 0.9500 |" in rows[0] and "0.975 (not met)" in rows[0]
    assert "| pooled | 96 px, 8 | 0.9990 |" in rows[1] and "(met)" not in rows[1], "targets are for the official split only"
    assert "### brain_tumor (pooled split)" in text
    assert "Teacher curve: validation accuracy by epoch 0.50, 0.70; training accuracy at the last epoch 0.800" in text


def test_the_alzheimer_target_needs_its_balanced_accuracy_too():
    # accuracy above 0.78 is not enough when the teacher barely predicts the small classes
    lopsided = results_file("alzheimer", "official", 0.80)
    lopsided.test.report(TEACHER)["balanced_accuracy"] = 0.55
    row = next(line for line in results.summary_lines([lopsided]) if line.startswith("| alzheimer"))
    assert "0.780 (met), balanced 0.600 (not met)" in row
    lopsided.test.report(TEACHER)["balanced_accuracy"] = 0.65
    row = next(line for line in results.summary_lines([lopsided]) if line.startswith("| alzheimer"))
    assert "0.780 (met), balanced 0.600 (met)" in row
    lopsided.test.report(TEACHER)["accuracy"] = 0.72  # each target says whether it holds
    row = next(line for line in results.summary_lines([lopsided]) if line.startswith("| alzheimer"))
    assert "0.780 (not met), balanced 0.600 (met)" in row


def test_summary_states_the_teacher_student_gap_against_its_target():
    # the teacher must be at least as accurate as the mean distilled student, and that student within 2 points
    cases = {(0.95, 0.94): "+1.0 (met)", (0.95, 0.90): "+5.0 (not met)", (0.90, 0.93): "-3.0 (not met)",
             # a tie (651 of 740 right, and a mean over 5 seeds of 3255 of 3700) that floats put 1e-16 apart
             (0.8797297297297297, 0.8797297297297298): "+0.0 (met)"}
    for (teacher, student), cell in cases.items():
        row = next(line for line in results.summary_lines([results_file("brain_tumor", "official", teacher, student)])
                   if line.startswith("| brain_tumor"))
        assert f"| {cell} |" in row, row
    pooled = next(line for line in results.summary_lines([results_file("brain_tumor", "pooled", 0.95, 0.90)])
                  if line.startswith("| brain_tumor"))
    assert "| +5.0 |" in pooled  # the targets are the official split's


def test_summary_says_met_when_it_is(tmp_path):
    text = results.render(_results_tree(tmp_path, 0.98))
    assert "0.975 (met)" in text


def test_no_results_gives_the_command(tmp_path):
    assert "python -m core.reproduce phantom" in results.render(tmp_path)


def test_splice_replaces_only_between_markers():
    readme = f"head\n{results.START}\nold\n{results.END}\ntail\n"
    assert results.splice(readme, "new\n") == f"head\n{results.START}\nnew\n{results.END}\ntail\n"


def test_pooled_gain_is_stated_and_earlier_runs_are_summarised(tmp_path):
    root = _results_tree(tmp_path, 0.95)
    (root / "brain_tumor" / "earlier").mkdir()
    old = ShippedResults.read(root / "brain_tumor" / "results.json")
    write(root / "brain_tumor" / "earlier" / "teacher_8_epochs.json",
          replace(old, budget=replace(old.budget, teacher_epochs=4)))
    text = results.render(root)
    assert "adds +4.9 points of test accuracy to the teacher" in text  # 0.999 pooled vs 0.95 official
    assert "| brain_tumor | official (earlier run) | 96 px, 4 |" in text
    assert text.count("### brain_tumor") == 2, "earlier runs get a summary row, not a section"


def test_reproduce_command_names_protocol_and_overrides():
    phantom = replace(results_file("phantom", "official", 0.9),
                      budget=Budget(input_size=64, teacher_epochs=15, grid_epochs=10, student_epochs=15))
    assert results.reproduce_command(phantom) == "python -m core.reproduce phantom --budget phantom_v1"
    sharper = replace(phantom, budget=Budget(input_size=128, teacher_epochs=15, grid_epochs=8, student_epochs=15))
    assert results.reproduce_command(sharper) == "python -m core.reproduce phantom"
    assert results.reproduce_command(results_file("brain_tumor", "official", 0.9)) == \
        "python -m core.reproduce brain_tumor --budget cpu_v1"  # the budget these fields describe
    current = replace(results_file("brain_tumor", "official", 0.9),
                      budget=Budget(input_size=128, teacher_epochs=20, grid_epochs=5, student_epochs=12))
    assert results.reproduce_command(current) == "python -m core.reproduce brain_tumor"
    real = results_file("alzheimer", "pooled", 0.9, teacher_epochs=16)
    assert results.reproduce_command(real) == \
        "python -m core.reproduce alzheimer --budget cpu_v1 --protocol pooled --teacher-epochs 16"


def test_recall_per_class_and_classes_never_predicted_are_shown(tmp_path):
    root = _results_tree(tmp_path, 0.95)
    res = ShippedResults.read(root / "brain_tumor" / "results.json")
    blind = [[50, 0, 0, 0], [10, 40, 0, 0], [5, 5, 40, 0], [20, 10, 20, 0]]  # column d is empty
    write(root / "brain_tumor" / "results.json",
          replace(res, test=replace(res.test, models={**res.test.models, "student_s0": report(0.65, blind)})))
    text = results.render(root)
    assert "- distilled student: a 1.00, b 0.80, c 0.80, d 0.00; **never predicts d**" in text
    assert "- teacher: a 0.80, b 0.80, c 0.80, d 0.80\n" in text  # no flag for a model that predicts every class


def test_a_run_of_kept_stages_states_their_training_time_beside_its_own(tmp_path):
    root = _results_tree(tmp_path, 0.95)
    assert "; 10 min for the whole protocol." in results.render(root)  # trained in this run: one figure
    edit(root / "brain_tumor" / "results.json", seconds=60.0, training_seconds=7200.0)
    text = results.render(root)
    assert "; 120 min of training in all stages, those kept from earlier runs included; 1 min for this run." in text


def test_paired_difference_is_stated_with_its_interval_and_tests(tmp_path):
    root = _results_tree(tmp_path, 0.95)
    difference = PairedDifference(mean=0.012, std=0.008, ci=(0.002, 0.022), p_value=0.031, p_sign_flip=0.0625, n=5,
                                  test="paired t-test over seeds, df = 4",
                                  differences=(0.01, 0.02, 0.0, 0.015, 0.015))
    edit(root / "brain_tumor" / "results.json", paired={LABEL_ONLY.key: {"accuracy": difference}})
    text = results.render(root)
    assert ("Distilled minus label-only student, test accuracy paired by seed: +1.20 points, 95% CI [+0.20, +2.20] "
            "(paired t-test over seeds, df = 4: p = 0.031; exact sign-flip test over 5 seeds: p = 0.0625).") in text
    assert "label-smoothing student" not in text  # no control arm in this file, no line for it


def test_pooled_gain_states_the_seed_spread_and_whether_the_kd_setting_was_shared(tmp_path):
    root = _results_tree(tmp_path, 0.95)
    text = results.render(root)
    assert "same recipe and budget, the same KD setting) adds +4.9 points" in text
    assert "(seed std 1.0 and 1.0 points)" in text
    edit(root / "brain_tumor" / "pooled" / "results.json", chosen=KdSetting(alpha=0.3, temperature=2.0))
    assert "KD settings chosen separately: alpha 0.7 / T 4 vs 0.3 / 2" in results.render(root)


def test_no_pooled_gain_is_stated_when_the_two_splits_ran_with_different_budgets(tmp_path):
    root = _results_tree(tmp_path, 0.95)
    official = ShippedResults.read(root / "brain_tumor" / "results.json")
    official = edit(root / "brain_tumor" / "results.json",
                    budget=replace(official.budget, input_size=128, teacher_epochs=20))
    text = results.render(root)
    assert "adds" not in text.split("### brain_tumor")[0]
    assert "budgets differ (official 128 px, 20 teacher epochs; pooled 96 px, 8 teacher epochs)" in text
    with pytest.raises(ValueError, match="budgets differ"):
        results.split_gain(official, ShippedResults.read(root / "brain_tumor" / "pooled" / "results.json"))


def test_upload_check_is_stated_and_flagged_stale_for_another_teacher(tmp_path):
    folder = tmp_path / "brain_tumor"
    folder.mkdir()
    (folder / "teacher.pt").write_bytes(b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()
    check = {"score": "mahalanobis", "quantile": 0.95, "val_images": 826, "test_flagged": 0.061,
             "selection_auroc": {"energy": 0.61, "mahalanobis": 0.987}, "test_auroc": {"phantom": 1.0},
             "model_sha256": sha}
    (folder / "ood.json").write_text(json.dumps(check))
    line = "\n".join(results.ood_lines(folder))
    assert "mahalanobis score" in line and "energy 0.610, mahalanobis 0.987" in line
    assert "95% of the 826 validation images" in line and "6.1% of the test images" in line
    assert "phantom 1.000" in line and "stale" not in line
    assert "accuracy" not in line  # an older check that did not record it
    check["test_accuracy"] = {"flagged": {"images": 8, "accuracy": 0.625}, "not_flagged": {"images": 92, "accuracy": 0.9}}
    (folder / "ood.json").write_text(json.dumps(check))
    assert ("test accuracy is 0.625 on the 8 flagged images and 0.900 on the 92 others"
            in "\n".join(results.ood_lines(folder)))
    (folder / "teacher.pt").write_bytes(b"other weights")
    assert "stale" in "\n".join(results.ood_lines(folder))
    assert results.ood_lines(tmp_path) == []


def test_benchmark_tables_are_rendered_as_written_or_name_their_command(tmp_path):
    (tmp_path / "train_speed.md").write_text("Training throughput: 12.0 images / s\n")
    section = benchmark_tables.render_benchmarks(tmp_path)
    assert "Training throughput: 12.0 images / s" in section
    for name in ("explainer_speed", "app_memory"):
        assert f"`python benchmarks/{name}.py` has not written its numbers yet." in section
    assert section.index("explainer_speed") < section.index("Training throughput") < section.index("app_memory")
    # a table one script writes under another name names that script and its flags
    assert "`python benchmarks/student_frontier.py --dataset brain_tumor` has not written" in section
    assert "`KD_APP_PRELOAD=1 python benchmarks/app_memory.py --quick` has not written" in section
    for command in benchmark_tables.BENCHMARKS.values():
        script = next(word for word in command.split() if word.startswith("benchmarks/"))
        assert (Path(__file__).resolve().parents[1] / script).is_file(), command
    readme = f"a\n{results.BENCH_START}\nold\n{results.BENCH_END}\nb\n"
    new = results.splice(readme, section, results.BENCH_START, results.BENCH_END)
    assert "old" not in new and new.startswith("a\n") and new.endswith("\nb\n") and "12.0 images" in new


def test_benchmark_scripts_write_tables_the_readme_can_render():
    import importlib.util

    def load(name):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks"
                                                      / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    env = {"cpu": "test cpu", "cpu_count": 2, "load_average": 0.1, "python": "3.11", "torch": "2.x", "captum": "0.y"}
    speed = load("explainer_speed").markdown({
        "created": "2026-12-02T00:00:00+00:00", "input_size": 224, "threads": 1, "environment": env,
        "checks": [{"target": "1. student capture / forward", "measured": 1.1, "op": "<=", "limit": 1.15,
                    "pass": True},
                   {"target": "4. teacher Grad-CAM / student feature maps", "measured": 7.0, "op": ">=", "limit": 8,
                    "pass": False}],
        "factors": {"distillation: teacher Grad-CAM / student Grad-CAM": 12.5}})
    assert "1 of 2 met" in speed and "| student capture / forward | 1.10 | <= 1.15 | yes |" in speed
    assert "| teacher Grad-CAM / student feature maps | 7.00 | >= 8 | no |" in speed
    assert "| distillation: teacher Grad-CAM / student Grad-CAM | 12.5 |" in speed and "test cpu x2" in speed
    assert "two parts" not in speed  # a run from before the evidence was timed in parts
    parts = load("explainer_speed").markdown({
        "created": "2026-12-02T00:00:00+00:00", "input_size": 224, "threads": 1, "environment": env, "checks": [],
        "factors": {}, "evidence_parts": {"every class's map and the logits (evidence_maps) / student forward": 1.071}})
    assert "| every class's map and the logits (evidence_maps) / student forward | 1.07 |" in parts
    train = load("train_speed").markdown({
        "created": "2026-12-02T00:00:00+00:00", "pipeline_images_per_s": 9.0, "bare_images_per_s": 10.0,
        "ratio": 0.9, "target": 0.9, "environment": env,
        "config": {"arch": "densenet121", "dataset": "phantom", "size": 128, "batch_size": 32, "threads": 2}})
    assert "| one epoch through the training pipeline | 9.0 |" in train and "= 0.900 (target >= 0.9: met)" in train


def test_method_tables_use_readable_names():
    study = ShippedResults.read(Path(results.REPO) / "checkpoints" / "phantom" / "results.json").study()
    table = "\n".join(results.faithfulness_lines(study, Path(results.REPO) / "checkpoints" / "phantom"))
    assert "| Grad-CAM |" in table and "| Random map per pixel (baseline) |" in table
    assert "| grad_cam |" not in table and "| random (baseline) |" not in table
    assert "| Mean training mask |" in table  # the lesion table names the baselines too


def _scores(deletion: float, insertion: float, ci_deletion=None) -> CurveScores:
    def against_random(ci):
        return Comparison(sum(ci) / 2, 24, "paired t-test over images, df = 23", 0.1, tuple(ci), 0.01, 0.01)
    versus = {"deletion_auc": against_random(ci_deletion), "insertion_auc": against_random([-0.01, 0.01])} \
        if ci_deletion else {}
    return CurveScores({"deletion_auc": Distribution.of([deletion]), "insertion_auc": Distribution.of([insertion])},
                       versus)


def _hit_series(hits: list[int | None]) -> Localisation:
    hit = Distribution.of([math.nan if h is None else h for h in hits])
    return Localisation(hit, hit, hit)


def _method(baseline: bool = False, localisation=None, **scores: CurveScores) -> MethodScores:
    """A method's scores by pair name (``student_on_teacher``) and its localisation by model (``student``)."""
    return MethodScores(24, baseline, {next(p for p in PAIRS if p.key == key): s for key, s in scores.items()},
                        localisation={TEACHER: localisation[0], DISTILLED: localisation[1]} if localisation else None)


def _study(methods: dict[str, MethodScores], sanity=None, tolerance_px: int | None = None) -> dict:
    """A study of 24 images as `core.faithfulness_study` writes it into results.json (the record's raw block)."""
    settings = StudySettings("phantom", None, 4, 8, tuple(methods), 10, 0)
    return FaithfulnessStudy(settings, 24, (0, 1, 2, 3), "f" * 64, tuple(range(24)), (0,) * 24,
                             {TEACHER: (0,) * 24, DISTILLED: (0,) * 24}, 1.0, {TEACHER: "0" * 64, DISTILLED: "1" * 64},
                             {TEACHER: 128, DISTILLED: 128}, tolerance_px, methods, sanity or {}, {}).to_json()


def test_the_cross_dataset_answer_reads_the_students_maps_on_the_teachers_score():
    lesion = [1] * 12 + [0] * 8 + [None] * 4  # 20 lesion images, 4 without a lesion
    prior = [0] * 12 + [0] * 8 + [None] * 4
    study = _study({
        "feature_maps": _method(student_on_teacher=_scores(0.2, 0.8, [-0.1, -0.05]), teacher=_scores(0.9, 0.1),
                                localisation=(_hit_series(prior), _hit_series(prior))),
        "cam": _method(student_on_teacher=_scores(0.6, 0.7, [0.05, 0.1]),
                       localisation=(_hit_series(prior), _hit_series(lesion))),
        "grad_cam": _method(teacher=_scores(0.3, 0.75), localisation=(_hit_series(lesion), _hit_series(prior))),
        "random": _method(True, teacher=_scores(0.5, 0.5)),
        "mask_prior": _method(True, teacher=_scores(0.4, 0.6), localisation=(_hit_series(prior), _hit_series(prior)))},
        tolerance_px=9)
    found = [replace(results_file("phantom", "official", 0.9), faithfulness=study),
             results_file("brain_tumor", "official", 0.9),  # no study: no row
             replace(results_file("eye_disease", "pooled", 0.9), faithfulness=study)]  # the official split's only
    text = "\n".join(results.faithfulness_answer_lines(found))
    # the student's maps as scored on the teacher, not the student's own scores; marks from the paired interval
    assert "| phantom | 24 | 0.200 ✓ / 0.800 | 0.600 ✗ / 0.700 | 0.300 / 0.750 | 0.500 / 0.500 |" in text
    assert "brain_tumor" not in text and "eye_disease" not in text
    # 12 hits where the prior hits none: McNemar's exact p = 2 / 2^12
    assert "the student's CAM 0.60 against 0.00 (McNemar p = 0.00049, 12 discordant of 20: above the prior)" in text
    assert "the student's average feature maps 0.00 against 0.00 (McNemar p = 1, 0 discordant of 20: " \
           "not distinguishable from the prior)" in text
    assert "pointing game within 9 px" in text
    assert results.faithfulness_answer_lines(found[1:]) == []


def _cascade(medians: list[float | None], n: int = 8) -> tuple[CascadeStep, ...]:
    """A sanity cascade's steps, top layer first; None: no image gave a finite correlation at that step."""
    return tuple(CascadeStep(f"layer{i}", Distribution.of([math.nan if m is None else m] * n), Distribution.of([]))
                 for i, m in enumerate(medians))


def test_the_cross_dataset_answer_tells_how_far_each_map_moves_once_every_layer_is_randomised():
    sanity = {"feature_maps": {DISTILLED: _cascade([1.0, 0.95, 0.91]), TEACHER: _cascade([1.0, 0.3])},
              "cam": {DISTILLED: _cascade([0.2, -0.05]), TEACHER: _cascade([0.1, None])},
              "grad_cam": {TEACHER: _cascade([0.4, 0.12], n=3)}}
    study = _study({"feature_maps": _method(student_on_teacher=_scores(0.2, 0.8), teacher=_scores(0.9, 0.1)),
                    "random": _method(True, teacher=_scores(0.5, 0.5))}, sanity)
    found = [replace(results_file("alzheimer", "official", 0.9), faithfulness=study),
             replace(results_file("eye_disease", "official", 0.9), faithfulness={**study, "sanity": {}})]
    text = "\n".join(results.faithfulness_answer_lines(found))
    # the last step of each cascade (every layer re-initialised): median rank correlation with the trained map
    # columns: the student's feature maps and CAM, the teacher's feature maps and Grad-CAM; (n images)
    assert "| alzheimer | 0.91 (8) | -0.05 (8) | 0.30 (8) | 0.12 (3) |" in text
    assert "| eye_disease | – | – | – | – |" in text  # a study without the cascade
