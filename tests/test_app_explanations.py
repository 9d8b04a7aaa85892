"""Explanations page on phantom: predicted cost first, then maps, measured cost, scores and agreement."""

import json
import re
import threading
import time
from dataclasses import replace
from operator import attrgetter

import numpy as np
import pytest
import torch

from core import checkpoints
from core.costs import ScoringCost
from core.explain import explain
from core.explainers import EXPLAINERS, CostEstimate
from core.inference import preprocess
from explorer import explanations_view, loaders, names, runtime
from explorer.explanation_record import (Curves, Lesion, MapAgreement, MethodPair, ModelExplanation, PairExplanation,
                                         Passes, Sanity)
from explorer.explanations_view import PredictedCosts
from tests.apptest_support import ROOT, assert_ok, fresh_streamlit_caches, has_chart, open_page, texts  # noqa: F401
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

    check_summary(at, METHODS, lesion=True)
    check_top_classes(at, image=1)
    assert not [m for m in at.metric if m.label.startswith("Teacher-student agreement")], "in the summary now"
    assert "Green outline: the true lesion" in texts(at)


# The summary's headers: the score and its better direction (where the record holds it beside).
ROLE_HEADERS = {"s": attrgetter("seconds"), "deletion AUC ↓": attrgetter("curves.deletion_auc"),
                "insertion AUC ↑": attrgetter("curves.insertion_auc"), "sanity ρ ↓": attrgetter("sanity.spearman")}
LESION_HEADERS = {"pointing hit ↑": attrgetter("lesion.pointing_hit"),
                  "lesion energy ↑": attrgetter("lesion.energy"), "lesion IoU ↑": attrgetter("lesion.mask_iou")}
AGREEMENT_HEADERS = {"Agreement ρ": attrgetter("spearman"), "Agreement IoU": attrgetter("iou")}
HEADER_PX = 6.5  # width of a header character in Chromium at 1400 px (measured on a screenshot)
# Width of the page's main column in Chromium at 1400 px with the sidebar open (measured on a screenshot: 940).
MAIN_COLUMN_PX = 920


def only_result(at) -> PairExplanation:
    """The one explanation the session holds."""
    results = at.session_state["_results_explanations"]
    assert len(results) == 1, list(results)
    return next(iter(results.values()))


def same(shown, computed) -> bool:
    """A table cell equals the computed score (a score that could not be computed is an empty cell)."""
    return np.isnan(shown) if computed is None else shown == pytest.approx(computed)


def check_summary(at, methods: list[str], lesion: bool) -> None:
    """One summary table (one row per method and model) and, with a lesion, one of lesion checks, as computed;
    each fits the page at 1400 px."""
    assert len(at.dataframe) == 2 + lesion, "the predicted costs and the summaries, no per-method tables"
    result = only_result(at)
    tables = [(at.dataframe[1], {**ROLE_HEADERS, **AGREEMENT_HEADERS})]  # read-only dataframes carry no key
    if lesion:
        tables.append((at.dataframe[2], LESION_HEADERS))
    for table, expected in tables:
        summary = table.value
        rows = [(m, r) for m in methods for r in ("teacher", "student")]
        assert list(summary["Method"]) == [names.method_label(m, short=True) for m, _ in rows]
        assert list(summary["Model"]) == [names.role_label(r, short=True) for _, r in rows]
        assert list(summary.columns) == ["Method", "Model", *expected]
        for i, (method, role) in enumerate(rows):
            for header, read in expected.items():
                pair = result.methods[method]
                scores = pair.agreement if header in AGREEMENT_HEADERS else pair.models[role]
                assert same(summary[header][i], read(scores)), (method, role, header)
        columns = json.loads(table.proto.columns)
        assert columns["Method"]["pinned"], "the method stays in view when the table scrolls sideways"
        assert all(c.get("hidden") for h, c in columns.items() if h not in summary.columns)
        columns = {h: columns[h] for h in summary.columns}
        for header in summary.columns:
            assert columns[header]["help"], header
            texts = [str(v) for v in summary[header]] if header in ("Method", "Model") else ["0.000"]
            longest = max([header] + texts, key=len)
            assert columns[header]["width"] >= HEADER_PX * len(longest) + 12, f"{header!r} would be cut"
        assert sum(c["width"] for c in columns.values()) <= MAIN_COLUMN_PX, "the table would scroll at 1400 px"


def softmax(role: str, image: int):
    loaded = loaders.load_model("phantom", role)
    with torch.no_grad():
        logits = loaded.model(preprocess(loaded.meta, [loaders.sample_image("phantom", image)]))
    return torch.softmax(logits, 1)[0].numpy()


