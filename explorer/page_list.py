"""The app's pages, in the order the sidebar lists them: the one list that the router (`explorer/Home.py`), Home's
links, the benchmarks and the tests read. No Streamlit here, so a benchmark can walk the pages without the app.

A page is a file ``pages/<name>.py``; its URL is ``/<name>`` (Home's is ``/``, being the default page).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PAGES_FOLDER = Path(__file__).resolve().parents[1] / "pages"


@dataclass(frozen=True)
class PageEntry:
    """One page of the app.

    Attributes:
        name: its file's stem in ``pages/`` and its URL path (``feature_maps``).
        title: what the sidebar calls it. icon: the sidebar's Material icon.
        group: the sidebar section it is listed under ("": above the sections, without a heading).
        blurb: the text of Home's link to it; None for a page Home does not link to.
        default: whether it is the page the app opens on (Home).
    """

    name: str
    title: str
    icon: str
    group: str
    blurb: str | None = None
    default: bool = False

    @property
    def file(self) -> Path:
        return PAGES_FOLDER / f"{self.name}.py"

    @property
    def link(self) -> str:
        """The page as `st.switch_page` and `st.page_link` take it: a path relative to the entry script."""
        return f"../pages/{self.name}.py"

    @property
    def url_path(self) -> str:
        return "" if self.default else self.name


PAGES: tuple[PageEntry, ...] = (
    PageEntry("home", "Home", ":material/home:", "", default=True),
    PageEntry("lesson", "Lesson", ":material/co_present:", "Explorer", "Run the lesson for a class"),
    PageEntry("dataset", "Dataset", ":material/photo_library:", "Explorer", "Browse the dataset"),
    PageEntry("compare", "Teacher vs student", ":material/compare:", "Explorer", "Teacher vs student"),
    PageEntry("feature_maps", "Feature maps", ":material/layers:", "Explorer", "Step through feature maps"),
    PageEntry("explanations", "Explanations", ":material/visibility:", "Explorer", "Compare explanations"),
    PageEntry("faithfulness", "Faithfulness", ":material/fact_check:", "Explorer", "Faithfulness over the test set"),
    PageEntry("timing", "Timing", ":material/timer:", "Experiments", "Time the explainers"),
    PageEntry("train", "Train and distil", ":material/model_training:", "Experiments", "Train and distil"),
    PageEntry("glossary", "Glossary", ":material/menu_book:", "Help"),
)


def page(name: str) -> PageEntry:
    """The page whose file is ``pages/<name>.py``."""
    for entry in PAGES:
        if entry.name == name:
            return entry
    raise KeyError(f"the app has no page {name!r}; pages: {', '.join(p.name for p in PAGES)}")


def groups() -> dict[str, list[PageEntry]]:
    """The pages by sidebar section, sections and pages in the list's order."""
    grouped: dict[str, list[PageEntry]] = {}
    for entry in PAGES:
        grouped.setdefault(entry.group, []).append(entry)
    return grouped
