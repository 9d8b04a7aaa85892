"""Timing page helpers: the live benchmark (`core.bench.run_bench`) with its predicted run time, the
shipped benchmark results, and drawing a set of benchmark rows."""

from __future__ import annotations

import csv
import io
import json

import streamlit as st

from core.bench import factor_lines, planned_seconds, run_bench, speed_factors
from core.layout import dataset_folder, timing_file
from explorer import cached_plots, loaders, ui
from explorer.explanations_view import PredictedCosts
from explorer.loaders import LoadedModel
from explorer.names import label
from explorer.shipped_values import is_count, is_number
from explorer.text import plain

WARMUP = 1  # untimed runs on the first image of each method, as `run_live` asks the benchmark for


def planned_total(costs: PredictedCosts, images: int, repeats: int, budget_s: float) -> float:
    """Predicted seconds of `run_live`: `core.bench.planned_seconds` (the benchmark's own budget rule,
    warm-up included) summed over every method and model."""
    return sum(planned_seconds(cost.predicted_seconds, images, repeats, WARMUP, budget_s)
               for per_role in costs.estimates.values() for cost in per_role.values())


def run_live(dataset: str, teacher: LoadedModel, student: LoadedModel, methods: list[str], images: int,
             repeats: int, budget_s: float, on_progress=None) -> list[dict]:
    """`core.bench.run_bench` on the shipped pair over ``images`` test images (raises `core.bench.BenchError`).

    The benchmark loads its own copies of the checkpoints, so the app's shared models get no hooks.
    """
    return run_bench(dataset, teacher.path, student.path, images=int(images), methods=list(methods),
                     repeats=int(repeats), warmup=WARMUP, budget_s=float(budget_s), on_progress=on_progress)


def answer(rows: list[dict]) -> str | None:
    """How much faster the student's one-pass maps are than the teacher's Grad-CAM, and from what (the two factors
    of `core.bench.speed_factors`), in words; None without both models' Grad-CAM or a one-pass map."""
    factors = speed_factors(rows)
    if not factors or not factors["headline"]:
        return None
    median = {(r["model"], r["method"]): r for r in rows}
    parts = []
    for method, headline in factors["headline"].items():
        row, by_method = median[("student", method)], factors["method"][method]
        if not parts:
            said = (f"The {STUDENT_MAPS.get(method, method)} explain an image in {_ms(row)}, the teacher's Grad-CAM "
                    f"in {_ms(median[('teacher', 'grad_cam')])}: **{headline:.1f}x faster** "
                    f"({factors['distillation']:.1f}x from the smaller model, {by_method:.2f}x from the method: the "
                    "student's Grad-CAM over these maps")
            said += (", below 1 because on a model this small these maps cost more than the backward pass Grad-CAM "
                     "adds, so the whole speed-up is the smaller model's)." if by_method < 1 else ").")
        else:
            said = f"The {STUDENT_MAPS.get(method, method)}: {_ms(row)}, {headline:.1f}x faster."
        parts.append(said)
    shown = rows[0]
    return " ".join(parts) + f" Medians over {shown['images']} images x {shown['repeats']} runs."


STUDENT_MAPS = {"feature_maps": "student's average feature maps", "cam": "student's CAM",
                 "teacher_evidence": "teacher's evidence read off the student"}


def _ms(row: dict) -> str:
    return f"{1e3 * row['median_s']:.1f} ms (IQR {1e3 * row['iqr_s']:.1f} ms)"


