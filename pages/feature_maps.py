"""Feature maps: step teacher and student layer by layer in lock-step, rank and ablate channels, CKA."""

import streamlit as st

from core.roles import DISTILLED, TEACHER
from explorer import cached_plots, chrome, feature_maps_view, loaders, state, ui
from explorer.names import role_label

MAP_HEIGHT = 250  # px: both maps and the step buttons in one screen of a 1366 x 768 laptop
dataset = chrome.current_dataset()
chrome.page_header("Feature maps, layer by layer",
                   "A layer's average feature map (the mean over its channels) shows where it responds; one forward "
                   "pass captures every layer. Each map is scaled to 0-1 on its own: compare places, not maps.",
                   terms=("Feature map", "Stem", "Dense block", "Transition", "CKA"))
# one row for the image and the step, the maps right below it, the other controls under the maps: the step buttons
# and both maps in the first screen of a 1366 x 768 laptop
source_col, number_col, prev_col, slider_col, next_col = st.columns([2.6, 1.4, 1.1, 4.8, 1.1],
                                                                    vertical_alignment="bottom")
teacher, student, chosen = ui.pair_and_image_or_stop(dataset, columns=(source_col, number_col))
maps_area = st.container()

t_x, s_x = chosen.model_input(teacher.meta), chosen.model_input(student.meta)
t_maps = feature_maps_view.all_layer_maps(teacher, teacher.version, chosen.ident, t_x)
s_maps = feature_maps_view.all_layer_maps(student, student.version, chosen.ident, s_x)
cka = (feature_maps_view.layer_correspondence(dataset, teacher, student, (teacher.version, student.version))
       if loaders.images_available(dataset) else None)

pairings = ["same relative depth"] + (["best CKA match"] if cka else [])
state.bind("fm_pairing", pairings[0], param="pairing", options=pairings)
state.bind("fm_mode", "overlay", param="show", options=["overlay", "raw map"])
state.bind("fm_opacity", 0.5, param="opacity", parse=float, lo=0.0, hi=1.0)
pair_col, mode_col, opacity_col, outline_col = st.columns([3, 2, 2, 2], vertical_alignment="bottom")
pairing = pair_col.radio("Pair the layers by", pairings, key="fm_pairing", horizontal=True,
                         help="Relative depth walks both networks at the same pace; CKA pairs each student layer "
                              "with the teacher layer whose representation is most similar.")
state.publish("fm_pairing", param="pairing")
mode = mode_col.radio("Show", ["overlay", "raw map"], key="fm_mode", horizontal=True)
state.publish("fm_mode", param="show")
opacity = opacity_col.slider("Map opacity", 0.0, 1.0, step=0.05, key="fm_opacity", disabled=mode == "raw map")
state.publish("fm_opacity", param="opacity")
outline = ui.lesion_outline_choice(chosen, outline_col)
by_cka = pairing == "best CKA match"
n_steps = len(s_maps["labels"]) if by_cka else max(len(t_maps["labels"]), len(s_maps["labels"]))

state.bind("layer", 1, parse=int, lo=1, hi=n_steps)  # 1-based, as shown: ?layer=3 is the third step
step = int(st.session_state["layer"]) - 1
t_i, s_i = feature_maps_view.lockstep(len(t_maps["labels"]), len(s_maps["labels"]), step,
                                      cka["best_teacher"] if by_cka else None)
prev_col.button("Prev", key="layer_prev", icon=":material/chevron_left:", on_click=state.step,
                args=("layer", -1, 1, n_steps), disabled=st.session_state["layer"] == 1, shortcut="Left",
                help="The layer before (the left arrow key)")
slider_col.slider(f"Step {step + 1} of {n_steps}: teacher {t_maps['labels'][t_i]} and student "
                  f"{s_maps['labels'][s_i]}", 1, n_steps, key="layer", help="The current pair of layers")
next_col.button("Next", key="layer_next", icon=":material/chevron_right:", on_click=state.step,
                args=("layer", 1, 1, n_steps), disabled=st.session_state["layer"] == n_steps, shortcut="Right",
                help="The next layer (the right arrow key)")
