"""The `explorer.charts` figures, cached with ``st.cache_data``: a rerun with the same numbers
(stepping back to a layer, moving an unrelated slider) reuses the built figure instead of
rebuilding it. Arguments are hashed by value, so figures of different images never mix."""

import streamlit as st

from explorer import charts

_cache = st.cache_data(max_entries=256, show_spinner=False)

class_balance = _cache(charts.class_balance)
confusion = _cache(charts.confusion)
prediction_bars = _cache(charts.prediction_bars)
per_class_bars = _cache(charts.per_class_bars)
reliability = _cache(charts.reliability)
image_with_map = _cache(charts.image_with_map)
channel_grid = _cache(charts.channel_grid)
cka_heatmap = _cache(charts.cka_heatmap)
curves = _cache(charts.curves)
timing_bars = _cache(charts.timing_bars)
