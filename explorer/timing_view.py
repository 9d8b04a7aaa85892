"""Timing page helpers: read shipped benchmark results and draw a set of benchmark rows."""

from __future__ import annotations

import csv
import io
import json

import streamlit as st

from explorer import figures, loaders, ui


def shipped_results(dataset: str) -> dict | None:
    """The shipped ``bench.json`` (``python -m core.bench --out checkpoints/<dataset>/timing``), if any.

    ``checkpoints/<dataset>/bench.json`` is read too.
    """
    folder = loaders.checkpoint_root() / dataset
    path = next((p for p in (folder / "timing" / "bench.json", folder / "bench.json") if p.is_file()), None)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        st.warning(f"{path} is unreadable ({err}); skipping the shipped timings.")
        return None
    return data if data.get("rows") else None


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def table(rows: list[dict]) -> list[dict]:
    """The columns a reader needs, in milliseconds."""
    return [{"model": r["model"], "method": r["method"], "median ms": round(1e3 * r["median_s"], 2),
             "IQR ms": round(1e3 * r["iqr_s"], 2), "passes F/B": f"{r['passes_forward']}/{r['passes_backward']}",
             "bound ms": round(1e3 * r["bound_s"], 2), "measured / bound": round(r["ratio_to_bound"], 2),
             "x forward": round(r["x_forward"], 1), "images x runs": f"{r['images']} x {r['repeats']}"}
            for r in rows]


def show(rows: list[dict], key: str, environment: dict | None = None) -> None:
    """Bars (median, IQR) per method and model, the table, and a CSV download."""
    ui.plot(figures.timing_bars(rows), f"timing_chart_{key}")
    st.dataframe(table(rows), hide_index=True, key=f"timing_table_{key}")
    if environment:
        st.caption(f"Measured on {environment.get('cpu')} ({environment.get('threads')} threads, "
                   f"{environment.get('device')}), torch {environment.get('torch')}.")
    st.caption("'measured / bound' near 1 means the method costs what its pass count predicts; "
               "'x forward' is its time in plain forward passes of the same model.")
    st.download_button("Download CSV", to_csv(rows), file_name=f"timing_{key}.csv", mime="text/csv",
                       key=f"timing_csv_{key}")
