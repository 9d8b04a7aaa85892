"""The README results renderer: summary rows, target verdicts, the pooled split beside the official one."""

import hashlib
import json
from pathlib import Path

import pytest

from core import results

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
                 teacher_epochs: int = 8) -> dict:
    """A results.json as `core.reproduce` writes it (cpu budget), with chosen accuracies."""
    spread = {"mean": student_acc, "std": 0.01, "min": student_acc - 0.01, "max": student_acc + 0.01, "n": 3}
    models = {"teacher": report(teacher_acc)}
    models |= {f"{arm}_s{s}": report(student_acc) for arm in ("student", "label_only") for s in SEEDS}
    return {"dataset": dataset, "protocol": protocol, "seeds": SEEDS, "chosen": {"alpha": 0.7, "temperature": 4.0},
            "budget": {"input_size": 96, "teacher_epochs": teacher_epochs, "grid_epochs": 5, "student_epochs": 10},
            "test": {"models": models, "pairs": {n: {"agreement": 0.95} for n in models if n != "teacher"}},
            "summary": {k: {m: spread for m in ("accuracy", "macro_f1", "ece", "agreement")}
                        for k in ("student", "label_only")},
            "versions": {"machine": "x86_64", "torch": "2.x"}, "created": "2026-01-01T00:00:00", "seconds": 600.0}


def _results_tree(tmp_path: Path, teacher_acc: float) -> Path:
    teacher_json = {"train": {"history": [{"epoch": 1, "val_acc": 0.5, "train_acc": 0.6, "train_loss": 1.0},
                                          {"epoch": 2, "val_acc": 0.7, "train_acc": 0.8, "train_loss": 0.5}]}}
    for protocol, folder in (("official", tmp_path / "brain_tumor"), ("pooled", tmp_path / "brain_tumor" / "pooled")):
        folder.mkdir(parents=True)
        res = results_file("brain_tumor", protocol, teacher_acc if protocol == "official" else 0.999)
        (folder / "results.json").write_text(json.dumps(res))
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
    lopsided["test"]["models"]["teacher"]["balanced_accuracy"] = 0.55
    row = next(line for line in results.summary_lines([lopsided]) if line.startswith("| alzheimer"))
    assert "0.780 (met), balanced 0.600 (not met)" in row
    lopsided["test"]["models"]["teacher"]["balanced_accuracy"] = 0.65
    row = next(line for line in results.summary_lines([lopsided]) if line.startswith("| alzheimer"))
    assert "0.780 (met), balanced 0.600 (met)" in row
    lopsided["test"]["models"]["teacher"]["accuracy"] = 0.72  # each target says whether it holds
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
    old = json.loads((root / "brain_tumor" / "results.json").read_text())
    old["budget"]["teacher_epochs"] = 4
    (root / "brain_tumor" / "earlier" / "teacher_8_epochs.json").write_text(json.dumps(old))
    text = results.render(root)
    assert "adds +4.9 points of test accuracy to the teacher" in text  # 0.999 pooled vs 0.95 official
    assert "| brain_tumor | official (earlier run) | 96 px, 4 |" in text
    assert text.count("### brain_tumor") == 2, "earlier runs get a summary row, not a section"


def test_reproduce_command_names_protocol_and_overrides():
    phantom = {**results_file("phantom", "official", 0.9),
               "budget": {"input_size": 64, "teacher_epochs": 15, "grid_epochs": 10, "student_epochs": 15}}
    assert results.reproduce_command(phantom) == "python -m core.reproduce phantom --budget phantom_v1"
    sharper = {**phantom, "budget": {"input_size": 128, "teacher_epochs": 15, "grid_epochs": 8, "student_epochs": 15}}
    assert results.reproduce_command(sharper) == "python -m core.reproduce phantom"
    assert results.reproduce_command(results_file("brain_tumor", "official", 0.9)) == \
        "python -m core.reproduce brain_tumor --budget cpu_v1"  # the budget these fields describe
    current = {**results_file("brain_tumor", "official", 0.9),
               "budget": {"input_size": 128, "teacher_epochs": 20, "grid_epochs": 5, "student_epochs": 12}}
    assert results.reproduce_command(current) == "python -m core.reproduce brain_tumor"
    real = {**results_file("alzheimer", "pooled", 0.9, teacher_epochs=16)}
    assert results.reproduce_command(real) == \
        "python -m core.reproduce alzheimer --budget cpu_v1 --protocol pooled --teacher-epochs 16"