def shipped_results(dataset: str) -> dict | None:
    """The shipped ``<checkpoint root>/<dataset>/timing/bench.json`` (written by `core.reproduce`), if any: its
    environment and the rows the page can draw (`usable_rows`), with a notice for what it leaves out."""
    path = timing_file(dataset_folder(dataset))
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        st.warning(f"{plain(path)} is unreadable ({plain(err)}); skipping the shipped timings.")
        return None
    rows = data.get("rows") if isinstance(data, dict) else None
    if rows == []:
        return None
    usable, left_out = usable_rows(rows if isinstance(rows, list) else [])
    if not usable:
        st.warning(f"{plain(path)} holds no timing rows the page can draw (a list of rows with every field of "
                   f"`python -m core.bench`); skipping the shipped timings. `python -m core.reproduce {dataset} "
                   "--only-timing` writes it anew.", icon=":material/error:")
        return None
    if left_out:
        st.warning(f"{left_out} of the {len(rows)} shipped timing rows are left out: fields missing or of the wrong "
                   "type.", icon=":material/error:")
    environment = data.get("environment")
    return {"rows": usable, "environment": environment if isinstance(environment, dict) else None}


# The fields of a benchmark row (`core.bench`) the page draws: names, times in seconds and ratios, counts.
ROW_NAMES = ("model", "method")
ROW_MEASURES = ("median_s", "iqr_s", "q25_s", "q75_s", "bound_s", "ratio_to_bound", "x_forward")
ROW_COUNTS = ("passes_forward", "passes_backward", "images", "repeats")


def usable_rows(rows: list) -> tuple[list[dict], int]:
    """The rows of a shipped table the page can draw, in order, and how many others it leaves out."""
    usable = [row for row in rows if _usable(row)]
    return usable, len(rows) - len(usable)


def _usable(row) -> bool:
    return (isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ROW_NAMES)
            and all(is_number(row.get(k)) and row[k] >= 0 for k in ROW_MEASURES)
            and all(is_count(row.get(k)) for k in ROW_COUNTS) and row["images"] > 0 and row["repeats"] > 0)


def run_key(dataset: str, models: dict[str, LoadedModel], methods: list[str], images: int, repeats: int,
            budget: float) -> tuple:
    """Everything a live benchmark depends on; its rows are shown only under this key."""
    return (dataset, loaders.model_versions(models), tuple(methods), int(images), int(repeats), float(budget))


def computed_for(key: tuple) -> str:
    dataset, versions, methods, images, repeats, budget = key
    files = loaders.describe_versions(versions)
    return (f"Computed for {dataset} ({files}): {len(methods)} method(s), {images} image(s), {repeats} timed "
            f"run(s) each, budget {budget:.0f} s per model and method.")


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def table(rows: list[dict]) -> list[dict]:
    """The columns a reader needs, in milliseconds."""
    return [{"model": label(r["model"]), "method": label(r["method"]), "median ms": round(1e3 * r["median_s"], 2),
             "IQR ms": round(1e3 * r["iqr_s"], 2), "passes F/B": f"{r['passes_forward']}/{r['passes_backward']}",
             "bound ms": round(1e3 * r["bound_s"], 2), "measured / bound": round(r["ratio_to_bound"], 2),
             "x forward": round(r["x_forward"], 1), "images x runs": f"{r['images']} x {r['repeats']}"}
            for r in rows]


def show(rows: list[dict], key: str, environment: dict | None = None) -> None:
    """Bars (median, IQR) per method and model, the table, and a CSV download."""
    ui.plot(cached_plots.timing_bars(rows), f"timing_chart_{key}")
    st.dataframe(table(rows), hide_index=True, key=f"timing_table_{key}")
    if environment:
        shown = {key: plain(environment.get(key), limit=200) for key in ("cpu", "threads", "device", "torch")}
        st.caption(f"Measured on {shown['cpu']} ({shown['threads']} threads, {shown['device']}), "
                   f"torch {shown['torch']}.")
    factors = factor_lines(speed_factors(rows))
    if factors:
        st.markdown("**The speed-up in two factors.** " + "; ".join(factors) + ".")
    st.caption("'measured / bound' near 1 means the method costs what its pass count predicts; "
               "'x forward' is its time in plain forward passes of the same model.")
    st.download_button("Download CSV", to_csv(rows), file_name=f"timing_{key}.csv", mime="text/csv",
                       key=f"timing_csv_{key}")
