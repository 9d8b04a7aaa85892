"""Teacher vs student: architecture, metrics with intervals, calibration, agreement, disagreement gallery."""

import streamlit as st

from core.roles import DISTILLED, TEACHER
from explorer import cached_plots, chrome, compare_view, listing, loaders, page_list, ui
from explorer.names import role_label
from explorer.text import plain

dataset = chrome.current_dataset()
chrome.page_header("Teacher vs student", "How much does the shallow student lose, where, and does it fail where "
                   "the teacher fails? Intervals are 95% bootstrap intervals over test images.",
                   terms=("Teacher", "Student", "Label-only student", "95% CI", "Balanced accuracy", "Macro F1",
                          "ECE", "Agreement", "McNemar's test"))
if not ui.models_or_help(dataset):
    st.stop()
models = ui.shipped_models_or_error(dataset)  # loaded once here and passed down
if not models:
    st.stop()

answer = compare_view.answer(*compare_view.reports(dataset, models, None)[:2])  # from the shipped metrics
if answer:
    with st.container(key="answer"):
        st.markdown(f"**{answer}**")
if note := listing.status(dataset)["split_note"]:  # what the test accuracy below measures, where it is not obvious
    st.caption(plain(note))
st.subheader("Architecture")
arch = {r: compare_view.architecture(m, m.version) for r, m in models.items()}
st.dataframe([{"model": role_label(r), "architecture": a["arch"], "layers shown": a["layers"],
               "parameters": f"{a['parameters']:,}", "GFLOPs / image": round(a["gflops"], 3),
               "latency ms / image": round(a["latency_ms"], 1), "latency": a["latency_source"],
               "input": f"{a['input_size']} px"} for r, a in arch.items()], hide_index=True, key="arch_table")
with st.expander("Layers of each model: output shape, channels, parameters, and the layer each map comes from"):
    st.caption("Measured by one forward pass at the model's input size. A layer's parameters are those added since "
               "the row above; the rows add up to the model's total.")
    for tab, (r, a) in zip(st.tabs([role_label(r) for r in arch]), arch.items()):
        tab.dataframe(a["layer_rows"], hide_index=True, key=f"arch_layers_{r}")
t_arch, s_arch = arch[TEACHER.shipped], arch[DISTILLED.shipped]
speedup = t_arch["latency_ms"] / max(s_arch["latency_ms"], 1e-9)
st.caption(f"The student has {t_arch['parameters'] / s_arch['parameters']:.0f}x fewer parameters "
           f"and its median latency on one image is {speedup:.1f}x lower ({s_arch['latency_source']}).")

preds = None
if loaders.images_available(dataset):
    choice = compare_view.prediction_limit(len(loaders.split(dataset, "test")))
    limit = st.slider("Test images predicted here (for the gallery, and for metrics when none are shipped)",
                      key="cmp_limit", **choice) if "min_value" in choice else choice["value"]
    preds = compare_view.test_predictions(dataset, models, loaders.model_versions(models), int(limit))
    ui.skipped_images_notice(preds["skipped"])
reports, pairs, source = compare_view.reports(dataset, models, preds)
for role, problem in compare_view.unusable_metrics(models).items():
    instead = "they are computed here on the test images instead" if role in reports else "they are left out"
    st.warning(f"The metrics shipped with the {role_label(role).lower()} checkpoint cannot be used "
               f"({plain(problem)}); {instead}. `python -m core.evaluate ... --write` where the data is writes them "
               "anew.", icon=":material/error:")
if not reports:
    st.info("No metrics are shipped with these checkpoints and the test images are not here to compute them. "
            "Run `python -m core.evaluate --teacher ... --student ... --write` where the data is.")
    st.stop()

if answer is None and (said := compare_view.answer(reports, pairs)):  # metrics computed here: said once known
    with st.container(key="answer"):
        st.markdown(f"**{said}**")
st.subheader("Metrics")
st.caption(f"Metrics {source}.")
for col, (role, rep) in zip(st.columns(len(reports)), reports.items()):
    ui.metric_with_ci(f"{role_label(role)}: accuracy", rep["accuracy"], rep.get("accuracy_ci"), where=col)
labels = {role: role_label(role) for role in reports}
st.dataframe(compare_view.metrics_table(reports, labels), hide_index=True, key="metrics_table")
for note in compare_view.never_predicted_notes(reports, labels):
    st.warning(note, icon=":material/visibility_off:")

official, unreadable = compare_view.shipped_results(dataset)  # read once here and passed down
pooled, pooled_unreadable = compare_view.shipped_results(dataset, "pooled")
for reason in filter(None, (unreadable, pooled_unreadable)):
    st.warning(f"The results shipped for {dataset} cannot be read ({plain(reason)}); their tables are left out. "
               f"`python -m core.reproduce {dataset}` writes them anew.", icon=":material/error:")
