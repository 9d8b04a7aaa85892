"""Hostile text in the app: what users and files supply is shown as text, bounded; hostile query values fall back.

Each group is a parametrised test over a list of cases, so a new hostile input is one line in a list:

* ``MARKDOWN``: strings that Streamlit would render as bold, a link, a remote image, LaTeX, colour or an icon; they
  reach the pages as checkpoint class names (in the loader's error), data file names, query values and shipped
  benchmark files, and must be shown literally;
* ``HTML``: strings that Plotly would render as a link or markup in a chart's labels;
* ``NON_FINITE``: query values that parse as floats but are no number a slider can show.

Streamlit renders the text of ``st.markdown``, ``st.error``, captions, labels and tooltips as Markdown. A character
preceded by a backslash is shown as itself there, so "shown as text" is checked on what the page sends: every
character that could start Markdown, LaTeX or a Streamlit colour is escaped, and no icon shortcode is left whole
(Streamlit finds those after the backslashes are read: `icons`).
"""

from __future__ import annotations

import json
import re
import shutil
import string

import pytest

from explorer.text import MESSAGE_LIMIT, plain, plot_text
from tests.apptest_support import (ROOT, fresh_streamlit_caches, grey_image_tree, link_shipped, notices,  # noqa: F401
                                   open_app, open_page)

MARKDOWN = ["**bold** :smile: :streamlit:", "[x](https://example.com)", "![i](https://example.com/a.png)",
            "$x^2$ :red[colour] :material/home:"]  # each at most 40 characters: a metadata error quotes that many
HTML = ['<a href="https://example.com">x</a>', "<b>bold</b><br>", "$x^2$"]
NON_FINITE = ["nan", "inf", "-inf", "NaN", "Infinity"]

# Characters that start Markdown (emphasis, code, links, images, headings, quotes, tables), LaTeX or a Streamlit
# directive such as :red[...]: each must reach the page behind a backslash.
ACTIVE = set("\\`*_[]()!$:~<>#|")


def escaped(text: str) -> str:
    """A pattern matching ``text`` as it must reach a Markdown renderer: each active character behind a backslash
    (other punctuation may have one too: it is shown as itself either way)."""
    return "".join(f"{WORD_JOINER}?\\\\:" if c == ":" else "\\\\" + re.escape(c) if c in ACTIVE
                   else "\\\\?" + re.escape(c) if c in string.punctuation else re.escape(c) for c in text)


# What Streamlit's Markdown draws as an icon (its frontend, 1.67): ":material/" is first read as ":material_" in the
# source, then in the parsed text (backslash escapes undone) an emoji shortcode, a Material icon or the Streamlit logo.
ICON = re.compile(r":\+1:|:-1:|:[\w-]+:", re.ASCII)
WORD_JOINER = "\u2060"


