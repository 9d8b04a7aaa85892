"""View state that survives reruns, page switches and sharing: session state bound to the URL.

A view is a deep link: the dataset, image, model, layer, channel and method live in
``st.query_params`` so that ``/feature_maps?dataset=phantom&image=12&layer=4`` opens exactly that
view. Each bound widget owns a session-state key; `bind` runs before the widget and `publish`
after it:

* a query parameter that changed since we last wrote it came from outside (a shared link, a
  back button), so it wins and is copied into the widget's key;
* otherwise the widget's value is written to the URL.

Streamlit drops the state of widgets that are not drawn in a run (another page is showing), so
every bound value is also kept under a private shadow key and restored from there.
Works on Streamlit 1.44+ (newer versions have ``bind="query-params"``; we do not rely on it).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import streamlit as st

from explorer.text import plain

_SEEN = "_qp_seen"  # query values as we last wrote or read them


def _shadow(key: str) -> str:
    return f"_keep_{key}"


def _valid(value: Any, options: Sequence | None, lo: int | None, hi: int | None) -> bool:
    if isinstance(value, float) and not math.isfinite(value):  # ?opacity=nan parses, but no widget can show it
        return False
    if options is not None and isinstance(value, list):
        return all(v in options for v in value)
    if options is not None and value not in options:
        return False
    if isinstance(value, (int, float)) and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        return False
    return True


def _describe(options: Sequence | None, lo, hi) -> str:
    if options is not None:
        shown = ", ".join(map(str, list(options)[:8])) + (", ..." if len(options) > 8 else "")
        return f"one of {shown}"
    return f"between {lo} and {hi}" if lo is not None and hi is not None else "a valid value"


def bind(key: str, default: Any, *, param: str | None = None, parse: Callable[[str], Any] = str,
         options: Sequence | None = None, lo: float | None = None, hi: float | None = None) -> Any:
    """Prepare ``st.session_state[key]`` for a widget bound to the query parameter ``param``.

    Call before drawing the widget (with ``key=key`` and no ``value``/``index``). An invalid URL
    value (unknown option, out of range, not a finite number, unparsable) is ignored with a warning that quotes it
    as text, so a stale or crafted link never crashes and never falls back silently.

    Returns:
        The value the widget will show.
    """
    param = param or key
    default = list(default) if isinstance(default, list) else default  # never share a mutable default
    seen = st.session_state.setdefault(_SEEN, {})
    raw = st.query_params.get(param)
    if raw is not None and raw != seen.get(param):
        seen[param] = raw
        try:
            value = parse(raw)
        except (TypeError, ValueError):
            value = None
        if value is not None and _valid(value, options, lo, hi):
            st.session_state[key] = value
        elif raw != "":
            st.warning(f"This link's {param}={plain(raw, limit=100)} is not valid here (expected "
                       f"{plain(_describe(options, lo, hi))}); showing the default instead.",
                       icon=":material/link_off:")
    if key not in st.session_state:
        kept = st.session_state.get(_shadow(key), default)
        st.session_state[key] = kept if _valid(kept, options, lo, hi) else default
    elif not _valid(st.session_state[key], options, lo, hi):
        st.session_state[key] = default
    else:
        # Written back through the Session State API: two pages may draw a widget under one key with other
        # parameters (another help text, other options); Streamlit treats that as a new widget and would start
        # it from its default unless the value was set through the API in this run.
        st.session_state[key] = st.session_state[key]
    return st.session_state[key]


def publish(key: str, param: str | None = None, fmt: Callable[[Any], str] = str) -> None:
    """Write the widget value behind ``key`` to the URL (call after drawing the widget)."""
    param = param or key
    value = st.session_state.get(key)
    st.session_state[_shadow(key)] = value
    if value is None:
        return
    text = fmt(value)
    st.session_state.setdefault(_SEEN, {})[param] = text
    if st.query_params.get(param) != text:
        st.query_params[param] = text


def set_value(key: str, value: Any) -> None:
    """Change a bound value from a callback (e.g. previous/next buttons)."""
    st.session_state[key] = value
    st.session_state[_shadow(key)] = value


def step(key: str, delta: int, lo: int, hi: int) -> None:
    """Callback for previous/next buttons: move an integer value by ``delta`` within [lo, hi]."""
    set_value(key, min(hi, max(lo, int(st.session_state.get(key, lo)) + delta)))


RESULTS_KEPT = 4  # results kept per page and session: enough to switch back and forth between a few views


class RecentResults(dict):
    """A dict that keeps only its ``limit`` most recently stored entries; storing more drops the oldest.

    Why: a page's results live in the session for as long as it is open (and Streamlit keeps a closed tab's
    session a while for reconnection), so an unbounded store grows with every run a user makes. Storing a key
    again makes it the newest. A dropped result is computed again if its view comes back.
    """

    limit = RESULTS_KEPT  # a class default, so a copy made by pickle has it before its items are stored

    def __init__(self, limit: int = RESULTS_KEPT, items=()):
        super().__init__()
        self.limit = max(1, int(limit))
        self.update(items)

    def __setitem__(self, key, value) -> None:
        super().pop(key, None)  # re-stored: it moves to the end, the newest
        super().__setitem__(key, value)
        while len(self) > self.limit:
            del self[next(iter(self))]  # dicts keep insertion order: the first key is the oldest

    def update(self, items=(), **more) -> None:
        for key, value in dict(items, **more).items():
            self[key] = value

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]


def results(name: str, limit: int = RESULTS_KEPT) -> RecentResults:
    """This user's computed results for one page, the ``limit`` most recent (`RecentResults`), kept in
    ``st.session_state`` across reruns."""
    key = f"_results_{name}"
    store = st.session_state.get(key)
    if not isinstance(store, RecentResults) or store.limit != limit:  # new, or from before a code reload
        store = RecentResults(limit, store or ())
        st.session_state[key] = store
    return store
