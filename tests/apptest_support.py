"""Shared helpers for the AppTest page tests (tests/test_app_*.py).

Pages are opened the way a user reaches them: run the entry ``explorer/Home.py`` once, then
``switch_page`` to the page file (paths are relative to the entry). Streamlit's caches live in the
test process, so they are cleared before every test, and the cached models the app uses are the
same objects `explorer.loaders.load_model` returns here, so a `tests.support.ForwardCounter` on
them counts the forward passes the pages run.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from explorer import page_list
from tests.support import single_thread

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "explorer" / "Home.py"
TIMEOUT = 120  # seconds per script run: pages that run torch models on 2 shared CPU cores


@pytest.fixture(autouse=True)
def fresh_streamlit_caches():
    """Every test starts with empty Streamlit caches and runs on one torch thread (the CPU is shared)."""
    st.cache_data.clear()
    st.cache_resource.clear()
    with single_thread():
        yield


def open_app(query: dict | None = None) -> AppTest:
    """Run the entry script (Home), optionally with URL query parameters."""
    at = AppTest.from_file(str(ENTRY), default_timeout=TIMEOUT)
    if query:
        at.query_params.update(query)
    return at.run()


def open_page(page: str, query: dict | None = None) -> AppTest:
    """Open ``pages/<page>.py`` through the router, optionally as a deep link with ``query``."""
    at = open_app()
    assert not at.exception, at.exception
    if query:
        at.query_params.update(query)
    return at.switch_page(page_list.page(page).link).run()


def finish_training(at: AppTest, timeout: float = 600) -> AppTest:
    """Wait for the Train page's background job to end, then rerun the page as its one-second refresh would."""
    job = at.session_state["_train_job"] if "_train_job" in at.session_state else None
    assert job is not None, "no training job was started"
    assert job.wait(timeout), f"training still {job.state} after {timeout} s"
    return at.run()


def assert_ok(at: AppTest) -> None:
    """No exception element and no error box on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def plotly_keys(at: AppTest) -> list[str]:
    """Keys of the Plotly charts on the page (the element id ends with the user key)."""
    return [c.proto.id for c in at.get("plotly_chart")]


def has_chart(at: AppTest, key: str) -> bool:
    """Whether a Plotly chart drawn with ``key=key`` is on the page."""
    return any(k.endswith(f"-{key}") for k in plotly_keys(at))


def texts(at: AppTest) -> str:
    """All markdown, caption, info and heading text on the page, joined (for 'does it say X' checks)."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [h.value for h in at.title] + [h.value for h in at.header] + [h.value for h in at.subheader]
    return "\n".join(parts)


def notices(at: AppTest) -> list[str]:
    """Every error, warning, info, success, caption and markdown text on the page (what a reader sees as Markdown)."""
    return [e.value for group in (at.error, at.warning, at.info, at.success, at.caption, at.markdown) for e in group]


def as_read(markdown: str) -> str:
    """Markdown as a reader sees it, for text the app shows through `explorer.text.plain`: a backslash before
    punctuation shows the punctuation itself."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


def link_shipped(dest: Path, dataset: str = "phantom") -> Path:
    """A checkpoint root under ``dest`` whose ``<dataset>/`` links to the shipped models (to add files beside them)."""
    from explorer import listing

    folder = dest / dataset
    folder.mkdir(parents=True, exist_ok=True)
    for path in listing.checkpoint_paths(dataset).values():
        for suffix in (".pt", ".json"):
            (folder / path.with_suffix(suffix).name).symlink_to(path.with_suffix(suffix))
    return folder


# --------------------------------------------------------------------------- upload samples

def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _head(size: int = 96) -> np.ndarray:
    """A bright disc on black, values 0..1 (looks a little like a head slice)."""
    yy, xx = np.mgrid[:size, :size]
    return ((xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 3) ** 2).astype(float) * 0.8 + 0.1


def bad_uploads() -> dict[str, tuple[str, bytes, str]]:
    """Uploads that must be refused with a message: name -> (file name, bytes, mime type)."""
    good = png_bytes(Image.fromarray((_head() * 255).astype(np.uint8), "L"))
    bomb = png_bytes(Image.new("L", (8000, 8000)))  # 64 Mpx of zeros: a 60 KB file
    return {
        "not an image": ("notes.txt", b"patient notes, certainly not pixels\n" * 20, "text/plain"),
        "truncated": ("cut.png", good[: len(good) // 2], "image/png"),
        "decompression bomb": ("bomb.png", bomb, "image/png"),
        "empty": ("empty.png", b"", "image/png"),
    }


def odd_uploads() -> dict[str, tuple[str, bytes, str]]:
    """Unusual but valid images that must be converted and used: name -> (file name, bytes, mime)."""
    head = _head()
    rgb = np.stack([head, head * 0.9, head * 0.8], -1)
    return {
        "16-bit grey": ("mri16.png", png_bytes(Image.fromarray((head * 40000).astype(np.uint16))), "image/png"),
        "CMYK": ("scan.jpg", png_bytes(Image.fromarray((rgb * 255).astype(np.uint8)).convert("CMYK"), "JPEG"),
                 "image/jpeg"),
        "RGBA": ("alpha.png", png_bytes(Image.fromarray((rgb * 255).astype(np.uint8)).convert("RGBA")), "image/png"),
        "palette": ("palette.png", png_bytes(Image.fromarray((rgb * 255).astype(np.uint8)).convert("P")), "image/png"),
        "grey": ("grey.png", png_bytes(Image.fromarray((head * 255).astype(np.uint8), "L")), "image/png"),
        "huge": ("huge.jpg", png_bytes(Image.new("RGB", (4000, 3000), (40, 40, 40)), "JPEG"), "image/jpeg"),
    }


def grey_image_tree(root, name: str, per_class: int = 5, side: int = 40, seed: int = 0):
    """``root/<name>/{train,test}/<class>/<i>.png``: ``per_class`` seeded grey noise images per class and split.

    Returns the first class's test folder (where a test puts its odd file)."""
    import numpy as np
    from PIL import Image

    from core.catalog import DATASETS

    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for cls in DATASETS[name].classes:
            folder = root / name / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8), "L").save(folder / f"{i}.png")
    return root / name / "test" / DATASETS[name].classes[0]
