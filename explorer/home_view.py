"""Home's words about the user's own datasets: how to bring one, and what a card says about a folder of images."""

from __future__ import annotations

from core.folder_datasets import TEST_FRACTION
from explorer.text import plain

OWN_DATA = ("Your own images: put a folder with one sub-folder per class (or train/ and test/ with one per class) "
            "under the data root, and it is listed here; `python -m core.train --data DIR --teacher-arch resnet18` "
            "trains a teacher and its student on it and puts them where this app finds them. "
            "The README shows the three commands.")


def user_folder_note(status: dict) -> str:
    """A user's folder: where the test split comes from and what was skipped, as one caption (escaped)."""
    parts = ["your folder"]
    if status.get("layout") == "flat":
        parts.append(f"test: {TEST_FRACTION:.0%} of each class, carved at random with the run's data seed")
    if status.get("skipped"):
        parts.append(f"{status['skipped']} files that are not images skipped")
    return plain("; ".join(parts))