def check_top_classes(at, image: int) -> None:
    """Each model's three most probable classes, once above the maps, as the model's softmax says."""
    classes = loaders.load_model("phantom", "teacher").meta.classes
    for role in ("teacher", "student"):
        shown = [c.value for c in at.caption if c.value.startswith(f"**{names.role_label(role)}** top 3:")]
        assert len(shown) == 1, (role, shown)
        pairs = re.findall(r"([\w\\]+) (\d+\.\d)%", shown[0].split(":", 1)[1])
        probs = softmax(role, image)
        best = np.argsort(probs)[::-1][:3]
        assert [name.replace("\\", "") for name, _ in pairs] == [classes[i] for i in best], shown[0]
        percents = [float(p) for _, p in pairs]
        assert percents == pytest.approx([100 * probs[i] for i in best], abs=0.051)
        assert sum(percents) <= 100.05


def test_summary_rows_are_one_row_per_method_and_model_and_lesion_rows_only_with_a_lesion():
    def scores(seconds):
        return ModelExplanation(np.zeros((2, 2), np.float32), seconds, 0.5, Passes(1, 1), sanity=Sanity(None, ("fc",)))

    def pair(seconds, spearman, iou, **teacher_scores):
        return MethodPair({"teacher": replace(scores(seconds[0]), **teacher_scores), "student": scores(seconds[1])},
                          MapAgreement(spearman, iou))

    result = PairExplanation(1, {"grad_cam": pair((0.1, 0.2), 0.5, None), "saliency": pair((0.3, 0.4), 0.7, 0.2)})
    rows = explanations_view.summary_rows(result)
    assert [(r["Method"], r["Model"]) for r in rows] == [("Grad-CAM", "Teacher"), ("Grad-CAM", "Student"),
                                                        ("Saliency", "Teacher"), ("Saliency", "Student")]
    assert [r["s"] for r in rows] == [0.1, 0.2, 0.3, 0.4]
    assert rows[0]["sanity ρ ↓"] is None, "measured, but a constant map has no rank: an empty cell"
    assert [r["Agreement ρ"] for r in rows] == [0.5, 0.5, 0.7, 0.7] and rows[0]["Agreement IoU"] is None
    assert not [h for h in rows[0] if "deletion" in h or "insertion" in h or "lesion" in h or "pointing" in h], \
        "no column for a score that no method has"
    columns = explanations_view.summary_columns(rows)
    assert [c.header for c in columns] == list(rows[0])[2:] and all(c.help and c.width for c in columns)
    assert explanations_view.summary_rows(result, lesion=True) == [], "no lesion table without a lesion"

    result = PairExplanation(1, {"grad_cam": pair((0.1, 0.2), 0.5, None, curves=Curves(0.25, 0.75),
                                                  lesion=Lesion(None, 0.4, None)),
                                 "saliency": pair((0.3, 0.4), 0.7, 0.2)})
    rows = explanations_view.summary_rows(result)
    assert [(r["deletion AUC ↓"], r["insertion AUC ↑"]) for r in rows] == [(0.25, 0.75)] + [(None, None)] * 3
    lesion = explanations_view.summary_rows(result, lesion=True)
    assert [list(r) for r in lesion[:1]] == [["Method", "Model", "pointing hit ↑", "lesion energy ↑", "lesion IoU ↑"]]
    assert [r["lesion energy ↑"] for r in lesion] == [0.4, None, None, None]
    assert [r["pointing hit ↑"] for r in lesion] == [None] * 4, "measured, undefined"


def test_top_classes_are_the_k_most_probable_in_order():
    assert explanations_view.top_classes(np.array([0.1, 0.6, 0.05, 0.25]), ["a", "b", "c", "d"], k=3) == [
        ("b", 0.6), ("d", 0.25), ("a", 0.1)]


