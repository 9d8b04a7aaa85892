"""Entry point of the explorer. Run from the repository root: ``streamlit run explorer/Home.py``.

A router only: it puts the repository root on ``sys.path`` (Streamlit adds just ``explorer/``),
draws what every page shares (banner, dataset picker) and runs the page chosen with
``st.navigation``. The pages live in the top-level ``pages/`` folder.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from explorer import chrome, runtime  # noqa: E402

PAGES = ROOT / "pages"

st.set_page_config(page_title="KD explorer", page_icon=":material/neurology:", layout="wide")
home = st.Page(PAGES / "home.py", title="Home", icon=":material/home:", default=True)
page = st.navigation({
    "Explorer": [
        home,
        st.Page(PAGES / "dataset.py", title="Dataset", icon=":material/photo_library:"),
        st.Page(PAGES / "compare.py", title="Teacher vs student", icon=":material/compare:"),
        st.Page(PAGES / "feature_maps.py", title="Feature maps", icon=":material/layers:"),
        st.Page(PAGES / "explanations.py", title="Explanations", icon=":material/visibility:"),
        st.Page(PAGES / "faithfulness.py", title="Faithfulness", icon=":material/fact_check:"),
    ],
    "Experiments": [
        st.Page(PAGES / "timing.py", title="Timing", icon=":material/timer:"),
        st.Page(PAGES / "train.py", title="Train and distil", icon=":material/model_training:"),
    ],
    "Help": [
        st.Page(PAGES / "glossary.py", title="Glossary", icon=":material/menu_book:"),
    ],
})
chrome.dataset_picker()
chrome.banner()
if page is not home:  # Home draws no chart and loads no model: pandas and torch stay out of the cold start
    runtime.import_pandas()
try:
    page.run()
finally:  # also after st.stop() or an error: what the run freed goes back to the system
    runtime.release_freed_memory()
runtime.preload_model_code()  # after the page has drawn: the import overlaps the user's reading
