"""The browser helpers of the benchmarks and screenshots, on a fake driver (no Chromium needed).

A page that Streamlit is still re-rendering can lack a button for a moment after its text has settled; the
app-memory benchmark's walk failed on such a moment under load ("no button labelled 'Explain'").
"""

from __future__ import annotations

import pytest

import benchmarks.app_memory as app_memory
import scripts.screenshots as screenshots


class FakeButton:
    def __init__(self, text: str):
        self.text, self.clicks = text, 0

    def click(self):
        self.clicks += 1


class LateButtonDriver:
    """A page whose button ``label`` shows only from the ``appears_at``-th look on."""

    current_url = "http://localhost/explanations"

    def __init__(self, label: str, appears_at: int | None):
        self.button, self.appears_at, self.looks = FakeButton(f"play_arrow\n{label}"), appears_at, 0

    def find_elements(self, by, value):
        self.looks += 1
        shown = self.appears_at is not None and self.looks >= self.appears_at
        return [FakeButton("Other"), self.button] if shown else [FakeButton("Other")]

    def execute_script(self, *args):
        return None


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(screenshots.time, "sleep", lambda seconds: None)


def test_the_benchmark_clicks_a_button_that_appears_a_moment_late():
    driver = LateButtonDriver("Explain", appears_at=3)
    app_memory.click_button(driver, "Explain")
    assert driver.button.clicks == 1


def test_a_button_that_never_appears_is_named_in_the_error():
    driver = LateButtonDriver("Explain", appears_at=None)
    with pytest.raises(LookupError, match="'Explain'"):
        screenshots.click_button(driver, "Explain")
    assert driver.button.clicks == 0 and driver.looks > 1  # it looked again before giving up