def test_a_grad_cam_layer_is_its_own_result_and_is_shown_for_it():
    at = open_page("explanations", {"image": "1", "method": "grad_cam"})
    at.checkbox(key="exp_faithfulness").uncheck()
    at.checkbox(key="exp_sanity").uncheck()
    at.button(key="exp_run").click().run()
    assert_ok(at)
    teacher_layer = at.selectbox(key="exp_gradcam_teacher")
    assert teacher_layer.value == "norm5", "the last feature layer, as before"
    assert at.selectbox(key="exp_gradcam_student").value == "block5"
    assert has_chart(at, "exp_map_grad_cam_teacher") and "norm5" in texts(at)

    norm5 = list(at.session_state["_results_explanations"].values())[-1]
    teacher_layer.set_value("denseblock3").run()  # a cheap method: its own run, made as the choice changes
    assert_ok(at)
    assert at.query_params["gradcam_teacher"] == "denseblock3"
    assert has_chart(at, "exp_map_grad_cam_teacher") and "Grad-CAM at Teacher denseblock3" in texts(at)
    results = [norm5, list(at.session_state["_results_explanations"].values())[-1]]
    assert results[1] is not norm5
    (last, deeper), (student_last, student_again) = (
        [r.methods["grad_cam"].models[role].heatmap for r in results] for role in ("teacher", "student"))
    size = checkpoints.load_meta(ROOT / "checkpoints" / "phantom" / "teacher.pt").input_size
    assert last.shape == deeper.shape == (size, size)  # maps at the image size the models read
    assert not np.allclose(last, deeper, atol=1e-3), "another teacher layer, another teacher map"
    assert np.array_equal(student_last, student_again), "the student's layer did not change"


