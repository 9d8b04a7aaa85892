"""Timing page on phantom: a live benchmark with progress, chart, table and CSV; shipped results when present."""

import csv
import io
import json

import pytest

from core.explainers import CostEstimate
from explorer import benchmark_view
from explorer.explanations_view import PredictedCosts
from tests.apptest_support import (as_read, assert_ok, fresh_streamlit_caches, has_chart,  # noqa: F401
                                   link_shipped, open_page, texts)


def test_live_benchmark_reports_every_method_and_model():
    at = open_page("timing", {"method": "feature_maps,grad_cam"})
    assert_ok(at)
    assert "Predicted run time" in texts(at)
    at.slider(key="timing_images").set_value(1)
    at.slider(key="timing_repeats").set_value(1)
    at.button(key="timing_run").click().run()
    assert_ok(at)
    assert has_chart(at, "timing_chart_live")
    table = at.dataframe[-1].value
    assert sorted(zip(table["model"], table["method"])) == sorted(
        (m, k) for m in ("Teacher", "Student (distilled)")
        for k in ("Forward pass (prediction only)", "Feature maps", "Grad-CAM")), "friendly names, not keys"
    assert (table["median ms"] > 0).all()
    assert at.get("download_button")[0].proto.label == "Download CSV"


def test_shipped_results_are_shown_and_downloadable(tmp_path, monkeypatch):
    folder = link_shipped(tmp_path)  # the shipped models, plus the benchmark as `core.reproduce` writes it
    row = {"model": "teacher", "method": "grad_cam", "images": 8, "repeats": 5, "warmup": 1, "mean_s": 0.02,
           "median_s": 0.02, "iqr_s": 0.004, "q25_s": 0.018, "q75_s": 0.022, "forward_s": 0.015, "overhead_s": 0.005,
           "x_forward": 1.33, "passes_forward": 1, "passes_backward": 1, "bound_s": 0.016, "ratio_to_bound": 1.25,
           "input_size": "64x64", "params": "{}", "dataset": "phantom"}
    bench = {"environment": {"cpu": "test CPU", "threads": 2, "device": "cpu", "torch": "x"}, "rows": [row]}
    (folder / "timing").mkdir()
    (folder / "timing" / "bench.json").write_text(json.dumps(bench))
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_page("timing")
    assert_ok(at)
    assert "Results shipped with the checkpoints" in texts(at)
    assert has_chart(at, "timing_chart_shipped")
    assert at.dataframe[0].value["median ms"][0] == 20.0
    parsed = list(csv.DictReader(io.StringIO(benchmark_view.to_csv([row]))))
    assert parsed[0]["method"] == "grad_cam" and float(parsed[0]["median_s"]) == 0.02


def test_predicted_run_time_follows_the_benchmarks_budget_rule():
    def cost(seconds):
        return CostEstimate("m", {"forward": 1, "backward": 0}, 1, seconds)

    costs = PredictedCosts({"fast": {"teacher": cost(0.1), "student": cost(0.01)}, "slow": {"teacher": cost(2.0)}})
    # 4 images x 3 runs + 1 warm-up each for the fast ones; the slow one (24 s > budget 10 s) gets
    # int(10 / (2 x 4)) = 1 run per image and no warm-up, as it takes over a second
    expected = 0.1 * 13 + 0.01 * 13 + 2.0 * 4
    assert benchmark_view.planned_total(costs, images=4, repeats=3, budget_s=10) == pytest.approx(expected)


# --------------------------------------------------------------------------- a shipped table with odd rows

GOOD_ROW = {"model": "teacher", "method": "grad_cam", "images": 8, "repeats": 5, "warmup": 1, "mean_s": 0.02,
            "median_s": 0.02, "iqr_s": 0.004, "q25_s": 0.018, "q75_s": 0.022, "forward_s": 0.015,
            "overhead_s": 0.005, "x_forward": 1.33, "passes_forward": 1, "passes_backward": 1, "bound_s": 0.016,
            "ratio_to_bound": 1.25, "input_size": "64x64", "params": "{}", "dataset": "phantom"}


def _row(**change) -> dict:
    """GOOD_ROW with fields changed (a value of ... removes the field)."""
    return {k: v for k, v in {**GOOD_ROW, **change}.items() if v is not ...}


# rows a bench.json may hold that the page cannot draw: each is left out, the others shown
ODD_ROWS = [
    _row(median_s=...), _row(median_s="fast"), _row(median_s=None), _row(median_s=float("nan")), _row(median_s=-1.0),
    _row(iqr_s=float("inf")), _row(q25_s=...), _row(q75_s=[0.02]), _row(bound_s=True), _row(ratio_to_bound="1.2"),
    _row(x_forward=...), _row(passes_forward=1.5), _row(passes_backward="1"), _row(images=0), _row(repeats=None),
    _row(model=5), _row(model=...), _row(method=None), _row(method=["grad_cam"]), "a row", [1, 2], None,
]