def test_recall_per_class_and_classes_never_predicted_are_shown(tmp_path):
    root = _results_tree(tmp_path, 0.95)
    res = json.loads((root / "brain_tumor" / "results.json").read_text())
    blind = [[50, 0, 0, 0], [10, 40, 0, 0], [5, 5, 40, 0], [20, 10, 20, 0]]  # column d is empty
    res["test"]["models"]["student_s0"] = report(0.65, blind)
    (root / "brain_tumor" / "results.json").write_text(json.dumps(res))
    text = results.render(root)
    assert "- distilled student: a 1.00, b 0.80, c 0.80, d 0.00; **never predicts d**" in text
    assert "- teacher: a 0.80, b 0.80, c 0.80, d 0.80\n" in text  # no flag for a model that predicts every class


def test_a_run_of_kept_stages_states_their_training_time_beside_its_own(tmp_path):
    root = _results_tree(tmp_path, 0.95)
    assert "; 10 min for the whole protocol." in results.render(root)  # trained in this run: one figure
    res = json.loads((root / "brain_tumor" / "results.json").read_text())
    res["seconds"], res["training_seconds"] = 60.0, 7200.0
    (root / "brain_tumor" / "results.json").write_text(json.dumps(res))
    text = results.render(root)
    assert "; 120 min of training in all stages, those kept from earlier runs included; 1 min for this run." in text


def test_paired_difference_is_stated_with_its_interval_and_tests(tmp_path):
    root = _results_tree(tmp_path, 0.95)
    res = json.loads((root / "brain_tumor" / "results.json").read_text())
    res["paired"] = {"student_minus_label_only": {"accuracy": {
        "mean": 0.012, "ci": [0.002, 0.022], "p_value": 0.031, "p_sign_flip": 0.0625, "n": 5,
        "test": "paired t-test over seeds, df = 4"}}}
    (root / "brain_tumor" / "results.json").write_text(json.dumps(res))
    text = results.render(root)
    assert ("Distilled minus label-only student, test accuracy paired by seed: +1.20 points, 95% CI [+0.20, +2.20] "
            "(paired t-test over seeds, df = 4: p = 0.031; exact sign-flip test over 5 seeds: p = 0.0625).") in text
    assert "label-smoothing student" not in text  # no control arm in this file, no line for it


def test_pooled_gain_states_the_seed_spread_and_whether_the_kd_setting_was_shared(tmp_path):
    root = _results_tree(tmp_path, 0.95)
    text = results.render(root)
    assert "same recipe and budget, the same KD setting) adds +4.9 points" in text
    assert "(seed std 1.0 and 1.0 points)" in text
    pooled = json.loads((root / "brain_tumor" / "pooled" / "results.json").read_text())
    pooled["chosen"] = {"alpha": 0.3, "temperature": 2.0}
    (root / "brain_tumor" / "pooled" / "results.json").write_text(json.dumps(pooled))
    assert "KD settings chosen separately: alpha 0.7 / T 4 vs 0.3 / 2" in results.render(root)


def test_no_pooled_gain_is_stated_when_the_two_splits_ran_with_different_budgets(tmp_path):
    root = _results_tree(tmp_path, 0.95)
    official = json.loads((root / "brain_tumor" / "results.json").read_text())
    official["budget"] |= {"input_size": 128, "teacher_epochs": 20}
    (root / "brain_tumor" / "results.json").write_text(json.dumps(official))
    text = results.render(root)
    assert "adds" not in text.split("### brain_tumor")[0]
    assert "budgets differ (official 128 px, 20 teacher epochs; pooled 96 px, 8 teacher epochs)" in text
    with pytest.raises(ValueError, match="budgets differ"):
        results.split_gain(official, json.loads((root / "brain_tumor" / "pooled" / "results.json").read_text()))


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
    section = results.render_benchmarks(tmp_path)
    assert "Training throughput: 12.0 images / s" in section
    for name in ("explainer_speed", "app_memory"):
        assert f"`python benchmarks/{name}.py` has not written its numbers yet." in section
    assert section.index("explainer_speed") < section.index("Training throughput") < section.index("app_memory")
    # a table one script writes under another name names that script and its flags
    assert "`python benchmarks/student_frontier.py --dataset brain_tumor` has not written" in section
    assert "`KD_APP_PRELOAD=1 python benchmarks/app_memory.py --quick` has not written" in section
    for command in results.BENCHMARKS.values():
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
    train = load("train_speed").markdown({
        "created": "2026-12-02T00:00:00+00:00", "pipeline_images_per_s": 9.0, "bare_images_per_s": 10.0,
        "ratio": 0.9, "target": 0.9, "environment": env,
        "config": {"arch": "densenet121", "dataset": "phantom", "size": 128, "batch_size": 32, "threads": 2}})
    assert "| one epoch through the training pipeline | 9.0 |" in train and "= 0.900 (target >= 0.9: met)" in train


