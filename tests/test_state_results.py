"""The per-session result stores stay bounded: each page keeps its `explorer.state.RESULTS_KEPT` newest results."""

from __future__ import annotations

import pickle

from streamlit.testing.v1 import AppTest

from explorer.state import RESULTS_KEPT, RecentResults


def test_storing_more_than_the_limit_drops_the_oldest():
    store = RecentResults(3)
    for i in range(5):
        store[f"run {i}"] = i
    assert list(store) == ["run 2", "run 3", "run 4"]


def test_storing_a_key_again_makes_it_the_newest():
    store = RecentResults(2, {"a": 1, "b": 2})
    store["a"] = 10
    store["c"] = 3
    assert store == {"a": 10, "c": 3}


def test_update_and_setdefault_keep_the_bound():
    store = RecentResults(2)
    store.update({"a": 1, "b": 2}, c=3)
    assert store.setdefault("d", 4) == 4 and store.setdefault("d", 5) == 4
    assert list(store) == ["c", "d"]


def test_a_pickled_copy_keeps_its_items_and_limit():
    copy = pickle.loads(pickle.dumps(RecentResults(2, {"a": 1, "b": 2})))
    assert copy == {"a": 1, "b": 2} and copy.limit == 2
    copy["c"] = 3
    assert list(copy) == ["b", "c"]


def _page_storing_one_result_per_run():
    import streamlit as st

    from explorer import state

    results = state.results("page")
    st.session_state["runs"] = st.session_state.get("runs", 0) + 1
    results[("run", st.session_state["runs"])] = bytes(1000)


def test_a_page_store_keeps_the_newest_results_across_reruns():
    at = AppTest.from_function(_page_storing_one_result_per_run)
    for _ in range(RESULTS_KEPT + 3):
        at.run()
    assert not at.exception
    store = at.session_state["_results_page"]
    assert isinstance(store, RecentResults)
    assert list(store) == [("run", n) for n in range(4, RESULTS_KEPT + 4)]


def test_a_plain_dict_store_from_before_is_bounded_on_first_use():
    at = AppTest.from_function(_page_storing_one_result_per_run)
    at.session_state["_results_page"] = {("old", i): i for i in range(10)}
    at.run()
    store = at.session_state["_results_page"]
    assert len(store) == RESULTS_KEPT and ("run", 1) in store and ("old", 9) in store