def _odd_id(row) -> str:
    if not isinstance(row, dict):
        return repr(row)
    changed = sorted(k for k in set(GOOD_ROW) | set(row) if row.get(k, ...) != GOOD_ROW.get(k, ...))
    return ",".join(f"{k}={row.get(k, '...')!r}" for k in changed)


@pytest.mark.parametrize("odd", ODD_ROWS, ids=[_odd_id(r) for r in ODD_ROWS])
def test_odd_shipped_rows_are_left_out_and_counted(odd):
    student = _row(model="student", median_s=0.004, q25_s=0.003, q75_s=0.005)
    rows, left_out = benchmark_view.usable_rows([GOOD_ROW, odd, student])
    assert rows == [GOOD_ROW, student] and left_out == 1
    benchmark_view.table(rows)
    benchmark_view.speed_factors(rows)


def _ship_bench(tmp_path, monkeypatch, bench) -> None:
    folder = link_shipped(tmp_path)
    (folder / "timing").mkdir()
    (folder / "timing" / "bench.json").write_text(json.dumps(bench))
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))


def test_the_timing_page_shows_the_good_rows_and_counts_the_others(tmp_path, monkeypatch):
    _ship_bench(tmp_path, monkeypatch, {"environment": ["not", "an", "object"],
                                        "rows": [GOOD_ROW, _row(median_s="fast"), "a row"]})
    at = open_page("timing")
    assert_ok(at)
    assert at.dataframe[0].value["median ms"].tolist() == [20.0]
    notices = [w.value for w in at.warning]
    assert any("2 of the 3 shipped timing rows" in w for w in notices), notices


@pytest.mark.parametrize("bench", [{"rows": "abc"}, {"rows": [{"model": "teacher"}]}, {"rows": {"a": 1}}, [GOOD_ROW]],
                         ids=["rows a string", "no usable row", "rows an object", "a list"])
def test_a_shipped_table_without_usable_rows_is_named_and_the_page_goes_on(tmp_path, monkeypatch, bench):
    _ship_bench(tmp_path, monkeypatch, bench)
    at = open_page("timing")
    assert not at.exception, [e.value for e in at.exception]
    assert "Results shipped with the checkpoints" not in texts(at)
    notices = [as_read(w.value) for w in at.warning]  # the path is shown as text
    assert any("timing/bench.json holds no timing rows" in w for w in notices), notices
    assert [b for b in at.button if b.key == "timing_run"]  # the live benchmark is still offered


def _timed(model: str, method: str, median_ms: float, iqr_ms: float = 0.5) -> dict:
    return {"model": model, "method": method, "images": 20, "repeats": 3, "warmup": 1, "mean_s": median_ms / 1e3,
            "median_s": median_ms / 1e3, "iqr_s": iqr_ms / 1e3, "q25_s": 0.0, "q75_s": 0.0, "forward_s": 0.001,
            "overhead_s": 0.0, "x_forward": 1.0, "passes_forward": 1, "passes_backward": 0, "bound_s": 0.001,
            "ratio_to_bound": 1.0, "input_size": "128x128", "params": "{}", "dataset": "phantom"}


def test_the_timing_page_answers_first_how_much_faster_and_from_what(tmp_path, monkeypatch):
    folder = link_shipped(tmp_path)
    # the teacher's Grad-CAM 60 ms; the student's Grad-CAM 8 ms, its feature maps 10 ms (slower than its Grad-CAM)
    rows = [_timed("teacher", "grad_cam", 60.0), _timed("student", "grad_cam", 8.0), _timed("student", "feature_maps", 10.0),
            _timed("student", "teacher_evidence", 5.0)]
    (folder / "timing").mkdir()
    (folder / "timing" / "bench.json").write_text(json.dumps(
        {"environment": {"cpu": "test CPU", "threads": 2, "device": "cpu", "torch": "x"}, "rows": rows}))
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_page("timing")
    assert_ok(at)
    answer = as_read(" ".join(m.value for m in at.get("markdown") if "faster" in m.value)).replace("**", "")
    # worked by hand: 60 / 10 = 6.0x in all, 60 / 8 = 7.5x from the smaller model, 8 / 10 = 0.80x from the method
    assert "10.0 ms" in answer and "60.0 ms" in answer and "6.0x faster" in answer
    assert "7.5x from the smaller model" in answer and "0.80x from the method" in answer
    assert "below 1" in answer  # a method factor under 1 is explained, not left as a puzzle
    assert "12.0x faster" in answer  # the teacher's evidence read off the student: 60 / 5
