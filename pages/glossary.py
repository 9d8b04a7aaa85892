"""Glossary: the words the other pages use, in plain sentences."""

import streamlit as st

from explorer import chrome, names
from explorer.text import plain

chrome.page_header("Glossary", "The words the other pages use, each in a sentence or two.")
query = st.text_input("Find a word", key="glossary_query", placeholder="e.g. CKA")
entries = [(t, d) for t, d in names.glossary_entries() if query.lower() in (t + " " + d).lower()]
if not entries:
    st.info(f"No entry mentions \"{plain(query)}\".")
for term, definition in entries:
    st.markdown(f"**{term}**: {definition}")
