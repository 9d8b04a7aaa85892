"""Timing: run the explainer benchmark live on N images; median and IQR per method and model, CSV download."""

import streamlit as st
import torch

from core.bench import BenchError
from core.explainers import registered_methods
from explorer import benchmark_view, chrome, explanations_view, loaders, names, state, ui
from explorer.text import plain

dataset = chrome.current_dataset()
chrome.page_header("Timing the explainers",
                   "Every method on teacher and student over the same images and targets: warm-up, median and IQR of "
                   "wall time per image, the pass count, and measured time over the pass-count bound.",
                   terms=("Passes (F/B)", "Feature map", "Grad-CAM", "SHAP", "Teacher's evidence"))
shipped = benchmark_view.shipped_results(dataset)
said = benchmark_view.answer(shipped["rows"]) if shipped else None
if said:
    with st.container(key="answer"):
        st.markdown(said)
if shipped:
    st.subheader("Results shipped with the checkpoints")
    benchmark_view.show(shipped["rows"], "shipped", shipped.get("environment"))

pair = ui.models_or_help(dataset)
if not pair:
    st.stop()
if not loaders.images_available(dataset):
    st.info("Running the benchmark needs this dataset's test images, which are not on this machine.")
    st.stop()
teacher, student = pair

st.subheader("Run it here")
methods_all = explanations_view.offered_methods({"teacher": teacher, "student": student})
state.bind("method", registered_methods(preselected=True), options=methods_all,
           parse=lambda v: [m for m in v.split(",") if m] or None)
methods = st.multiselect("Methods", methods_all, key="method", format_func=names.method_label)
state.publish("method", fmt=",".join)
c1, c2, c3 = st.columns(3)
n_images = c1.slider("Images", 1, 16, 4, key="timing_images", help="Spread evenly over the test split")
repeats = c2.slider("Timed runs per image", 1, 10, 3, key="timing_repeats")
budget = c3.slider("Budget per model and method (s)", 5, 120, 30, key="timing_budget",
                   help="Slower methods get fewer runs so that one method never takes much longer than this")
if not methods:
    st.info("Choose at least one method.")
    st.stop()
costs = explanations_view.predicted_costs({"teacher": teacher, "student": student}, methods)
predicted = benchmark_view.planned_total(costs, int(n_images), int(repeats), float(budget))
st.caption(f"Predicted run time: about {predicted:.0f} s (pass-count bound with the warm-up, capped by the "
           f"budget). The app runs torch on {torch.get_num_threads()} CPU thread(s) (set KD_APP_THREADS to change).")

results = state.results("timing")
run_key = benchmark_view.run_key(dataset, {"teacher": teacher, "student": student}, methods, n_images, repeats, budget)
if st.button("Run benchmark", key="timing_run", type="primary"):
    bar = st.progress(0.0, text="starting ...")
    try:
        results[run_key] = benchmark_view.run_live(
            dataset, teacher, student, methods, n_images, repeats, budget,
            on_progress=lambda done, total, label: bar.progress(done / total, text=label))
    except (BenchError, ValueError) as err:
        st.error(f"The benchmark could not run: {plain(err)}")
    bar.empty()
if results.get(run_key):
    st.subheader("Measured here")
    st.caption(benchmark_view.computed_for(run_key))
    benchmark_view.show(results[run_key], "live")
