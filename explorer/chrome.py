"""What every page draws around its content: the notice, the sidebar's dataset picker, the page header and
its folded glossary. Nothing here imports torch: Home is drawn before any page needs it.
"""

from __future__ import annotations

import streamlit as st

from explorer import listing, names, page_list, state
from explorer.text import plain

DISCLAIMER = ("For teaching and research only: not a medical device and not for diagnosis; the small models' "
              "outputs are not clinical advice.")
# Streamlit leaves 6rem above a page: on a 768 px laptop screen the Feature maps' step buttons and maps need it.
COMPACT_TOP = ("<style>.stMainBlockContainer, .block-container {padding-top: 2.5rem} "
               ".stMainBlockContainer h1 {font-size: 2.2rem; padding-top: 0.5rem}</style>")
PAPER = ("Jiang, Zhao, Wu, Chaddad. *A Knowledge Distillation-Based Approach to Enhance Transparency of "
         "Classifier Models.* AAAI-25 ([arXiv:2502.15959](https://arxiv.org/abs/2502.15959))")


def banner() -> None:
    """The teaching-and-research notice shown at the top of every page (one line at a laptop's width)."""
    st.html(COMPACT_TOP)
    st.warning(DISCLAIMER, icon=":material/school:")


def loading_notice(title: str, cold: bool):
    """On a cold server (the model code not imported yet, ``cold``), a line saying what the page is doing while its
    imports run, which would otherwise leave the page blank for many seconds; returns its slot, for the caller to
    empty when the page has drawn (None when warm: no flicker on every rerun)."""
    if not cold:
        return None
    slot = st.empty()
    slot.info(f"Opening {title}: the first page after the server starts loads torch and the models, once; this "
              "takes a few seconds.", icon=":material/hourglass_top:")
    st.session_state[_LOADING] = slot  # the page's header clears it: a page that stops early never returns here
    return slot


_LOADING = "_loading_notice"


def clear_loading_notice() -> None:
    """Empty this run's `loading_notice`, if one is shown."""
    slot = st.session_state.pop(_LOADING, None)
    if slot is not None:
        slot.empty()


def page_header(title: str, intro: str = "", terms: tuple[str, ...] = ()) -> None:
    """Title, a one-line introduction and the glossary of the ``terms`` the page uses (folded); clears the cold
    start's notice, whose place the title takes."""
    clear_loading_notice()
    st.title(title)
    if intro:
        st.caption(intro)
    if terms:
        glossary(*terms)


def _dataset_label(name: str) -> str:
    s = listing.status(name)
    parts = ["images here" if s["available"] else "no images here",
             "models shipped" if s["checkpoints"] else "no models shipped"]
    return f"{name} ({', '.join(parts)})"


def dataset_picker() -> str:
    """Sidebar choice of dataset, shared by all pages and bound to ``?dataset=``; returns the name."""
    names = listing.dataset_names()
    state.bind("dataset", listing.DEFAULT_DATASET, options=names)
    st.sidebar.selectbox("Dataset", names, key="dataset", format_func=_dataset_label,
                         help="Each dataset says whether its images are on this machine (the pages that show "
                              "or score test images need them) and whether trained models ship with the app (every "
                              "page that explains needs them). phantom is synthetic and always has both.")
    state.publish("dataset")
    s = listing.status(st.session_state["dataset"])
    st.sidebar.caption(plain(f"{s['modality']}. Classes: {', '.join(s['classes'])}."))  # a user's folder names them
    return st.session_state["dataset"]


def current_dataset() -> str:
    return st.session_state.get("dataset", listing.DEFAULT_DATASET)


def glossary(*terms: str) -> None:
    """The glossary entries of the words a page uses, folded, with a link to the whole glossary."""
    with st.expander("Words on this page"):
        for term, definition in names.glossary_entries(list(terms)):
            st.markdown(f"**{term}**: {definition}")
        st.page_link(page_list.page("glossary").link, label="The whole glossary", icon=":material/menu_book:")
