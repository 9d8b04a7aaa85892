"""Home: what the explorer shows, the paper, one card per dataset with what is available for it."""

import streamlit as st

from explorer import chrome, home_view, listing, page_list, state
from explorer.names import role_label
from explorer.text import plain

chrome.page_header("Knowledge distillation explorer",
                   "Why does a medical image classifier decide what it decides, and does a small student "
                   "network distilled from it decide for the same reasons?")
st.markdown(f"""
A large **teacher** (DenseNet121) is trained on a 4-class medical imaging task and **distilled** into a
shallow **student** of about five convolution blocks. A shallow network can be read layer by layer: its
*average feature maps* show where each layer looks. This explorer reimplements and extends
{chrome.PAPER}:

- compare teacher and student: accuracy with intervals, calibration, agreement, where they disagree;
- step through both networks layer by layer, rank the channels that drive a decision and check the ranking by ablation;
- set feature maps beside Grad-CAM, saliency, integrated gradients, SHAP, LIME and occlusion, scored for
  faithfulness, and timed against their predicted cost;
- train and distil your own small models on the synthetic `phantom` data in a few minutes (a teacher and two
  students, each trained in turn, with their curves as they learn).

The `phantom` dataset is generated in code: MRI-like head slices whose lesions come with exact masks,
so explanations can be scored against the truth. It needs no download.
""")

st.subheader("Datasets")
PER_ROW = 4
shown_names = listing.dataset_names()
cols = [col for start in range(0, len(shown_names), PER_ROW) for col in st.columns(PER_ROW)]
for col, name in zip(cols, shown_names):
    s = listing.status(name)
    with col.container(border=True):
        st.markdown(f"**{plain(name)}**  \n{plain(s['modality'])}")
        if s["available"]:
            st.markdown(f":green[images: {s['totals'].get('train', 0)} train, {s['totals'].get('test', 0)} test]")
            if s["user"]:
                st.caption(home_view.user_folder_note(s))
        else:
            st.markdown(":orange[images: not found]", help=plain(s["reason"]))
        models = s["checkpoints"]
        if models:
            acc = s["test_accuracy"]
            shown = ", ".join(role_label(r).lower() + (f" {acc[r]:.0%}" if acc.get(r) is not None else "")
                              for r in models)
            st.markdown(f":green[models: {shown}]", help=plain(s["split_note"]) or None)  # what test measures
        else:
            st.markdown(":orange[models: none shipped]")
        for role, message in s["checkpoint_errors"].items():
            st.error(f"{role_label(role)} checkpoint cannot be used: {plain(message)}", icon=":material/error:")
        st.caption(plain(f"Classes: {', '.join(s['classes'])}"))
        if st.button("Explore", key=f"home_open_{name}", disabled=not (s["available"] or models),
                     on_click=state.set_value, args=("dataset", name)):
            st.switch_page(page_list.page("dataset").link)

st.caption(home_view.OWN_DATA)
if problems := listing.folder_problems():
    with st.expander(f"{len(problems)} folder(s) found that are not datasets yet"):
        for folder, reason in problems.items():
            st.markdown(f"**{plain(folder)}**: {plain(reason)}")

st.subheader("Go to")
link_cols = st.columns(3)
for i, entry in enumerate(p for p in page_list.PAGES if p.blurb):
    link_cols[i % 3].page_link(entry.link, label=entry.blurb, icon=":material/arrow_forward:")
st.caption("Source, tests and the command-line tools: see the repository README. "
           "Datasets: Kaggle brain tumour MRI, eye disease fundus photographs, Alzheimer MRI (not redistributed).")