def unescaped(source: str) -> str:
    """The text a Markdown parser makes of ``source``: a backslash before ASCII punctuation shows that character."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", source)


def icons(source: str) -> list[str]:
    """The shortcodes in ``source`` that Streamlit draws as an icon."""
    return ICON.findall(unescaped(source.replace(":material/", ":material_")))


def shown_as_text(source: str, text: str) -> bool:
    drawn = set(icons(source)) & set(ICON.findall(text.replace(":material/", ":material_")))
    return re.search(escaped(text), source) is not None and not drawn


# --------------------------------------------------------------------------- the helpers themselves

@pytest.mark.parametrize("text", MARKDOWN + ["a\nb # c", "<script>x</script>", "back\\slash `code` ~~del~~ |t|"])
def test_plain_escapes_every_active_character(text):
    shown = plain(text)
    assert "\n" not in shown
    assert shown_as_text(shown, text.replace("\n", " "))
    assert "](" not in shown.replace("\\]\\(", "")  # no link or image syntax is left


SHORTCODES = [":smile:", ":material/home:", ":streamlit:", ":+1: :-1:", "a:b:c:d", "x_:tada:_y", "scan:smile:.png",
              "\\:smile\\:", ":a:b:c:", "::smile::"]


@pytest.mark.parametrize("text", SHORTCODES)
def test_plain_leaves_no_icon_shortcode(text):
    assert icons(text.replace("\\", "")), "a shortcode the check cannot see"
    shown = plain(text)
    assert icons(shown) == [], shown
    assert unescaped(shown).replace(WORD_JOINER, "") == text  # the same characters, read as they were


def test_plain_keeps_short_ordinary_text():
    assert plain("glioma 12 px") == "glioma 12 px"
    assert WORD_JOINER not in plain("teacher.json: field 'classes': 4 names, 12:30")  # no shortcode to break


@pytest.mark.parametrize("size", [MESSAGE_LIMIT + 1, 10**6, 15 * 10**6])
def test_plain_truncates_long_text_with_a_count(size):
    shown = plain("a" * size)
    assert len(shown) < MESSAGE_LIMIT + 100
    assert f"{size - MESSAGE_LIMIT:,} more characters" in shown


@pytest.mark.parametrize("text", HTML)
def test_plot_text_leaves_no_markup(text):
    shown = plot_text(text)
    assert "<" not in shown and ">" not in shown and "$" not in shown
    assert shown.replace("&lt;", "<").replace("&gt;", ">").replace("&#36;", "$").replace("&amp;", "&") == text


# --------------------------------------------------------------------------- checkpoint metadata

def checkpoint_root(tmp_path, role: str, classes: list[str], field: str = "classes"):
    """The shipped phantom checkpoints, with ``role``'s metadata naming ``classes`` instead of the dataset's (or
    holding that value in another ``field``)."""
    folder = link_shipped(tmp_path)
    meta = json.loads((ROOT / "checkpoints" / "phantom" / f"{role}.json").read_text())
    meta[field] = classes
    (folder / f"{role}.json").unlink()
    (folder / f"{role}.json").write_text(json.dumps(meta))
    return tmp_path


CHECKPOINT_CASES = [(page, "teacher") for page in ("dataset", "compare", "explanations", "feature_maps", "timing")]
CHECKPOINT_CASES += [("dataset", "student_label_only"), ("compare", "student_label_only")]


@pytest.mark.parametrize("page, role", CHECKPOINT_CASES)
def test_markdown_class_names_of_a_checkpoint_are_shown_as_text(tmp_path, monkeypatch, page, role):
    monkeypatch.setenv("KD_CHECKPOINTS", str(checkpoint_root(tmp_path, role, MARKDOWN)))
    at = open_page(page, {"dataset": "phantom"})
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("cannot be loaded" in e for e in errors), errors
    for name in MARKDOWN:
        assert any(shown_as_text(e, name) for e in errors), (name, errors)
    assert not any("](https" in text for text in notices(at))


@pytest.mark.parametrize("markdown", MARKDOWN)
def test_a_markdown_role_in_checkpoint_metadata_is_shown_as_text(tmp_path, monkeypatch, markdown):
    monkeypatch.setenv("KD_CHECKPOINTS", str(checkpoint_root(tmp_path, "student", markdown, field="role")))
    at = open_app({"dataset": "phantom"})
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("checkpoint cannot be used" in e and shown_as_text(e, markdown) for e in errors), errors


# metrics blocks a checkpoint may carry: any JSON object passes the metadata check, and Home reads its accuracy
ODD_METRICS = [{"test": "x"}, {"test": []}, {"test": {"accuracy": "high"}}, {"test": {"accuracy": float("nan")}},
               {"test": {"accuracy": True}}, {"test": {"accuracy": 1e300}}]


@pytest.mark.parametrize("metrics", ODD_METRICS, ids=str)
def test_odd_metrics_in_checkpoint_metadata_leave_the_app_working(tmp_path, monkeypatch, metrics):
    monkeypatch.setenv("KD_CHECKPOINTS", str(checkpoint_root(tmp_path, "student", metrics, field="metrics")))
    at = open_app({"dataset": "phantom"})
    assert not at.exception, [e.value for e in at.exception]
    cards = [m.value for m in at.markdown if m.value.startswith(":green[models:")]
    assert cards and "student (distilled), " in cards[0].lower(), cards  # shown without an accuracy


def test_a_huge_class_list_gives_a_bounded_message(tmp_path, monkeypatch):
    classes = [letter * 250_000 for letter in "abcd"]  # 1 MB of class names, far under the metadata cap
    monkeypatch.setenv("KD_CHECKPOINTS", str(checkpoint_root(tmp_path, "teacher", classes)))
    at = open_page("compare", {"dataset": "phantom"})
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors and all(len(e) < 5_000 for e in errors), [len(e) for e in errors]
    assert any("more characters" in e for e in errors)


# --------------------------------------------------------------------------- data file names

NAME = "alzheimer"  # its checkpoints are shipped; only the images here are made up


def data_root(tmp_path, monkeypatch):
    """Five grey images per class and split under ``tmp_path``, the data root; returns the first test class folder."""
    first = grey_image_tree(tmp_path, NAME)
    monkeypatch.setenv("KD_DATA_ROOT", str(tmp_path))
    return first


def file_name(markdown: str) -> str:
    return markdown.replace("/", "_")  # a file name has no slash; the rest is as hostile as it was


@pytest.mark.parametrize("markdown", MARKDOWN)
def test_a_data_file_that_is_not_an_image_is_named_as_text(tmp_path, monkeypatch, markdown):
    folder = data_root(tmp_path, monkeypatch)
    (folder / f"{file_name(markdown)}.txt").write_text("notes")
    at = open_page("dataset", {"dataset": NAME})
    assert not at.exception
    assert any(shown_as_text(i, file_name(markdown)) for i in [i.value for i in at.info]), [i.value for i in at.info]
    assert not any("](" in text.replace("\\]\\(", "") for text in notices(at))


@pytest.mark.parametrize("markdown", MARKDOWN)
def test_an_unreadable_data_file_is_named_as_text(tmp_path, monkeypatch, markdown):
    folder = data_root(tmp_path, monkeypatch)
    name = f"{file_name(markdown)}.png"
    (folder / name).write_bytes(b"this is not a png")
    index = sorted(p.name for p in folder.iterdir()).index(name)  # files are read in sorted order within a class
    at = open_page("dataset", {"dataset": NAME, "image": str(index)})
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any("cannot be read" in w and shown_as_text(w, file_name(markdown)) for w in warnings), warnings


# --------------------------------------------------------------------------- query values

@pytest.mark.parametrize("markdown", MARKDOWN)
def test_a_query_value_is_quoted_as_text(markdown):
    at = open_app({"dataset": markdown})
    assert not at.exception
    warnings = [w.value for w in at.warning if "not valid here" in w.value]
    assert warnings and shown_as_text(warnings[0], markdown), warnings
    assert at.sidebar.selectbox(key="dataset").value == "phantom"


@pytest.mark.parametrize("value", NON_FINITE)
def test_a_non_finite_query_value_falls_back_with_a_warning(value):
    at = open_page("feature_maps", {"dataset": "phantom", "opacity": value})
    assert not at.exception, [e.value for e in at.exception]
    assert any(shown_as_text(w.value, f"opacity={value}") and "not valid here" in w.value for w in at.warning)
    assert at.slider(key="fm_opacity").value == 0.5


# --------------------------------------------------------------------------- shipped files

def bench_root(tmp_path, cpu: str, method: str):
    """The shipped phantom checkpoints with a timing file whose CPU and last method are ``cpu`` and ``method``."""
    folder = link_shipped(tmp_path)
    data = json.loads((ROOT / "checkpoints" / "phantom" / "timing" / "bench.json").read_text())
    data["environment"]["cpu"] = cpu
    last = data["rows"][-1]["method"]
    for row in data["rows"]:
        if row["method"] == last:
            row["method"] = method
    (folder / "timing").mkdir()
    (folder / "timing" / "bench.json").write_text(json.dumps(data))
    shutil.copy(ROOT / "checkpoints" / "phantom" / "timing" / "bench.csv", folder / "timing" / "bench.csv")
    return tmp_path


@pytest.mark.parametrize("markdown, html", list(zip(MARKDOWN, HTML + [HTML[0]])))
def test_a_shipped_timing_file_is_shown_as_text(tmp_path, monkeypatch, markdown, html):
    monkeypatch.setenv("KD_CHECKPOINTS", str(bench_root(tmp_path, markdown, html)))
    at = open_page("timing", {"dataset": "phantom"})
    assert not at.exception
    captions = [c.value for c in at.caption if "Measured on" in c.value]
    assert captions and shown_as_text(captions[0], markdown), captions
    charts = [c.proto.spec for c in at.get("plotly_chart") if c.proto.id.endswith("timing_chart_shipped")]
    assert charts and "<a " not in charts[0] and "<b>" not in charts[0] and "$x" not in charts[0]


@pytest.mark.parametrize("page", ["train", "dataset"])
def test_a_users_class_folders_and_modality_are_shown_as_text_in_the_sidebar(tmp_path, monkeypatch, page):
    from core import catalog
    from tests.test_folder_datasets import flat_folder

    classes = [file_name(m) for m in MARKDOWN]
    folder = flat_folder(tmp_path, "scans", classes=classes)
    modality, source = "**loud** [m](example.com) $x^2$", "[from](example.org) <b>here</b>"
    (folder / "dataset.toml").write_text(f'modality = "{modality}"\nsource = "{source}"\n')
    monkeypatch.setenv("KD_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path / "models"))
    try:
        at = open_page(page, {"dataset": "scans"})
        assert not at.exception, [e.value for e in at.exception]
        said = [c.value for c in at.sidebar.caption if "Classes" in c.value]
        assert said, [c.value for c in at.sidebar.caption]
        assert all(shown_as_text(said[0], name) for name in classes + [modality]), said
        live = [text for text in notices(at) if "](" in text.replace("\\]\\(", "")]
        assert not live, live
    finally:
        catalog.DATASETS.pop("scans", None)
