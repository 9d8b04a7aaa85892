"""Faithfulness: does each map explain its own model, and does the student's map explain the teacher?"""

import streamlit as st

from core import study_answer
from explorer import cached_plots, chrome, loaders, page_list, state, ui
from explorer import faithfulness_view as fv
from explorer.text import plain

dataset = chrome.current_dataset()
chrome.page_header("Faithfulness over the test set",
                   "Deleting the pixels a map ranks first should make the score fall fast (low deletion AUC); "
                   "inserting them into a blurred image should make it rise fast (high insertion AUC). Cross-model: "
                   "the student's map perturbs the teacher's score, the paper's implicit claim. Every method is "
                   "drawn beside a random map, a centre prior and, on the phantom, the mean lesion mask.",
                   terms=("Deletion AUC", "Insertion AUC", "Sanity check", "Pointing game", "Spearman correlation",
                          "IoU", "Teacher's evidence"))
study, unreadable = fv.shipped_study(loaders.results_json(dataset), f"{dataset}/results.json")
if unreadable:
    st.warning(f"The faithfulness study shipped for {dataset} cannot be read ({plain(unreadable)}). Rerun "
               f"`python -m core.faithfulness_study {dataset} --fresh`.", icon=":material/error:")
    st.stop()
if study is None:
    st.info(f"No faithfulness study has been shipped for {dataset}. It is written by "
            f"`python -m core.faithfulness_study {dataset}`.", icon=":material/science:")
    st.stop()
if fv.scored_other_checkpoints(study, loaders.checkpoint_digests(dataset), loaders.head_digest(dataset)):
    st.warning("This study scored other checkpoints (or another evidence head) than the ones shipped now; rerun "
               f"`python -m core.faithfulness_study {dataset}`.", icon=":material/history:")
with st.container(key="answer"):
    st.markdown(f"**{plain(study_answer.answer(study))}**")
st.caption(f"{study.images} test images ({len(study.slow_subset)} for the slow methods), {study.config.steps} "
           f"deletion/insertion steps, seed {study.config.seed}; the teacher and the student predict the same class "
           f"on {study.agreement_of_predictions:.0%} of them. Scores: {plain(study.scoring)}.")

metrics = fv.available_metrics(study)
state.bind("faith_metric", metrics[0], param="metric", options=metrics)
metric = st.selectbox("Score", metrics, key="faith_metric", format_func=lambda k: fv.METRICS[k].label)
state.publish("faith_metric", param="metric")
spec = fv.METRICS[metric]
scoring = "own"
if spec.group == "curve":
    state.bind("faith_scoring", "own", param="scoring", options=list(fv.SCORERS))
    scoring = st.radio("Which score the map perturbs", list(fv.SCORERS), key="faith_scoring", horizontal=True,
                       format_func={"own": "its own model's", "cross": "the other model's (cross-model)"}.get)
    state.publish("faith_scoring", param="scoring")

dists = fv.distributions(study, metric, scoring)
labels = {name: fv.method_label(name) for name in study.methods}
ui.plot(cached_plots.score_boxes(dists, labels, spec.label, spec.better), "faith_boxes")
rows = fv.comparison_rows(study, metric, scoring)
if rows:
    st.markdown("**Against the random map on the same images** (paired over images)")
    st.dataframe(rows, hide_index=True, key="faith_vs_random")

st.subheader("Sanity check: randomise the model from the top down")
cascade_methods = list(study.sanity)
if cascade_methods:
    state.bind("faith_cascade", cascade_methods[0], param="cascade", options=cascade_methods)
    shown = st.selectbox("Method", cascade_methods, key="faith_cascade", format_func=fv.method_label)
    state.publish("faith_cascade", param="cascade")
    ui.plot(cached_plots.cascade_lines(fv.cascades(study, shown)), "faith_cascade_chart")
    counted = fv.constant_note(study, shown)
    st.caption("A map that explains what the model learnt moves away from its trained version (correlation "
               "towards 0) as more layers are re-initialised; one that stays near 1 ignores the weights. A map that "
               "turns constant explains nothing and has no rank to correlate: the line leaves it out"
               + (f" ({counted})." if counted else "."))

st.subheader("Best and worst images")
methods = [name for name, m in study.methods.items() if not m.baseline]
c1, c2 = st.columns(2)
method = c1.selectbox("Method", methods, key="faith_extreme_method", format_func=fv.method_label)
series_keys = fv.extreme_series(study, metric, scoring, method)
series = c2.selectbox("Series", series_keys, key="faith_extreme_series", format_func=lambda s: s.label)
found = fv.extremes(study, method, metric, series)
for kind, cases in found.items():
    st.markdown(f"**{kind.capitalize()}** ({spec.better} is better)")
    cols = st.columns(max(1, len(cases)))
    for col, case in zip(cols, cases):
        with col:
            thumb = loaders.thumbnail(dataset, case["index"])
            if thumb is not None:
                st.image(thumb)
            st.caption(f"test #{case['index']}: {spec.label.lower()} {case['value']:.3f}")
            if st.button("Explain", key=f"faith_open_{kind}_{case['index']}"):
                ui.open_explanation(case["index"], method)
                st.switch_page(page_list.page("explanations").link)