seeds = compare_view.seed_summary(official)
if seeds:
    st.markdown(f"**Over {len(official.seeds)} seeds** (KD setting chosen on validation: alpha = "
                f"{official.chosen.alpha}, T = {official.chosen.temperature}); the models above are the first seed.")
    st.dataframe(seeds, hide_index=True, key="seeds_table")
paired = compare_view.paired_differences(official)
if paired:
    rows, test = paired
    st.markdown("**Is the gain from the teacher?** Test accuracy of the distilled student minus each control "
                "trained from the same initialisation on the same augmented images in the same order, paired by "
                f"seed: the 95% interval and p from a {test}, and the exact sign-flip test over seeds.")
    st.dataframe(rows, hide_index=True, key="paired_table",
                 column_config={"difference (points)": st.column_config.NumberColumn(format="%+.2f"),
                                "p (paired t-test)": st.column_config.NumberColumn(format="%.3g"),
                                "p (sign flip)": st.column_config.NumberColumn(format="%.3g")})

leak = compare_view.split_comparison(official, pooled)
if isinstance(leak, str):
    st.caption(leak)
elif leak:
    st.markdown("**Official split vs the paper's pooled random split** (train and test pooled and re-split at "
                "random, same recipe; students: the mean over seeds, their spread beside the gain). Near-identical "
                "slices of one subject then sit on both sides, so the pooled number measures memory as much as "
                "skill.")
    accuracy = st.column_config.NumberColumn(format="%.4f")
    st.dataframe(leak, hide_index=True, key="leak_table",
                 column_config={"official split": accuracy, "pooled split": accuracy,
                                "gain from leakage (points)": st.column_config.NumberColumn(format="%+.1f")})

classes = next(iter(reports.values()))["classes"]
st.subheader("Confusion matrices")
for col, (role, rep) in zip(st.columns(len(reports)), reports.items()):
    ui.plot(cached_plots.confusion(rep["confusion_matrix"], classes, role_label(role)), f"cm_{role}", col)
left, right = st.columns(2)
with left:
    st.subheader("Per-class F1")
    f1 = {r: rep["per_class"]["f1"] for r, rep in reports.items()}
    ui.plot(cached_plots.per_class_bars(f1, classes, "F1"), "f1_chart")
with right:
    st.subheader("Reliability and ECE")
    ui.plot(cached_plots.reliability(reports), key="reliability_chart")

st.subheader("Agreement and flips")
for role, pair in pairs.items():
    flips = pair["flip_table"]
    st.markdown(f"**{role_label(role)}** and the teacher")  # the student a row is about, above it, not cut short
    c1, c2, c3, c4 = st.columns([2, 2, 2, 3])  # the flip table's two columns need the width
    c1.metric("Agreement with the teacher", f"{pair['agreement']:.1%}")
    c2.metric("McNemar p", f"{pair['mcnemar']['p_value']:.3g}", help="Exact test that both have the same error rate")
    c3.metric("KL(teacher || student)", f"{pair['kl_divergence']:.3f} nats")
    c4.dataframe([{"": "teacher right", "student right": flips["both_right"],
                   "student wrong": flips["teacher_right_student_wrong"]},
                  {"": "teacher wrong", "student right": flips["teacher_wrong_student_right"],
                   "student wrong": flips["both_wrong"]}], hide_index=True, key=f"flips_{role}")

st.subheader("Where they part ways")
if preds is None:
    st.info("The gallery needs the test images, which are not on this machine.")
    st.stop()
confident = st.slider("'Confident' means a student probability of at least", 0.5, 0.99, 0.8, key="cmp_confident")
found = compare_view.disagreements(preds, confident)
predicted = len(preds["labels"])  # the gallery's counts are of the images predicted here, not the whole split
tabs = st.tabs([f"Teacher and student disagree ({len(found['disagree'])} of {predicted} predicted here)",
                f"Student confidently wrong ({len(found['confidently_wrong'])} of {predicted})"])
for tab, (kind, positions) in zip(tabs, found.items()):
    with tab:
        if not positions:
            st.success("None among the images predicted here.")
        cols = st.columns(6)
        for k, pos in enumerate(positions[:18]):
            index = preds["indices"][pos]
            t, s = preds["probs"][TEACHER.shipped][pos], preds["probs"][DISTILLED.shipped][pos]
            with cols[k % 6]:
                st.image(loaders.thumbnail(dataset, index),
                         caption=f"#{index} true {plain(classes[preds['labels'][pos]])} | "
                                 f"T {plain(classes[t.argmax()])} {t.max():.0%} | "
                                 f"S {plain(classes[s.argmax()])} {s.max():.0%}")
                if st.button("Explain", key=f"gallery_{kind}_{index}"):
                    ui.open_test_image(index)
                    st.switch_page(page_list.page("explanations").link)
