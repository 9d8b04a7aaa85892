"""Explanations: methods side by side for teacher and student, with cost, faithfulness, sanity and agreement."""

from pathlib import Path

import streamlit as st

from core.explainers import ExplainError, registered_methods
from explorer import cached_plots, chrome, explanations_view, image_prediction, loaders, names, report, state, ui
from explorer.text import plain

dataset = chrome.current_dataset()
chrome.page_header("Explanations side by side",
                   "The same image and the same class explained by both models with several methods. Each method "
                   "shows its predicted cost before it runs and its measured cost after.",
                   terms=("Feature map", "CAM", "Grad-CAM", "Saliency", "Integrated gradients", "SHAP", "LIME",
                          "Occlusion", "Teacher's evidence", "Passes (F/B)", "Deletion AUC", "Insertion AUC", "Sanity check",
                          "Pointing game", "Spearman correlation", "IoU"))
teacher, student, chosen = ui.pair_and_image_or_stop(dataset)
answer_area = st.container(key="answer")  # filled once the maps are made: the answer right under the image choice
models = {"teacher": teacher, "student": student}
xs = {role: chosen.model_input(m.meta) for role, m in models.items()}

methods_all = explanations_view.offered_methods(models)
if student.head_note:
    st.caption(f"The teacher's evidence is not offered: {plain(student.head_note)}")
state.bind("method", registered_methods(preselected=True), options=methods_all,
           parse=lambda v: [m for m in v.split(",") if m] or None)
methods = st.multiselect("Methods", methods_all, key="method", format_func=names.method_label,
                         help="feature_maps is the paper's method; KernelSHAP, LIME and occlusion run hundreds "
                              "of passes. The teacher's evidence (where the student has its head) is the teacher's "
                              "Grad-CAM as the student learnt to give it, from its one forward pass.")
state.publish("method", fmt=",".join)
gradcam_layers = {}  # role -> Grad-CAM's target layer; chosen only when Grad-CAM runs
if "grad_cam" in methods:
    for col, (role, loaded) in zip(st.columns(2), models.items()):
        choices = explanations_view.gradcam_layer_choices(loaded)
        key, param = f"exp_gradcam_{role}", f"gradcam_{role}"
        state.bind(key, list(choices)[-1], param=param, options=list(choices))
        gradcam_layers[role] = col.selectbox(
            f"Grad-CAM layer of the {names.role_label(role).lower()}", list(choices), key=key, format_func=choices.get,
            help="Grad-CAM weights this layer's feature maps by the gradient of the class score. The last layer "
                 "(the default) is the standard choice; earlier layers give finer but less class-specific maps. "
                 "CAM has no such choice: its weights are the classifier's, so it always uses the layer pooled "
                 "just before the classifier.")
        state.publish(key, param=param)
classes = teacher.meta.classes
c1, c2, c3 = st.columns([2, 1, 1])
class_options = ["teacher's prediction"] + classes
state.bind("exp_target", class_options[0], param="class", options=class_options)
target_name = c1.selectbox("Explain the class", class_options, key="exp_target",
                           help="Both models explain the same class, so their maps can be compared.")
state.publish("exp_target", param="class")
faithful = c2.checkbox("Deletion / insertion", value=True, key="exp_faithfulness",
                       help=f"{2 * (explanations_view.FAITHFULNESS_STEPS + 1)} extra forward passes per map")
sanity = c3.checkbox("Sanity check", value=True, key="exp_sanity",
                     help="Explains again with the head and last layer re-initialised (Adebayo et al. 2018)")
if not methods:
    st.info("Choose at least one method.")
    st.stop()

st.markdown("**Predicted cost** (pass count x this machine's calibrated time per pass; scoring: the "
            "deletion/insertion curves and the sanity check ticked above)")
try:
    costs = explanations_view.predicted_costs(models, methods, faithfulness=faithful, sanity=sanity,
                                              gradcam_layers=gradcam_layers)
except ExplainError as err:
    st.error(plain(err))
    st.stop()
st.dataframe(costs.table(), hide_index=True, key="exp_costs")
total = costs.total_seconds()
if total > 30:
    st.warning(f"These methods and their scoring are predicted to take about {total:.0f} s in all.")

results = state.results("explanations")
if target_name == "teacher's prediction":
    target = int(image_prediction.probabilities(teacher, teacher.version, chosen.ident, xs["teacher"]).argmax())
