"""Friendly names: no raw key (grad_cam, student_label_only) reaches a chart, and the glossary answers."""

import pytest

from core.explainers import EXPLAINERS
from explorer import names, plots


def test_every_key_a_chart_carries_has_a_friendly_name():
    for key in ("teacher", "student", "student_label_only", "label_only", "forward", *EXPLAINERS):
        shown = names.label(key)
        assert shown != key and "_" not in shown, (key, shown)
    assert names.label("label_only") == names.label("student_label_only") == "Student (labels only)"
    assert names.label("something new") == "something new"


def test_chart_legends_and_axes_use_the_names():
    probs = plots.prediction_bars({"teacher": [0.9, 0.1], "student_label_only": [0.4, 0.6]}, ["a", "b"])
    assert [t.name for t in probs.data] == ["Teacher", "Student (labels only)"]
    row = {"median_s": 0.01, "q25_s": 0.009, "q75_s": 0.012}
    timing = plots.timing_bars([{**row, "model": "student", "method": "grad_cam"},
                                {**row, "model": "student", "method": "integrated_gradients"}])
    assert timing.data[0].name == "Student (distilled)"
    assert list(timing.data[0].x) == ["Grad-CAM", "Integrated gradients"]
    assert timing.layout.yaxis.type == "log" and timing.layout.yaxis.dtick == "D2"  # 1, 2, 5 in every decade
    hist = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_acc": 0.5, "val_acc": 0.4}]
    curves = plots.curves({"student_label_only": hist})
    assert {t.name for t in curves.data} == {"Student (labels only) train", "Student (labels only) val"}
    # train and validation told apart by more than the dash: a lighter shade and open markers for train
    train, val = (next(t for t in curves.data if t.name.endswith(part)) for part in ("train", "val"))
    assert train.line.dash != val.line.dash and train.opacity < (val.opacity or 1.0)
    assert train.marker.symbol != val.marker.symbol


def test_glossary_has_the_words_the_pages_use_and_refuses_unknown_ones():
    for term in ("Stem", "Dense block", "Transition", "CKA", "ECE", "McNemar's test", "Passes (F/B)"):
        assert names.GLOSSARY[term].strip()
    assert [t for t, _ in names.glossary_entries(["CKA", "ECE"])] == ["CKA", "ECE"]
    with pytest.raises(KeyError, match="Nonsense"):
        names.glossary_entries(["Nonsense"])


def test_a_model_is_named_from_its_row_of_the_roles_table_by_any_of_its_keys():
    assert names.role_label("student_label_only") == names.role_label("label_only") == "Student (labels only)"
    assert [names.role_label(k, short=True) for k in ("teacher", "student", "label_only")] == [
        "Teacher", "Student", "Label-only student"]
    assert names.role_label("smoothing") == "Student (label smoothing)"  # a control, trained but not shipped
    assert names.role_label("no_such_model") == "no_such_model"


def test_axis_titles_fit_their_charts_height():
    # a vertical title longer than its chart is cut ("...(medi"): each line of it at most 30 characters
    cascade = plots.cascade_lines({"teacher": (["classifier", "norm5"], [1.0, 0.4])})
    lines = cascade.layout.yaxis.title.text.split("<br>")
    assert all(len(line) <= 30 for line in lines), lines
