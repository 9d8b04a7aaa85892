"""The first-visit benchmark walks every page once on the phantom, and its table marks what misses the target."""

from benchmarks import first_visit
from tests.apptest_support import fresh_streamlit_caches  # noqa: F401


def test_the_walk_renders_every_page_once_and_the_table_marks_slow_visits():
    steps = first_visit.walk(["phantom"])
    assert [s["page"] for s in steps] == ["home", *first_visit.PAGES]
    assert not [s for s in steps if s["errors"]], [s for s in steps if s["errors"]]
    assert all(s["title"] for s in steps), [s["page"] for s in steps if not s["title"]]
    assert sum(s["imported_torch"] for s in steps) <= 1  # once per process, by whichever page needs it first
    # the table: a visit over the target is bold, one within it is not
    by_page = {s["page"]: s for s in steps}
    by_page["dataset"]["seconds"], by_page["compare"]["seconds"] = first_visit.TARGET_S + 1, first_visit.TARGET_S / 2
    result = {"steps": steps, "target_s": first_visit.TARGET_S, "within_target": 7, "visits": 8,
              "created": "2026-01-01T00:00:00", "environment": {"cpu": "cpu", "cpu_count": 2, "load_average": 0.0,
                                                                "python": "3", "torch": "2"}}
    table = first_visit.markdown(result)
    assert f"**{first_visit.TARGET_S + 1:.2f}" in table
    assert f"| Teacher vs student | {first_visit.TARGET_S / 2:.2f} |" in table
