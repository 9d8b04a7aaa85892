"""The `explorer.plots` figure builders, cached with ``st.cache_data``: what the pages draw (`explorer.plots` builds,
pure and untied to Streamlit; this module only caches).

A rerun with the same numbers (stepping back to a layer, moving an unrelated slider) reuses the
built figure instead of rebuilding it. Arguments are hashed by value, so figures of different
images never mix.
"""

import streamlit as st

from explorer import plots

_cache = st.cache_data(max_entries=256, show_spinner=False)

class_balance = _cache(plots.class_balance)
confusion = _cache(plots.confusion)
prediction_bars = _cache(plots.prediction_bars)
per_class_bars = _cache(plots.per_class_bars)
reliability = _cache(plots.reliability)
image_with_map = _cache(plots.image_with_map)
channel_grid = _cache(plots.channel_grid)
overlay_grid = _cache(plots.overlay_grid)
cka_heatmap = _cache(plots.cka_heatmap)
curves = _cache(plots.curves)
timing_bars = _cache(plots.timing_bars)
score_boxes = _cache(plots.score_boxes)
cascade_lines = _cache(plots.cascade_lines)
