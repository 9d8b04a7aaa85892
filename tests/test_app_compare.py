"""Teacher vs student page on phantom: architecture, metrics with intervals, charts, flips and the gallery."""

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from core import checkpoints
from core.data import load_dataset
from core import roles
from core.results_record import ArmSummary, KdSetting, PairedDifference, ShippedResults, Spread
from core.roles import LABEL_ONLY, SMOOTHING
from tests.apptest_support import (ROOT, as_read, assert_ok, fresh_streamlit_caches, has_chart,  # noqa: F401
                                   link_shipped, open_page, texts)
from tests.test_results import results_file

SHIPPED = ROOT / "checkpoints"


def test_compare_page_shows_metrics_charts_and_agreement():
    at = open_page("compare")
    assert_ok(at)
    arch = at.dataframe[0].value
    assert list(arch["model"])[:2] == ["Teacher", "Student (distilled)"]
    params = [int(p.replace(",", "")) for p in arch["parameters"]]
    assert params[0] > 5 * params[1], "the DenseNet teacher should be several times larger than the student"
    labels = [m.label for m in at.metric]
    assert "Teacher: accuracy" in labels and "Student (distilled): accuracy" in labels
    assert any(label.startswith("Agreement with the teacher") for label in labels)
    assert "McNemar p" in labels
    assert "95% CI" in texts(at)
    table = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    assert {"Accuracy", "Macro F1", "ECE, 15 bins (lower is better)"} <= set(table["metric"])
    for key in ("cm_teacher", "cm_student", "f1_chart", "reliability_chart"):
        assert has_chart(at, key), key
    flips = next(d.value for d in at.dataframe if "student right" in d.value.columns)
    n_flips = int(flips["student right"].sum() + flips["student wrong"].sum())
    n_test = int(next(r for r in table.to_dict("records") if r["metric"] == "Test images")["Teacher"])
    assert n_flips == n_test > 0


def test_architecture_view_lists_each_models_layers_and_marks_where_the_maps_come_from():
    at = open_page("compare")
    assert_ok(at)
    shipped = checkpoints.load(SHIPPED / "phantom" / "teacher.pt")[1]
    # one table per model, in the tabs' order (a read-only st.dataframe carries no key in AppTest)
    layers = [d.value for d in at.dataframe if "maps come from here" in d.value.columns]
    assert [t.label for t in at.tabs][:2] == ["Teacher", "Student (distilled)"] and len(layers) >= 2
    teacher, student = layers[:2]
    assert list(student["layer"])[:2] == ["block1", "block2"]
    assert list(teacher["layer"])[0] == "stem" and list(teacher["layer"])[-1].startswith("head")
    assert list(teacher["output"])[-1] == str(shipped.num_classes)
    marked = [row["layer"] for row in teacher.to_dict("records") if "CAM" in row["maps come from here"]]
    assert marked == ["norm5"]
    total = sum(int(p.replace(",", "")) for p in teacher["parameters"])
    table = at.dataframe[0].value
    assert total == int(list(table["parameters"])[0].replace(",", ""))  # the rows add up to the model


def gallery_expectation(root: Path, limit: int, confident: float = 0.8) -> tuple[list[int], int]:
    """What the gallery should list for the pair under ``root`` when ``limit`` images are predicted (the first
    ``limit // classes`` test images of each class), computed with plain torch from the checkpoint files.

    Returns:
        (test indices where teacher and student disagree, most confident student first; number of images
        the student gets wrong with at least ``confident`` probability).
    """
    teacher, t_meta = checkpoints.load(root / "phantom" / "teacher.pt")
    student, s_meta = checkpoints.load(root / "phantom" / "student.pt")
    assert t_meta.input_size == s_meta.input_size, "both models must see the same batch here"
    ds = load_dataset("phantom", "test", input_size=t_meta.input_size)
    per_class, seen, picked = limit // len(ds.classes), Counter(), []
    for i, y in enumerate(ds.targets):
        seen[int(y)] += 1
        if seen[int(y)] <= per_class:
            picked.append(i)
    images = torch.stack([ds[i][0] for i in picked])
    labels = torch.tensor([int(ds.targets[i]) for i in picked])

    def probs(model, meta):
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (meta.mean, meta.std))
        with torch.no_grad():
            return torch.softmax(model.eval()((images - mean) / std), dim=1)

    t, s = probs(teacher, t_meta), probs(student, s_meta)
    s_conf, s_pred = s.max(1)
    disagree = sorted((p for p in range(len(picked)) if t[p].argmax() != s_pred[p]), key=lambda p: -s_conf[p])
    wrong = int(((s_pred != labels) & (s_conf >= confident)).sum())
    return [picked[p] for p in disagree], wrong


