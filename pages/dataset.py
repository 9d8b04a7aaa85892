"""Dataset: class balance, a sample grid per class, one image at full size (or an upload) with predictions."""

import streamlit as st

from core.roles import TEACHER
from explorer import cached_plots, chrome, familiarity, image_prediction, listing, loaders, ui
from explorer.names import role_label
from explorer.text import plain

dataset = chrome.current_dataset()
status = listing.status(dataset)
chrome.page_header(f"Dataset: {dataset}", plain(f"{status['modality']}. Source: {status['source']}. "
                                                 f"{status['split_note']}".strip()))

if status["available"]:
    st.subheader("Class balance")
    ui.plot(cached_plots.class_balance(status["counts"]), key="balance_chart")
    st.subheader("Samples per class (test split)")
    per_class = st.slider("Images per class", 2, 10, 6, key="grid_per_class")
    picked = loaders.first_per_class(dataset, per_class)
    for label, indices in sorted(picked.items()):
        cols = st.columns([1.4] + [1] * per_class, vertical_alignment="center")
        cols[0].markdown(f"**{plain(status['classes'][label])}**")
        for col, index in zip(cols[1:], indices):
            with col:
                thumb = loaders.thumbnail(dataset, index)
                if thumb is None:
                    st.caption(f"#{index} cannot be read")
                    continue
                st.image(thumb)
                st.button(f"#{index}", key=f"grid_open_{index}", on_click=ui.open_test_image, args=(index,),
                          help="Show this image at full size below")
else:
    ui.no_images_help(dataset, status["reason"])

st.subheader("One image")
chosen = ui.image_picker(dataset)
if chosen is None:
    st.stop()
left, right = st.columns([3, 2])
with left:
    full = chosen.full_size_image()
    # an upload's caption already gives its size (and any reduction while decoding); a test image's does not
    ui.show_image(full, chosen.caption if chosen.uploaded else f"{chosen.caption}; {full.size[0]}x{full.size[1]} px")
with right:
    models = ui.shipped_models_or_error(dataset)
    if models is None:
        st.stop()
    if not models:
        ui.no_checkpoints_help(dataset)
        st.stop()
    teacher = models.get(TEACHER.shipped)  # the check comes first: it says how far to trust what follows
    unusual = teacher is not None and familiarity.show(dataset, teacher, chosen.ident,
                                                       chosen.model_input(teacher.meta), chosen.uploaded)
    st.markdown("**What the models predict**")
    probs = {name: image_prediction.probabilities(m, m.version, chosen.ident, chosen.model_input(m.meta))
             for name, m in models.items()}
    for name, loaded in models.items():
        ui.prediction(role_label(name), loaded.meta.classes, probs[name], unusual)
    ui.plot(cached_plots.prediction_bars(probs, next(iter(models.values())).meta.classes), "prediction_chart")
    if chosen.uploaded:
        st.caption("An uploaded image is resized to the model's input size and normalised as in training.")