def test_a_link_with_an_unknown_grad_cam_layer_warns_and_uses_the_last_layer():
    at = open_page("explanations", {"image": "1", "method": "grad_cam", "gradcam_student": "nosuch"})
    assert_ok(at)
    assert any("gradcam_student=nosuch" in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.selectbox(key="exp_gradcam_student").value == "block5"
    assert "CAM" in at.selectbox(key="exp_gradcam_teacher").help


def test_the_grad_cam_layer_choice_is_offered_only_with_grad_cam():
    at = open_page("explanations", {"image": "1", "method": "saliency,cam"})
    assert_ok(at)
    assert not [s for s in at.selectbox if s.key and s.key.startswith("exp_gradcam")]


def test_batched_backward_methods_run_in_small_batches_in_the_app(tiny_student, image32):
    """The app's integrated gradients and GradientSHAP push at most their class's ``app_batch`` images per pass
    (their memory peak grows with the batch), yet their passes are the method's own."""
    sizes = []
    handle = tiny_student.register_forward_pre_hook(lambda m, inputs: sizes.append(inputs[0].shape[0]))
    try:
        for method in ("integrated_gradients", "gradient_shap"):
            sizes.clear()
            params = explanations_view.method_params(method, None)
            exp = explain(tiny_student, image32, method, 0, predict=False, **params)
            assert max(sizes) <= params["internal_batch_size"] == EXPLAINERS[method].app_batch < 16, (method, sizes)
            assert sum(sizes) >= exp.passes["forward"], (method, sizes, exp.passes)
    finally:
        handle.remove()


# --- the server's slot for slow methods: six sessions explaining at once wait their turn, and see their place ---

def test_server_slots_serve_runs_in_order_and_count_those_ahead():
    slots = runtime.ServerSlots(1)
    order, seen, first_in = [], {}, threading.Event()
    release_first = threading.Event()

    def run(name, hold=None):
        with slots.held(lambda ahead: seen.setdefault(name, []).append(ahead), poll_s=0.02):
            order.append(name)
            if hold is not None:
                first_in.set()
                hold.wait(10)

    first = threading.Thread(target=run, args=("first", release_first))
    first.start()
    assert first_in.wait(10)
    waiting = []
    for name in ("second", "third"):  # asked in this order, while the first holds the slot
        waiting.append(threading.Thread(target=run, args=(name,)))
        waiting[-1].start()
        while slots.ahead() < len(waiting) + 1:
            time.sleep(0.01)
    release_first.set()
    for thread in [first, *waiting]:
        thread.join(10)
    assert order == ["first", "second", "third"]
    assert "first" not in seen, "a run that finds a slot free never waits"
    assert seen["second"][0] == 1 and seen["third"][0] == 2, seen
    assert slots.ahead() == 0, "every slot is free again"


def test_a_run_stopped_while_it_waits_leaves_the_line():
    slots = runtime.ServerSlots(1)

    class Stopped(Exception):
        pass

    def stop(ahead):
        raise Stopped  # what Streamlit raises in a page's run when its session reruns or goes

    with slots.held():
        with pytest.raises(Stopped):
            with slots.held(stop):
                pass
        assert slots.ahead() == 1, "the stopped run is no longer waiting"
    with pytest.raises(Stopped):
        with slots.held():
            raise Stopped
    assert slots.ahead() == 0, "a run that failed freed its slot"


@pytest.mark.parametrize("setting", ["0", "-1", "two", "1.5"])
def test_a_wrong_number_of_explaining_slots_names_the_setting(monkeypatch, setting):
    monkeypatch.setenv("KD_APP_EXPLAINERS", setting)
    with pytest.raises(ValueError, match="KD_APP_EXPLAINERS must be a whole number"):
        runtime.count_setting("KD_APP_EXPLAINERS", 1)


def test_only_runs_with_a_slow_method_take_the_slot():
    assert explanations_view.slow_run(["feature_maps", "integrated_gradients"])
    assert explanations_view.slow_run(["gradient_shap"])
    assert not explanations_view.slow_run(["feature_maps", "grad_cam", "saliency", "cam"])
    assert explanations_view.SLOW_RUNS.size == 1, "one slow run at a time by default"


def click_explain_while_another_run_explains(at, monkeypatch) -> list[str]:
    """Press Explain while another session's run holds the server's slot, which it frees once this run waits (or
    after 60 s); returns the waiting texts the page showed."""
    shown, holding, waited = [], threading.Event(), threading.Event()
    texts_of = explanations_view.waiting_text

    def waiting_text(ahead):
        shown.append(texts_of(ahead))
        waited.set()
        return shown[-1]

    def other_session():
        with explanations_view.SLOW_RUNS.held():
            holding.set()
            waited.wait(60)

    monkeypatch.setattr(explanations_view, "waiting_text", waiting_text)
    other = threading.Thread(target=other_session)
    other.start()
    assert holding.wait(10)
    try:
        at.button(key="exp_run").click().run(timeout=300)
    finally:
        waited.set()
        other.join(10)
    return shown


def test_a_slow_run_waits_for_the_one_ahead_and_says_so(monkeypatch):
    at = open_page("explanations", {"image": "1", "method": "integrated_gradients"})
    at.checkbox(key="exp_faithfulness").uncheck().run()
    at.checkbox(key="exp_sanity").uncheck().run()
    shown = click_explain_while_another_run_explains(at, monkeypatch)
    assert_ok(at)
    assert shown and "Waiting for 1 run ahead of yours" in shown[0], shown
    assert has_chart(at, "exp_map_integrated_gradients_teacher"), "explained once its turn came"
    assert explanations_view.SLOW_RUNS.ahead() == 0


def test_a_fast_run_never_waits_for_the_slot(monkeypatch):
    at = open_page("explanations", {"image": "1", "method": "grad_cam,saliency"})
    shown = click_explain_while_another_run_explains(at, monkeypatch)
    assert_ok(at)
    assert shown == [], "fast methods look as they did without the queue"
    assert has_chart(at, "exp_map_grad_cam_teacher")



def test_the_answer_names_both_predictions_where_the_maps_agree_and_which_map_removal_hurts_most():
    def model(deletion):
        return ModelExplanation(np.zeros((2, 2), np.float32), 0.1, 0.1, Passes(1, 0),
                                curves=None if deletion is None else Curves(deletion, 0.5))

    result = PairExplanation(1, {
        "feature_maps": MethodPair({"teacher": model(0.40), "student": model(0.30)}, MapAgreement(0.25, 0.1)),
        "grad_cam": MethodPair({"teacher": model(0.20), "student": model(0.35)}, MapAgreement(0.71, 0.4)),
        "saliency": MethodPair({"teacher": model(0.50), "student": model(0.60)}, MapAgreement(None, None))})
    probabilities = {"teacher": np.array([0.1, 0.8, 0.1]), "student": np.array([0.2, 0.3, 0.5])}
    said = explanations_view.answer(result, ["a", "b", "c"], probabilities)
    assert said.startswith("The teacher predicts b (80%), the student c (50%): they disagree.")
    assert "Their maps agree most with Grad-CAM (Spearman 0.71) and least with feature maps (0.25;" in said
    # deletion AUC: lower is better; the teacher's lowest is Grad-CAM's 0.20, the student's feature maps' 0.30
    assert "the teacher's with its Grad-CAM (0.20), the student's with its feature maps (0.30)" in said
    alone = PairExplanation(1, {"grad_cam": MethodPair({"teacher": model(None), "student": model(None)},
                                                       MapAgreement(0.5, 0.2))})
    said = explanations_view.answer(alone, ["a", "b", "c"], {r: probabilities["teacher"] for r in probabilities})
    assert said == ("The teacher predicts b (80%), the student b (80%): they agree. Their Grad-CAM maps rank the "
                    "image's places alike at Spearman 0.50 (1: the same order, 0: unrelated).")
