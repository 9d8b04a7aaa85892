"""Checks on the values shipped files supply (checkpoint metrics, timing tables) before a page draws them: the
files are JSON a person or another version may have written, and one odd value would break a table or a chart."""

from __future__ import annotations

import math


def is_number(value) -> bool:
    """A finite int or float (JSON's true and false are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_fraction(value) -> bool:
    """A number between 0 and 1."""
    return is_number(value) and 0 <= value <= 1


def is_count(value) -> bool:
    """A whole number of at least 0."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def quoted(value) -> str:
    """A value as a notice quotes it: its repr, cut short (a file may hold megabytes there)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."
