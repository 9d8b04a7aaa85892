"""Entry point of the explorer. Run from the repository root: ``streamlit run explorer/Home.py``.

A router only: it puts the repository root on ``sys.path`` (Streamlit adds just ``explorer/``),
draws what every page shares (banner, dataset picker) and runs the page chosen with
``st.navigation``. The pages live in the top-level ``pages/`` folder, listed in `explorer.page_list`.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from core import memory  # noqa: E402
from explorer import chrome, page_list, runtime  # noqa: E402

st.set_page_config(page_title="KD explorer", page_icon=":material/neurology:", layout="wide")
routes = {entry: st.Page(entry.file, title=entry.title, icon=entry.icon, default=entry.default)
          for entry in page_list.PAGES}
home = next(route for entry, route in routes.items() if entry.default)
page = st.navigation({group: [routes[entry] for entry in entries] for group, entries in page_list.groups().items()})
chrome.dataset_picker()
chrome.banner()
if page is not home:  # Home draws no chart and loads no model: pandas and torch stay out of the cold start
    runtime.import_pandas()
loading = chrome.loading_notice(page.title, cold=page is not home and not runtime.model_code_loaded())
try:
    page.run()
finally:  # also after st.stop() or an error: what the run freed goes back to the system
    if loading is not None:
        chrome.clear_loading_notice()
    memory.release_freed_memory()
runtime.preload_model_code()  # after the page has drawn: the import overlaps the user's reading
