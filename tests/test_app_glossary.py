"""The glossary: its own page with a search, and the words of each page folded under the page's title."""

from tests.apptest_support import assert_ok, fresh_streamlit_caches, open_page, texts  # noqa: F401


def test_glossary_page_lists_and_finds_words():
    at = open_page("glossary")
    assert_ok(at)
    assert "Dense block" in texts(at) and "McNemar's test" in texts(at)
    at.text_input(key="glossary_query").input("calibration").run()
    assert_ok(at)
    shown = texts(at)
    assert "ECE" in shown and "Dense block" not in shown
    at.text_input(key="glossary_query").input("no such word").run()
    assert "No entry mentions" in texts(at)


def test_pages_fold_the_words_they_use_under_their_title():
    at = open_page("feature_maps", {"image": "0"})
    assert_ok(at)
    assert any(e.label == "Words on this page" for e in at.expander)
    for term in ("Stem", "Dense block", "Transition", "CKA"):
        assert f"**{term}**" in "\n".join(m.value for m in at.markdown), term
    at = open_page("compare")
    assert "**McNemar's test**" in "\n".join(m.value for m in at.markdown)
