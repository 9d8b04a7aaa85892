"""Explanations page on phantom: predicted cost first, then maps, measured cost, scores and agreement."""

from tests.apptest_support import assert_ok, fresh_streamlit_caches, has_chart, open_page, texts  # noqa: F401

METHODS = ["feature_maps", "grad_cam", "saliency"]


def test_predicted_cost_is_shown_before_anything_runs():
    at = open_page("explanations", {"image": "1", "method": "grad_cam,occlusion"})
    assert_ok(at)
    assert at.multiselect(key="method").value == ["grad_cam", "occlusion"]
    costs = at.dataframe[0].value
    assert list(costs["method"]) == ["Grad-CAM", "Occlusion"]
    assert costs["teacher passes (F/B)"][0] == "1/1"
    assert int(costs["teacher passes (F/B)"][1].split("/")[0]) > 50, "occlusion needs one pass per window"
    assert (costs["student predicted s"] > 0).all()
    assert "Press Explain" in texts(at)
    assert not any(has_chart(at, f"exp_map_{m}_teacher") for m in METHODS + ["occlusion"])


def test_explain_shows_maps_costs_scores_and_lesion_checks():
    at = open_page("explanations", {"image": "1", "method": ",".join(METHODS)})  # item 1 has a lesion
    at.button(key="exp_run").click().run()
    assert_ok(at)
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
    # redrawing (here: the opacity slider) reuses the stored results instead of explaining again
    at.slider(key="exp_opacity").set_value(0.3).run()
    assert has_chart(at, "exp_map_grad_cam_student")