def gallery_tabs(at) -> list[str]:
    """The gallery's tabs once 64 images are predicted (the architecture view's tabs, one per model, left out)."""
    at.slider(key="cmp_limit").set_value(64).run()
    assert_ok(at)
    return [t.label for t in at.tabs if t.label not in {r.label for r in roles.SHIPPED}]


def gallery_buttons(at, kind: str) -> list[int]:
    """Test indices behind the gallery's Explain buttons of one tab, in reading order (row by row).

    The gallery fills 6 columns left to right, and AppTest lists elements column by column.
    """
    prefix = f"gallery_{kind}_"
    found = [int(b.key[len(prefix):]) for b in at.button if b.key and b.key.startswith(prefix)]
    shown = sorted(range(len(found)), key=lambda k: (k % 6, k))  # position of each found button in the grid
    return [found[shown.index(k)] for k in range(len(found))]


def check_gallery(root: Path) -> tuple:
    """Open the Compare page and check its gallery against `gallery_expectation` for the pair under ``root``;
    returns the page and the expected disagreements."""
    disagree, wrong = gallery_expectation(root, 64)
    at = open_page("compare")
    assert_ok(at)
    assert gallery_tabs(at) == [f"Teacher and student disagree ({len(disagree)} of 64 predicted here)",
                                f"Student confidently wrong ({wrong} of 64)"]
    assert gallery_buttons(at, "disagree") == disagree[:18]
    return at, disagree