else:
    target = classes.index(target_name)
run_key = explanations_view.run_key(dataset, models, chosen.ident, methods, target, faithful, sanity, gradcam_layers)
asked = st.button("Explain", key="exp_run", type="primary")
if asked or (run_key not in results and explanations_view.runs_on_arrival(methods)):
    bar = st.progress(0.0, text="explaining ...")
    try:
        masks = {role: chosen.mask_at(m.meta.input_size) for role, m in models.items()}
        waiting = lambda ahead: bar.progress(0.0, explanations_view.waiting_text(ahead))  # noqa: E731
        with explanations_view.run_slot(methods, waiting):
            results[run_key] = explanations_view.explain_pair(
                models, xs, methods, target, faithfulness=faithful, sanity=sanity, masks=masks,
                gradcam_layers=gradcam_layers, on_progress=lambda f, text: bar.progress(f, text))
    except ExplainError as err:
        st.error(f"Cannot explain: {plain(err)}")
    bar.empty()
result = results.get(run_key)
if result is None:
    st.caption("Press Explain to run the methods above (the slow ones wait for it; the page runs the others by "
               "itself).")
    st.stop()

st.caption(f"Explaining class **{plain(classes[target])}**. {chosen.caption}; "
           f"{explanations_view.computed_for(run_key)}."
           + (" Green outline: the true lesion; x: the map's maximum." if chosen.mask is not None else "")
           + " Each map is min-max normalised to 0-1 (colour bar): colours compare places within one map, "
             "not across maps.")
probabilities = {role: image_prediction.probabilities(m, m.version, chosen.ident, xs[role])
                 for role, m in models.items()}
answer_area.markdown(f"**{explanations_view.answer(result, classes, probabilities)}**")
explanations_view.show_summaries(result)
opacity = st.slider("Map opacity", 0.0, 1.0, 0.55, 0.05, key="exp_opacity")
for col, role in zip(st.columns(2), models):  # once per model, above the maps of every method
    top = explanations_view.top_classes(probabilities[role], classes)
    col.caption(f"**{names.role_label(role)}** top 3: "
                + ", ".join(f"{plain(name)} {p:.1%}" for name, p in top))
for method in methods:
    st.subheader(names.method_label(method))
    for col, role in zip(st.columns(2), ("teacher", "student")):
        if role not in result.methods[method].models:
            col.caption(explanations_view.not_made(method, role))
            continue
        r, size = result.methods[method].models[role], models[role].meta.input_size
        mask = chosen.mask_at(size)
        peak = explanations_view.peak(r.heatmap) if mask is not None else None
        at = f" at {r.layer}" if r.layer else ""
        fig = cached_plots.image_with_map(chosen.pixels(size), r.heatmap, opacity, mask=mask, point=peak,
                                          title=f"{names.role_label(role)}{at}: {r.seconds * 1000:.0f} ms measured",
                                          height=300)
        ui.plot(fig, f"exp_map_{method}_{role}", col)

st.subheader("Case report")
digests = loaders.checkpoint_digests(dataset)
case = report.Case(dataset, chosen.ident, chosen.name or chosen.words, target, result, opacity, {
    role: report.ModelCase(m.meta, Path(m.path).name, digests.get(role), probabilities[role],
                           chosen.pixels(m.meta.input_size))
    for role, m in models.items()})
# Built once per result and opacity, not on every redraw: PNG encoding of every map is the slow part.
downloads = state.results("case_reports")
if (run_key, opacity) not in downloads:
    downloads[(run_key, opacity)] = (report.case_report_html(case), report.maps_zip(case))
report_html, maps_zip = downloads[(run_key, opacity)]
report_col, zip_col = st.columns(2)
report_col.download_button("Download case report (HTML)", report_html, key="exp_report",
                           file_name=report.download_name(case, "html"), mime="text/html", on_click="ignore",
                           help="One self-contained file: both models' predictions, every map above with its "
                                "scores and cost, the checkpoints (with sha256) and the library versions.")
zip_col.download_button("Download the maps (ZIP of PNG)", maps_zip, key="exp_maps_zip",
                        file_name=report.download_name(case, "zip"), mime="application/zip", on_click="ignore",
                        help="One PNG per method and model, drawn over the image as above.")
