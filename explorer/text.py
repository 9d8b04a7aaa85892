"""What users and files supply, made safe to show: as plain text where the page renders Markdown, and in charts.

Streamlit renders the text of ``st.markdown``, ``st.error`` and the other notices, captions, widget labels, metric
values and tooltips as Markdown (HTML is escaped, but a link, a remote image, LaTeX, colour and icon shortcodes such
as ":smile:" are drawn); Plotly draws a few HTML tags in a chart's labels, links among them. A file name, a class
name in a checkpoint, a query value or a message that quotes one is the user's text, not markup: every such string
reaches the page through `plain` (notices, captions, labels) or `plot_text` (chart labels), which also cut it to a
length a browser tab draws at once. No torch and no Streamlit here: Home and the sidebar use it before any model loads.
"""

from __future__ import annotations

import html
import re

MESSAGE_LIMIT = 1_000  # characters of one supplied text shown; a 15 MB class list in an error is cut to this
LABEL_LIMIT = 200  # characters of one supplied name in a chart

# Every character that can start Markdown, GitHub's extensions (tables, strikethrough, autolinks), LaTeX ($) or a
# Streamlit directive (:red[...]); a backslash before any of them shows the character itself.
_MARKDOWN_SPECIAL = frozenset("\\`*_{}[]()#+-.!|<>~$:@")
# Streamlit draws ":smile:", ":material/home:" and ":streamlit:" as icons, and finds them in the text after the
# backslashes are read, so an escaped colon still closes one. An invisible word joiner before each colon that would
# close one leaves none whole (a chain such as "a:b:c:" included); the text reads as it was.
_SHORTCODE = re.compile(r"(:[\w+/-]+)(?=:)")
WORD_JOINER = "\u2060"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def plain(text, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` (anything; shown as ``str(text)``) to be shown literally where Streamlit renders Markdown: at most
    ``limit`` characters (then an ellipsis and how many were left out), on one line, every Markdown character
    escaped, and no icon shortcode left whole."""
    cut = _SHORTCODE.sub(r"\1" + WORD_JOINER, _cut(str(text), limit))
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in cut).replace("\r", " ").replace("\n", " ")


def plot_text(text, limit: int = LABEL_LIMIT) -> str:
    """``text`` to be shown literally in a Plotly label, title or hover text: at most ``limit`` characters, its tags
    escaped (Plotly draws <a>, <b>, <br> and a few more), and ``$`` too (a label between two is typeset as LaTeX)."""
    return html.escape(_cut(str(text), limit), quote=False).replace("$", "&#36;")