state.publish("layer")
shown = {TEACHER.shipped: (teacher, t_maps, t_i), DISTILLED.shipped: (student, s_maps, s_i)}
cols = maps_area.columns(2)
for col, (name, (loaded, maps, i)) in zip(cols, shown.items()):
    size = loaded.meta.input_size
    c, h, w = maps["shapes"][i]
    probs = maps["probabilities"]
    mask = chosen.mask_at(size) if outline else None
    fig = cached_plots.image_with_map(chosen.pixels(size), maps["maps"][i], 1.0 if mode == "raw map" else opacity,
                                      mask=mask, title=f"{name}: {maps['labels'][i]} ({c} channels, {h}x{w})",
                                      height=MAP_HEIGHT)
    ui.plot(fig, f"fm_map_{name}", col)
    col.caption(f"{role_label(name)} predicts **{loaded.meta.classes[maps['predicted']]}** "
                f"({probs.max():.0%}). {chosen.caption}.")

st.subheader("Channels that drive the decision")
st.caption("Channels of the shown layer ranked by activation x gradient of the predicted class's logit. The check: "
           "zero the top k and compare the logit drop with zeroing k random channels (8 draws). This runs the model.")
models = list(shown)
state.bind("model", DISTILLED.shipped, options=models)
r1, r2, r3 = st.columns([2, 2, 2], vertical_alignment="bottom")
chosen_model = r1.radio("Model", models, key="model", horizontal=True)
state.publish("model")
state.bind("fm_k", 8, param="k", parse=int, lo=1, hi=16)
k = r2.slider("Top k", 1, 16, key="fm_k")
state.publish("fm_k", param="k")
state.bind("fm_rank", False, param="rank", parse=lambda v: v == "True", options=[True, False])
r3.toggle("Rank and ablate", key="fm_rank")
state.publish("fm_rank", param="rank")
if st.session_state["fm_rank"]:
    loaded, maps, i = shown[chosen_model]
    x = t_x if chosen_model == TEACHER.shipped else s_x
    ranked = feature_maps_view.ranked_channels(loaded, loaded.version, chosen.ident, x, maps["labels"][i], int(k))
    target = loaded.meta.classes[ranked["target"]]
    m1, m2, m3 = st.columns(3)
    m1.metric(f"Logit drop, top {len(ranked['channels'])} zeroed", f"{ranked['drop']:.3f}")
    m2.metric(f"Logit drop, {len(ranked['channels'])} random zeroed (mean)", f"{ranked['random_drop']:.3f}")
    m3.metric(f"'{target}' logit", f"{ranked['logit']:.3f}")
    verdict = "confirms" if ranked["confirms"] else "does not clearly confirm"
    st.caption(f"The ablation {verdict} the ranking (random drops: "
               f"{', '.join(f'{d:.2f}' for d in ranked['random_drops'])}; layer has {ranked['n_channels']} channels).")
    titles = [f"ch {c} ({s:+.2f})" for c, s in zip(ranked["channels"], ranked["scores"])]
    ui.plot(cached_plots.channel_grid(ranked["maps"], titles), "fm_channels")
    state.bind("channel", ranked["channels"][0], parse=int, options=ranked["channels"])
    channel = st.selectbox("Channel to enlarge", ranked["channels"], key="channel")
    state.publish("channel")
    pos = ranked["channels"].index(channel)
    ui.plot(cached_plots.image_with_map(chosen.pixels(loaded.meta.input_size), ranked["maps"][pos], opacity,
                                       title=f"{chosen_model} {maps['labels'][i]} channel {channel}", height=360),
            "fm_channel_big")

if cka:
    st.subheader("Which teacher layer does each student layer resemble?")
    st.caption(f"Linear CKA (Kornblith et al. 2019) over {cka['n_images']} test images; 1 = same representation up "
               "to rotation and scale. The outlined cell is the pair shown above.")
    ui.skipped_images_notice(cka["skipped"], " of the CKA")
    ui.plot(cached_plots.cka_heatmap(cka["matrix"], cka["teacher_layers"], cka["student_layers"], (t_i, s_i)), "fm_cka")