def test_method_tables_use_readable_names():
    study = json.loads((Path(results.REPO) / "checkpoints" / "phantom" / "results.json").read_text())["faithfulness"]
    table = "\n".join(results.faithfulness_lines(study, Path(results.REPO) / "checkpoints" / "phantom"))
    assert "| Grad-CAM |" in table and "| Random map (baseline) |" in table
    assert "| grad_cam |" not in table and "| random (baseline) |" not in table
    assert "| Mean training mask |" in table  # the lesion table names the baselines too


def _scores(deletion: float, insertion: float, ci_deletion=None) -> dict:
    out = {"deletion_auc": {"mean": deletion}, "insertion_auc": {"mean": insertion}}
    if ci_deletion:
        out["vs_random"] = {"deletion_auc": {"ci": ci_deletion}, "insertion_auc": {"ci": [-0.01, 0.01]}}
    return out


def _hit_series(hits: list[int | None]) -> dict:
    return {"hit": {"values": hits}}


def test_the_cross_dataset_answer_reads_the_students_maps_on_the_teachers_score():
    lesion = [1] * 12 + [0] * 8 + [None] * 4  # 20 lesion images, 4 without a lesion
    prior = [0] * 12 + [0] * 8 + [None] * 4
    study = {"images": 24, "tolerance_px": 9, "methods": {
        "feature_maps": {"student_on_teacher": _scores(0.2, 0.8, [-0.1, -0.05]), "teacher": _scores(0.9, 0.1),
                         "localisation": {"student": _hit_series(prior), "teacher": _hit_series(prior)}},
        "cam": {"student_on_teacher": _scores(0.6, 0.7, [0.05, 0.1]),
                "localisation": {"student": _hit_series(lesion), "teacher": _hit_series(prior)}},
        "grad_cam": {"teacher": _scores(0.3, 0.75),
                     "localisation": {"teacher": _hit_series(lesion), "student": _hit_series(prior)}},
        "random": {"teacher": _scores(0.5, 0.5), "baseline": True},
        "mask_prior": {"teacher": _scores(0.4, 0.6), "baseline": True,
                       "localisation": {"teacher": _hit_series(prior), "student": _hit_series(prior)}}}}
    found = [{"dataset": "phantom", "protocol": "official", "faithfulness": study},
             {"dataset": "brain_tumor", "protocol": "official"}]  # no study: no row
    text = "\n".join(results.faithfulness_answer_lines(found))
    # the student's maps as scored on the teacher, not the student's own scores; marks from the paired interval
    assert "| phantom | 24 | 0.200 ✓ / 0.800 | 0.600 ✗ / 0.700 | 0.300 / 0.750 | 0.500 / 0.500 |" in text
    assert "brain_tumor" not in text
    # 12 hits where the prior hits none: McNemar's exact p = 2 / 2^12
    assert "the student's CAM 0.60 against 0.00 (McNemar p = 0.00049, 12 discordant of 20: above the prior)" in text
    assert "the student's average feature maps 0.00 against 0.00 (McNemar p = 1, 0 discordant of 20: " \
           "not distinguishable from the prior)" in text
    assert "pointing game within 9 px" in text
    assert results.faithfulness_answer_lines(found[1:]) == []


def _cascade(medians: list[float | None], n: int = 8) -> list[dict]:
    """A sanity cascade's steps, top layer first; None: no image gave a finite correlation at that step."""
    return [{"layer": f"layer{i}", "spearman": {"n": 0, "values": []} if m is None else {"median": m, "n": n}}
            for i, m in enumerate(medians)]


def test_the_cross_dataset_answer_tells_how_far_each_map_moves_once_every_layer_is_randomised():
    sanity = {"feature_maps": {"student": _cascade([1.0, 0.95, 0.91]), "teacher": _cascade([1.0, 0.3])},
              "cam": {"student": _cascade([0.2, -0.05]), "teacher": _cascade([0.1, None])},
              "grad_cam": {"teacher": _cascade([0.4, 0.12], n=3)}}
    study = {"images": 24, "sanity": sanity, "methods": {
        "feature_maps": {"student_on_teacher": _scores(0.2, 0.8), "teacher": _scores(0.9, 0.1)},
        "random": {"teacher": _scores(0.5, 0.5), "baseline": True}}}
    found = [{"dataset": "alzheimer", "protocol": "official", "faithfulness": study},
             {"dataset": "eye_disease", "protocol": "official", "faithfulness": {**study, "sanity": {}}}]
    text = "\n".join(results.faithfulness_answer_lines(found))
    # the last step of each cascade (every layer re-initialised): median rank correlation with the trained map
    # columns: the student's feature maps and CAM, the teacher's feature maps and Grad-CAM; (n images)
    assert "| alzheimer | 0.91 (8) | -0.05 (8) | 0.30 (8) | 0.12 (3) |" in text
    assert "| eye_disease | – | – | – | – |" in text  # a study without the cascade
