"""Teacher vs student page on phantom: architecture, metrics with intervals, charts, flips and the gallery."""

import json

from explorer import analysis, loaders
from tests.apptest_support import (assert_ok, fresh_streamlit_caches, has_chart, link_shipped, open_page,  # noqa: F401
                                   texts)


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


def test_gallery_lists_disagreements_and_opens_explanations():
    at = open_page("compare")
    at.slider(key="cmp_limit").set_value(64).run()
    assert_ok(at)
    paths = tuple(str(p) for p in loaders.checkpoint_paths("phantom").values())
    preds = analysis.test_predictions("phantom", paths, 64)
    teacher, student = preds["probs"]["teacher"], preds["probs"]["student"]
    disagree = int((teacher.argmax(1) != student.argmax(1)).sum())
    wrong = int(((student.argmax(1) != preds["labels"]) & (student.max(1) >= 0.8)).sum())
    tabs = [t.label for t in at.tabs]
    assert tabs == [f"Teacher and student disagree ({disagree})", f"Student confidently wrong ({wrong})"]
    explain = [b for b in at.button if b.key and b.key.startswith("gallery_disagree_")]
    assert len(explain) == min(disagree, 18)
    if disagree == 0:
        assert any("None among" in s.value for s in at.success)
    else:  # an image where the two models part ways: its button opens the Explanations page
        index = int(explain[0].key.rsplit("_", 1)[1])
        explain[0].click().run()
        assert_ok(at)
        assert at.title[0].value == "Explanations side by side"
        assert at.number_input(key="image").value == index


def test_spread_over_seeds_is_shown_when_results_are_shipped(tmp_path, monkeypatch):
    spread = {"mean": 0.9, "std": 0.01, "min": 0.89, "max": 0.91, "n": 3}
    summary = {k: {m: spread for m in ("accuracy", "macro_f1", "ece", "agreement")} for k in ("student", "label_only")}
    results = {"seeds": [0, 1, 2], "chosen": {"alpha": 0.3, "temperature": 8.0}, "summary": summary}
    (link_shipped(tmp_path) / "results.json").write_text(json.dumps(results))
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_page("compare")
    assert_ok(at)
    assert "**Over 3 seeds** (KD setting chosen on validation: alpha = 0.3, T = 8.0)" in texts(at)
    table = next(d.value for d in at.dataframe if "agreement with teacher" in d.value.columns)
    assert list(table["model"]) == ["Student (distilled)", "Student (labels only)"]
    assert table["accuracy"][0] == "0.9000 ± 0.0100"


def test_official_and_pooled_splits_are_compared_when_both_are_shipped(tmp_path, monkeypatch):
    spread = {"mean": 0.9, "std": 0.01, "min": 0.89, "max": 0.91, "n": 3}
    folder = link_shipped(tmp_path)
    for sub, shift in ((folder, 0.0), (folder / "pooled", 0.08)):
        sub.mkdir(exist_ok=True)
        summary = {k: {"accuracy": {**spread, "mean": 0.7 + shift}} for k in ("student", "label_only")}
        results = {"seeds": [0, 1, 2], "chosen": {"alpha": 0.5, "temperature": 4.0}, "summary": summary,
                   "test": {"models": {"teacher": {"accuracy": 0.6 + shift}}}}
        (sub / "results.json").write_text(json.dumps(results))
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_page("compare")
    assert_ok(at)
    table = next(d.value for d in at.dataframe if "pooled split" in d.value.columns)
    assert list(table["model"]) == ["Teacher", "Student (distilled)", "Student (labels only)"]
    assert abs(table["gain from leakage (points)"][0] - 8.0) < 1e-9
    assert "pooled random split" in texts(at)


def test_no_split_comparison_without_the_pooled_results(tmp_path, monkeypatch):
    link_shipped(tmp_path)
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_page("compare")
    assert_ok(at)
    assert not any("pooled split" in d.value.columns for d in at.dataframe)
