"""Explanations page on phantom: predicted cost first, then maps, measured cost, scores and agreement."""

import pytest

from core.costs import ScoringCost
from core.explainers import CostEstimate
from explorer import loaders
from explorer.explaining import PredictedCosts
from tests.apptest_support import assert_ok, fresh_streamlit_caches, has_chart, open_page, texts  # noqa: F401
from tests.support import ForwardCounter

METHODS = ["feature_maps", "grad_cam", "saliency"]


def test_predicted_cost_is_shown_before_anything_runs():
    at = open_page("explanations", {"image": "1", "method": "grad_cam,occlusion"})
    assert_ok(at)
    assert at.multiselect(key="method").value == ["grad_cam", "occlusion"]
    costs = at.dataframe[0].value
    assert list(costs["method"]) == ["Grad-CAM", "Occlusion"]
    assert costs["Teacher passes (F/B)"][0] == "1/1"
    assert int(costs["Teacher passes (F/B)"][1].split("/")[0]) > 50, "occlusion needs one pass per window"
    assert (costs["Student (distilled) predicted s"] > 0).all()
    assert "Press Explain" in texts(at)
    assert not any(has_chart(at, f"exp_map_{m}_teacher") for m in METHODS + ["occlusion"])


def test_predicted_costs_table_and_total_include_the_scoring():
    def cost(method, forward, backward, seconds):
        return CostEstimate(method, {"forward": forward, "backward": backward}, 1, seconds)

    costs = PredictedCosts({
        "grad_cam": {"teacher": cost("grad_cam", 1, 1, 0.0214), "student": cost("grad_cam", 1, 1, 0.002)},
        "occlusion": {"teacher": cost("occlusion", 50, 0, 1.5)}})
    assert costs.table() == [
        {"method": "Grad-CAM", "Teacher passes (F/B)": "1/1", "Teacher predicted s": 0.021,
         "Student (distilled) passes (F/B)": "1/1", "Student (distilled) predicted s": 0.002},
        {"method": "Occlusion", "Teacher passes (F/B)": "50/0", "Teacher predicted s": 1.5}]
    assert costs.total_seconds() == pytest.approx(0.0214 + 0.002 + 1.5)
    scored = PredictedCosts(costs.estimates, {"grad_cam": {"teacher": ScoringCost({"forward": 25, "backward": 3}, 0.6),
                                                            "student": ScoringCost({"forward": 25, "backward": 3}, 0.1)},
                                               "occlusion": {"teacher": ScoringCost({"forward": 172, "backward": 0}, 4.6)}})
    assert scored.table()[0]["Teacher scoring s"] == 0.6 and scored.table()[1]["Teacher scoring s"] == 4.6
    assert scored.total_seconds() == pytest.approx(0.0214 + 0.002 + 1.5 + 0.6 + 0.1 + 4.6)


def test_predicted_cost_counts_the_scoring_the_checkboxes_ask_for():
    at = open_page("explanations", {"image": "1", "method": "grad_cam,saliency"})
    assert_ok(at)
    with_scoring = at.dataframe[0].value
    assert (with_scoring["Teacher scoring s"] > with_scoring["Teacher predicted s"]).all(), \
        "22 curve forwards and 3 sanity runs cost more than one map"
    at.checkbox(key="exp_faithfulness").uncheck().run()
    at.checkbox(key="exp_sanity").uncheck().run()
    assert_ok(at)
    assert "Teacher scoring s" not in at.dataframe[0].value.columns


def test_explain_shows_maps_costs_scores_and_lesion_checks():
    at = open_page("explanations", {"image": "1", "method": ",".join(METHODS)})  # item 1 has a lesion
    assert_ok(at)
    # the page has run once, so the models it uses are the cached ones returned here
    counters = [ForwardCounter(loaders.load_model("phantom", role).model) for role in ("teacher", "student")]
    try:
        at.button(key="exp_run").click().run()
        assert_ok(at)
        explained = [c.calls for c in counters]
        for c in counters:
            c.reset()
        at.slider(key="exp_opacity").set_value(0.3).run()  # a redraw: must reuse the stored results
        assert_ok(at)
        redrawn = [c.calls for c in counters]
    finally:
        for c in counters:
            c.remove()
    assert all(n > 0 for n in explained), explained
    assert redrawn == [0, 0], "changing the opacity ran a model again"
    assert has_chart(at, "exp_map_grad_cam_student")

    score_tables = [d.value for d in at.dataframe][1:]  # after the predicted-cost table, one per method
    assert len(score_tables) == len(METHODS)
    for method, scores in zip(METHODS, score_tables):
        assert has_chart(at, f"exp_map_{method}_teacher") and has_chart(at, f"exp_map_{method}_student"), method
        rows = dict(zip(scores["score"], scores["student"]))
        assert float(rows["measured s"]) > 0 and float(rows["predicted s"]) > 0
        for name in ("deletion AUC (lower better)", "insertion AUC (higher better)", "pointing game hit",
                     "energy in lesion", "top-5% IoU with lesion"):
            assert rows[name] != "n/a", (method, name)
        assert any(name.startswith("sanity") for name in rows)
    agreement = [m for m in at.metric if m.label.startswith("Teacher-student agreement")]
    assert len(agreement) == len(METHODS)
    assert "Green outline: the true lesion" in texts(at)