def test_gallery_lists_disagreements_and_opens_explanations(tmp_path, monkeypatch):
    # the shipped pair may agree on every image here: this student has two of its classes swapped in the head
    folder = tmp_path / "phantom"
    folder.mkdir()
    for suffix in (".pt", ".json"):
        (folder / f"teacher{suffix}").symlink_to(SHIPPED / "phantom" / f"teacher{suffix}")
    student, meta = checkpoints.load(SHIPPED / "phantom" / "student.pt")
    head = [m for m in student.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight[[1, 2]] = head.weight[[2, 1]].clone()
        head.bias[[1, 2]] = head.bias[[2, 1]].clone()
    checkpoints.save(student, meta, folder / "student.pt")
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at, disagree = check_gallery(tmp_path)
    assert disagree, "a student with two classes swapped parts ways with its teacher on those classes"
    explain = next(b for b in at.button if b.key == f"gallery_disagree_{disagree[0]}")
    explain.click().run()
    assert_ok(at)
    assert at.title[0].value == "Explanations side by side"
    assert at.number_input(key="image").value == disagree[0]


def test_gallery_says_so_when_teacher_and_student_never_disagree(tmp_path, monkeypatch):
    folder = tmp_path / "phantom"  # the shipped teacher also serves as the student
    folder.mkdir()
    for role in ("teacher", "student"):
        for suffix in (".pt", ".json"):
            (folder / f"{role}{suffix}").symlink_to(SHIPPED / "phantom" / f"teacher{suffix}")
    disagree, wrong = gallery_expectation(tmp_path, 64)
    assert disagree == []  # the other tab still counts the (teacher's) confident mistakes, if any
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_page("compare")
    assert gallery_tabs(at) == ["Teacher and student disagree (0 of 64 predicted here)",
                                f"Student confidently wrong ({wrong} of 64)"]
    assert gallery_buttons(at, "disagree") == []
    assert len(gallery_buttons(at, "confidently_wrong")) == min(wrong, 18)
    # one empty-tab message per empty tab (a teacher without confident mistakes empties the other tab too)
    assert [s.value for s in at.success] == ["None among the images predicted here."] * (1 + (wrong == 0))


def with_accuracy_spread(res: ShippedResults, mean: float, std: float) -> ShippedResults:
    """``res`` with every student's accuracy over seeds set to ``mean`` and ``std``."""
    return replace(res, summary={k: replace(arm, accuracy=replace(arm.accuracy, mean=mean, std=std))
                                 for k, arm in res.summary.items()})


def test_spread_over_seeds_is_shown_when_results_are_shipped(tmp_path, monkeypatch):
    results = replace(results_file("phantom", "official", 0.95, student_acc=0.9),
                      chosen=KdSetting(alpha=0.3, temperature=8.0))
    (link_shipped(tmp_path) / "results.json").write_text(results.json_text())
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_page("compare")
    assert_ok(at)
    assert "**Over 3 seeds** (KD setting chosen on validation: alpha = 0.3, T = 8.0)" in texts(at)
    table = next(d.value for d in at.dataframe if "agreement with teacher" in d.value.columns)
    assert list(table["model"]) == ["Student (distilled)", "Student (labels only)"]
    assert table["accuracy"][0] == "0.9000 ± 0.0100"
    assert not any("cannot be read" in w.value for w in at.warning)  # a file that reads: no notice


def test_the_label_smoothing_control_balanced_accuracy_and_paired_differences_are_shown(tmp_path, monkeypatch):
    def spread(mean):
        return Spread(mean=mean, std=0.01, min=mean - 0.01, max=mean + 0.01, n=5)

    summary = {k: ArmSummary(*[spread(0.9 if k == "student" else 0.85)] * 4,
                             balanced_accuracy=spread(0.9 if k == "student" else 0.85))
               for k in ("student", "label_only", "smoothing")}

    def paired(mean, low, high, p):
        return {"accuracy": PairedDifference(mean=mean, std=0.01, ci=(low, high), p_value=p, p_sign_flip=0.0625, n=5,
                                             test="paired t-test over seeds, df = 4", differences=(mean,) * 5)}

    results = replace(results_file("phantom", "official", 0.95), seeds=(0, 1, 2, 3, 4), summary=summary,
                      chosen=KdSetting(alpha=0.5, temperature=2.0),
                      paired={LABEL_ONLY.key: paired(0.05, 0.03, 0.07, 0.001),
                              SMOOTHING.key: paired(-0.004, -0.02, 0.012, 0.5)})
    (link_shipped(tmp_path) / "results.json").write_text(results.json_text())
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_page("compare")
    assert_ok(at)
    seeds = next(d.value for d in at.dataframe if "accuracy" in d.value.columns and "model" in d.value.columns
                 and "balanced accuracy" in d.value.columns)
    assert list(seeds["model"]) == ["Student (distilled)", "Student (labels only)", "Student (label smoothing)"]
    assert seeds["balanced accuracy"][2] == "0.8500 ± 0.0100"
    table = next(d.value for d in at.dataframe if "difference (points)" in d.value.columns)
    assert list(table["comparison"]) == ["Distilled minus labels only", "Distilled minus label smoothing"]
    rows = table.to_dict("records")
    assert abs(rows[0]["difference (points)"] - 5.0) < 1e-9 and rows[0]["95% CI (points)"] == "+3.00 to +7.00"
    assert rows[1]["95% CI (points)"] == "-2.00 to +1.20" and rows[1]["p (paired t-test)"] == 0.5
    assert rows[0]["p (sign flip)"] == 0.0625
    assert "paired t-test over seeds, df = 4" in texts(at)


def test_official_and_pooled_splits_are_compared_when_both_are_shipped(tmp_path, monkeypatch):
    folder = link_shipped(tmp_path)
    for sub, protocol, shift in ((folder, "official", 0.0), (folder / "pooled", "pooled", 0.08)):
        sub.mkdir(exist_ok=True)
        results = with_accuracy_spread(results_file("phantom", protocol, 0.6 + shift), 0.7 + shift, 0.01 + shift / 4)
        (sub / "results.json").write_text(results.json_text())
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_page("compare")
    assert_ok(at)
    table = next(d.value for d in at.dataframe if "pooled split" in d.value.columns)
    assert list(table["model"]) == ["Teacher", "Student (distilled)", "Student (labels only)"]
    assert abs(table["gain from leakage (points)"][0] - 8.0) < 1e-9
    # each student gain beside its spread over seeds on both splits (the teacher is one run)
    assert list(table["seed std, official / pooled (points)"]) == ["–", "1.0 / 3.0", "1.0 / 3.0"]
    assert "pooled random split" in texts(at)


def test_splits_run_with_different_budgets_are_not_compared(tmp_path, monkeypatch):
    folder = link_shipped(tmp_path)
    for sub, protocol, size in ((folder, "official", 128), (folder / "pooled", "pooled", 96)):
        sub.mkdir(exist_ok=True)
        results = results_file("phantom", protocol, 0.6, teacher_epochs=8)
        results = replace(results, budget=replace(results.budget, input_size=size))
        (sub / "results.json").write_text(results.json_text())
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_page("compare")
    assert_ok(at)
    assert not any("pooled split" in d.value.columns for d in at.dataframe)
    assert "budgets differ (official 128 px, 8 teacher epochs; pooled 96 px, 8 teacher epochs)" in texts(at)


def test_a_results_file_that_cannot_be_read_is_named_and_the_page_goes_on(tmp_path, monkeypatch):
    data = results_file("phantom", "official", 0.95).to_json()
    data["summary"]["student"]["accuracy"].pop("std")
    (link_shipped(tmp_path) / "results.json").write_text(json.dumps(data))
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_page("compare")
    assert_ok(at)
    notice = as_read(" ".join(w.value for w in at.warning))  # the reason quotes the file, shown as text
    assert "The results shipped for phantom cannot be read" in notice
    assert "results.json: field 'summary.student.accuracy' does not fit Spread" in notice
    assert not any("agreement with teacher" in d.value.columns for d in at.dataframe)
    assert any("metric" in d.value.columns for d in at.dataframe)  # the checkpoints' own metrics still shown


def test_a_results_file_of_the_faithfulness_study_alone_is_no_results(tmp_path, monkeypatch):
    # what core.faithfulness_study writes where no reproduce ran: the page has no seeds to show, and no notice
    study = json.loads((SHIPPED / "phantom" / "results.json").read_text())["faithfulness"]
    (link_shipped(tmp_path) / "results.json").write_text(json.dumps({"dataset": "phantom", "faithfulness": study}))
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_page("compare")
    assert_ok(at)
    assert not any("cannot be read" in w.value for w in at.warning)
    assert not any("agreement with teacher" in d.value.columns for d in at.dataframe)


def test_no_split_comparison_without_the_pooled_results(tmp_path, monkeypatch):
    link_shipped(tmp_path)
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_page("compare")
    assert_ok(at)
    assert not any("pooled split" in d.value.columns for d in at.dataframe)


def test_recall_per_class_is_shown_and_a_class_never_predicted_is_flagged():
    from explorer import compare_view

    at = open_page("compare")
    assert_ok(at)
    table = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    assert {f"Recall: {c}" for c in ("no_lesion", "infiltrative", "extra_axial", "midline")} <= set(table["metric"])
    blind = {"classes": ["a", "b"], "confusion_matrix": [[5, 0], [3, 0]]}
    sighted = {"classes": ["a", "b"], "confusion_matrix": [[5, 0], [1, 2]]}
    notes = compare_view.never_predicted_notes({"student": blind, "teacher": sighted},
                                           {"student": "Student (distilled)", "teacher": "Teacher"})
    assert notes == ["Student (distilled) never predicts b: its accuracy hides that; see its balanced accuracy "
                     "and the recall rows."]


def test_the_image_count_choice_needs_room_for_a_slider():
    from explorer.compare_view import prediction_limit

    assert prediction_limit(20) == {"value": 20} and prediction_limit(32) == {"value": 32}
    assert prediction_limit(35) == {"value": 35}  # 32 to 35 leaves no room for one step of 4
    assert prediction_limit(40) == {"min_value": 32, "max_value": 40, "value": 40, "step": 4}
    assert prediction_limit(384)["value"] == 128


def test_the_reports_come_from_the_models_the_page_passes_down(monkeypatch):
    from explorer import compare_view, loaders

    models = loaders.load_models("phantom")

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded again by its dataset's name")

    monkeypatch.setattr(loaders, "load_model", refuse)
    reports, pairs, source = compare_view.reports("phantom", models, None)
    assert list(reports) == ["teacher", "student", "student_label_only"]
    assert set(pairs) == {"student", "student_label_only"}
    assert source == "shipped with the checkpoints (full test split)"
    preds = compare_view.test_predictions("phantom", models, loaders.model_versions(models), 8)
    assert list(preds["probs"]) == ["teacher", "student", "student_label_only"] and len(preds["labels"]) == 8


# --------------------------------------------------------------------------- odd metrics in a checkpoint

def _set(path: str, value):
    """A change to a checkpoint's ``metrics.test`` block: ``path`` (dotted) set to ``value`` (None: removed)."""
    def spoil(test: dict) -> dict:
        *parents, last = path.split(".")
        node = test
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(last)
        else:
            node[last] = value
        return test

    spoil.__name__ = f"{path}={value!r}"
    return spoil


def _whole(value):
    def spoil(test: dict):
        return value

    spoil.__name__ = f"test={value!r}"
    return spoil


# metrics.test blocks that read as JSON but no report can be drawn from: (change, what the notice names)
ODD_TEST_METRICS = [
    (_set("accuracy", "high"), "accuracy"), (_set("accuracy", float("nan")), "accuracy"),
    (_set("accuracy", True), "accuracy"), (_set("accuracy", 1e300), "accuracy"), (_set("accuracy", None), "accuracy"),
    (_set("accuracy_ci", [0.9]), "accuracy_ci"), (_set("macro_f1", "0.9"), "macro_f1"), (_set("ece", None), "ece"),
    (_set("classes", ["a", "b"]), "classes"), (_set("classes", "abcd"), "classes"),
    (_set("classes", ["w", "x", "y", "z"]), "classes"),
    (_set("confusion_matrix", None), "confusion_matrix"),
    (_set("confusion_matrix", [[1, 2], [3, 4]]), "confusion_matrix"),
    (_set("confusion_matrix", [["a"] * 4] * 4), "confusion_matrix"), (_set("n", -3), "n"),
    (_set("per_class", None), "per_class"), (_set("per_class.f1", [0.5]), "per_class.f1"),
    (_set("per_class.recall", "high"), "per_class.recall"),
    (_set("reliability", None), "reliability"), (_set("reliability.accuracy", "x"), "reliability"),
    (_set("vs_teacher.agreement", "x"), "vs_teacher.agreement"), (_set("vs_teacher.flip_table", []), "vs_teacher"),
    (_set("vs_teacher.mcnemar", None), "vs_teacher.mcnemar"), (_set("latency.median_ms", "fast"), "latency"),
    (_whole("x"), "metrics.test"), (_whole([1, 2]), "metrics.test"),
]


def _spoiled(models: dict, role: str, spoil) -> dict:
    """``models`` with ``role``'s metadata carrying a spoiled copy of its own ``metrics.test`` block."""
    from explorer.loaders import LoadedModel

    loaded = models[role]
    metrics = {**loaded.meta.metrics, "test": spoil(json.loads(json.dumps(loaded.meta.metrics["test"])))}
    return {**models, role: LoadedModel(loaded.model, replace(loaded.meta, metrics=metrics), loaded.path, role)}


@pytest.mark.parametrize("spoil, names", ODD_TEST_METRICS, ids=[f.__name__ for f, _ in ODD_TEST_METRICS])
def test_odd_shipped_metrics_of_one_model_are_named_and_the_others_kept(spoil, names):
    from explorer import compare_view, loaders

    models = _spoiled(loaders.load_models("phantom"), "student", spoil)
    unusable = compare_view.unusable_metrics(models)
    assert list(unusable) == ["student"] and names in unusable["student"], unusable
    reports, pairs, source = compare_view.reports("phantom", models, None)  # no test images to compute them here
    assert list(reports) == ["teacher", "student_label_only"] and list(pairs) == ["student_label_only"]
    assert source == "shipped with the checkpoints (full test split)"
    labels = {role: role for role in reports}
    assert len(compare_view.metrics_table(reports, labels)) > 8
    compare_view.never_predicted_notes(reports, labels)
    assert compare_view.architecture(models["student"], ("spoiled", str(spoil)))["latency_ms"] > 0


@pytest.mark.parametrize("role, spoil", [("student", _set("accuracy", "high")), ("teacher", _whole("x")),
                                         ("student_label_only", _set("confusion_matrix", None)),
                                         ("student", _set("latency.median_ms", "fast"))],
                         ids=["student accuracy", "teacher block", "label-only matrix", "student latency"])
def test_the_compare_page_names_odd_shipped_metrics_and_goes_on(tmp_path, monkeypatch, role, spoil):
    folder = link_shipped(tmp_path)
    meta = json.loads((SHIPPED / "phantom" / f"{role}.json").read_text())
    meta["metrics"]["test"] = spoil(meta["metrics"]["test"])
    (folder / f"{role}.json").unlink()
    (folder / f"{role}.json").write_text(json.dumps(meta))
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_page("compare")
    assert_ok(at)
    from explorer.names import role_label

    notices = [w.value for w in at.warning if "cannot be used" in w.value]
    assert len(notices) == 1 and "metrics shipped with" in notices[0], [w.value for w in at.warning]
    assert role_label(role).lower() in notices[0].lower(), notices
    table = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    assert {"Teacher", "Student (distilled)"} <= set(table.columns)
    # without the teacher's or the student's report the page computes them all here; the rest shipped stands
    computed = role != "student_label_only"
    assert (role_label(role) in table.columns) == computed and ("computed here" in notices[0]) == computed, notices
    assert has_chart(at, "cm_teacher") and has_chart(at, "reliability_chart")


def _report(accuracy: float, low: float, high: float) -> dict:
    return {"accuracy": accuracy, "accuracy_ci": [low, high], "n": 960}


@pytest.mark.parametrize("teacher, p_value, said", [
    (0.95, 0.001, "The teacher is right more often: 95.0% of 960 test images (95% CI 93.0-97.0%) against the "
                  "distilled student's 90.0% (88.0-92.0%), 5.0 points; McNemar's test on the images where only one of "
                  "them is right shows the difference (p = 0.001)."),
    (0.91, 0.6, "No difference shown: the teacher is right on 91.0% of 960 test images (95% CI 93.0-97.0%), the "
                "distilled student on 90.0% (88.0-92.0%); McNemar's test on the images where only one of them is "
                "right does not show one (p = 0.6)."),
    (0.85, 0.01, "The distilled student is right more often: 90.0% of 960 test images (95% CI 88.0-92.0%) against "
                 "the teacher's 85.0% (93.0-97.0%), 5.0 points; McNemar's test on the images where only one of them "
                 "is right shows the difference (p = 0.01).")])
def test_the_answer_says_which_model_is_better_by_how_much_and_how_sure(teacher, p_value, said):
    from explorer import compare_view

    reports = {"teacher": _report(teacher, 0.93, 0.97), "student": _report(0.90, 0.88, 0.92)}
    pairs = {"student": {"agreement": 0.93, "mcnemar": {"p_value": p_value}}}
    assert compare_view.answer(reports, pairs) == said + " They give the same class on 93.0% of them."


def test_the_compare_page_answers_first_from_the_shipped_metrics():
    at = open_page("compare")
    assert_ok(at)
    meta = checkpoints.load_meta(ROOT / "checkpoints" / "phantom" / "student.json")
    test = meta.metrics["test"]
    shown = as_read(texts(at))
    assert f"{test['vs_teacher']['agreement']:.1%} of them" in shown
    assert f"p = {test['vs_teacher']['mcnemar']['p_value']:.2g}" in shown
