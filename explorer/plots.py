"""Plotly figure builders: pure functions from numbers to `go.Figure`, with no Streamlit calls.

Pages draw the cached versions in `explorer.cached_plots`. Traces keyed by a checkpoint role (teacher,
student, student_label_only; benchmark rows use the same keys) get that role's colour; every key is shown by its
friendly name (`explorer.names.label`). Every name and title reaches Plotly through `explorer.text.plot_text`:
class names, layer names and method keys can come from checkpoints and shipped files, and Plotly would draw a
link or markup written in them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.roles import SHIPPED
from explorer.names import label
from explorer.text import plot_text

# One colour per shipped model, keyed as the app keys models (by shipped file stem), in the roles table's order.
COLORS = {r.shipped: colour for r, colour in zip(SHIPPED, ("#4C72B0", "#DD8452", "#55A868"))}
# One perceptually uniform colormap for every map over a grey scan, so that equal steps in value look like equal steps
# in colour. Over a colour photograph (a red-orange fundus) Viridis's green and yellow mix with the image's own hues
# into brown; there the maps are drawn in Ice (navy to pale cyan: also perceptually uniform and rising in lightness),
# hues such a photograph lacks.
HEAT = "Viridis"
HEAT_ON_COLOUR = "Ice"
# The mean saturation of an image's lit pixels above which it is a colour photograph (a fundus's black surround is
# left out): on the training splits, 2,861 of 2,864 fundus photographs lie above it and no MRI slice sampled.
COLOURFUL = 0.08
LIT = 40  # of 255: a pixel darker than this in every channel has no colour to speak of


def heat_scale(pixels: np.ndarray) -> str:
    """The colour scale of maps drawn over ``pixels`` (uint8 H x W x 3): `HEAT`, or `HEAT_ON_COLOUR` over a colour
    photograph."""
    px = np.asarray(pixels)
    if px.ndim != 3 or px.shape[-1] < 3 or px.size == 0:
        return HEAT
    brightest, darkest = px[..., :3].max(-1).astype(np.float32), px[..., :3].min(-1)
    lit = brightest >= LIT
    if not lit.any():
        return HEAT
    saturation = float(((brightest - darkest)[lit] / brightest[lit]).mean())
    return HEAT_ON_COLOUR if saturation > COLOURFUL else HEAT
MAP_SCALE = dict(title=dict(text="relevance<br>(0-1 per map)", side="right"), thickness=12, len=0.9)


def _names(keys: Sequence[str]) -> list[str]:
    """Names as a chart shows them: as text (`explorer.text.plot_text`)."""
    return [plot_text(k) for k in keys]


def _label(key: str) -> str:
    """A model or method key by its friendly name, as a chart shows it."""
    return plot_text(label(key))


def _compact(fig: go.Figure, height: int, title: str | None = None, top: int | None = None) -> go.Figure:
    """Tight margins; ``top`` leaves room for subplot titles."""
    top = top if top is not None else (40 if title else 10)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=top, b=10), title=plot_text(title) if title else None)
    return fig


def class_balance(counts: dict[str, dict[str, int]]) -> go.Figure:
    """Grouped bars: images per class for each split (``{split: {class: n}}``)."""
    fig = go.Figure([go.Bar(name=split, x=_names(c), y=list(c.values()), text=list(c.values()))
                     for split, c in counts.items()])
    fig.update_layout(barmode="group", yaxis_title="images", legend_title="split")
    return _compact(fig, 300)


def prediction_bars(probs: dict[str, Sequence[float]], classes: Sequence[str]) -> go.Figure:
    """Class probabilities of one image for several models (``{model: [p per class]}``)."""
    fig = go.Figure([go.Bar(name=_label(name), x=_names(classes), y=list(p), marker_color=COLORS.get(name))
                     for name, p in probs.items()])
    fig.update_layout(barmode="group", yaxis=dict(title="probability", range=[0, 1]))
    return _compact(fig, 280)


def confusion(cm: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> go.Figure:
    """Confusion matrix, rows = true class, columns = predicted, counts printed in the cells."""
    z = np.asarray(cm)
    fig = go.Figure(go.Heatmap(z=z, x=_names(classes), y=_names(classes), colorscale="Blues", showscale=False,
                               text=z, texttemplate="%{text}", hovertemplate="true %{y}<br>pred %{x}<br>%{z}"))
    fig.update_yaxes(autorange="reversed", title="true", automargin=True)
    fig.update_xaxes(title="predicted", automargin=True, tickangle=-30)
    return _compact(fig, 320, title)


def per_class_bars(values: dict[str, Sequence[float]], classes: Sequence[str], ytitle: str) -> go.Figure:
    """Grouped bars of a per-class metric for several models (``{model: [value per class]}``)."""
    fig = go.Figure([go.Bar(name=_label(name), x=_names(classes), y=list(v), marker_color=COLORS.get(name))
                     for name, v in values.items()])
    fig.update_layout(barmode="group", yaxis=dict(title=ytitle, range=[0, 1.05]))
    return _compact(fig, 300)


def reliability(reports: dict[str, dict]) -> go.Figure:
    """Reliability diagram: accuracy against mean confidence per bin, one line per model, and the diagonal."""
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                               line=dict(dash="dot", color="grey")))
    for name, rep in reports.items():
        rel = rep["reliability"]
        pts = [(c, a, n) for c, a, n in zip(rel["mean_confidence"], rel["accuracy"], rel["count"]) if c is not None]
        if pts:
            conf, acc, count = zip(*pts)
            fig.add_trace(go.Scatter(x=conf, y=acc, mode="lines+markers", name=f"{_label(name)} (ECE {rep['ece']:.3f})",
                                     marker=dict(size=[4 + 10 * np.sqrt(c / max(count)) for c in count]),
                                     line=dict(color=COLORS.get(name)), customdata=count,
                                     hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{customdata} images"))
    fig.update_layout(xaxis=dict(title="confidence", range=[0, 1]), yaxis=dict(title="accuracy", range=[0, 1.02]))
    return _compact(fig, 340)


def image_with_map(pixels: np.ndarray, heat: np.ndarray | None = None, opacity: float = 0.5,
                   mask: np.ndarray | None = None, point: tuple[int, int] | None = None,
                   title: str | None = None, height: int = 300) -> go.Figure:
    """An image (uint8 H x W x 3) with an optional heat map on top, lesion outline and a marked point.

    ``opacity=1`` shows the raw map alone; ``heat=None`` the image alone.
    """
    fig = go.Figure(go.Image(z=pixels, hoverinfo="skip"))
    if heat is not None:
        fig.add_trace(go.Heatmap(z=heat, colorscale=heat_scale(pixels), zmin=0, zmax=1, opacity=float(opacity),
                                 showscale=True,
                                 colorbar=MAP_SCALE,
                                 hovertemplate="x %{x}, y %{y}<br>%{z:.2f}<extra></extra>"))
    if mask is not None and mask.any():
        fig.add_trace(go.Contour(z=mask.astype(float), showscale=False, contours=dict(start=0.5, end=0.5, size=1,
                                 coloring="none"), line=dict(color="lime", width=2), hoverinfo="skip",
                                 name="lesion"))
    if point is not None:
        fig.add_trace(go.Scatter(x=[point[1]], y=[point[0]], mode="markers", hoverinfo="skip",
                                 marker=dict(symbol="x", size=12, color="white", line=dict(color="black", width=1))))
    fig.update_xaxes(visible=False, range=[-0.5, pixels.shape[1] - 0.5])
    fig.update_yaxes(visible=False, range=[pixels.shape[0] - 0.5, -0.5], scaleanchor="x")
    fig.update_layout(showlegend=False)
    return _compact(fig, height, title)


def channel_grid(maps: np.ndarray, titles: Sequence[str], cols: int = 4, height_per_row: int = 150) -> go.Figure:
    """Small multiples of single-channel maps (k, H, W) in [0, 1]."""
    rows = int(np.ceil(len(maps) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=_names(titles), horizontal_spacing=0.02,
                        vertical_spacing=0.08)
    for i, m in enumerate(maps):
        fig.add_trace(go.Heatmap(z=m, colorscale=HEAT, zmin=0, zmax=1, showscale=i == 0, colorbar=MAP_SCALE),
                      i // cols + 1, i % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_annotations(font_size=11)
    return _compact(fig, 40 + rows * height_per_row, top=30)


def overlay_grid(panels: Sequence[tuple[np.ndarray, np.ndarray, str]], cols: int, opacity: float = 0.5,
                 height_per_row: int = 260) -> go.Figure:
    """Small multiples of images with a map on top, one colour bar for all: ``panels`` holds (uint8 H x W x 3
    pixels, map of the same H x W in [0, 1], title) per panel, row by row; a title's lines are drawn as lines."""
    rows = int(np.ceil(len(panels) / cols))
    titles = ["<br>".join(_names(title.split("\n"))) for _, _, title in panels]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles,
                        horizontal_spacing=0.03, vertical_spacing=0.1)
    for i, (pixels, heat, _) in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(go.Image(z=pixels, hoverinfo="skip"), row, col)
        fig.add_trace(go.Heatmap(z=heat, coloraxis="coloraxis", opacity=float(opacity),
                                 hovertemplate="x %{x}, y %{y}<br>%{z:.2f}<extra></extra>"), row, col)
        fig.update_yaxes(range=[pixels.shape[0] - 0.5, -0.5], scaleanchor=f"x{i + 1 if i else ''}", row=row, col=col)
        fig.update_xaxes(range=[-0.5, pixels.shape[1] - 0.5], row=row, col=col)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    scale = heat_scale(panels[0][0]) if panels else HEAT
    fig.update_layout(coloraxis=dict(colorscale=scale, cmin=0, cmax=1, colorbar=MAP_SCALE), showlegend=False)
    fig.update_annotations(font_size=13)
    return _compact(fig, 50 + rows * height_per_row, top=50)


def cka_heatmap(matrix: np.ndarray, teacher_layers: Sequence[str], student_layers: Sequence[str],
                marked: tuple[int, int] | None = None) -> go.Figure:
    """Linear CKA between teacher layers (rows) and student layers (columns), the shown pair outlined."""
    fig = go.Figure(go.Heatmap(z=matrix, x=_names(student_layers), y=_names(teacher_layers), zmin=0, zmax=1,
                               colorscale=HEAT, text=np.round(matrix, 2), texttemplate="%{text}",
                               showscale=True, colorbar=dict(title="CKA")))
    if marked is not None:
        t, s = marked
        fig.add_shape(type="rect", x0=s - 0.5, x1=s + 0.5, y0=t - 0.5, y1=t + 0.5, line=dict(color="cyan", width=3))
    fig.update_yaxes(autorange="reversed", title="teacher layer")
    fig.update_xaxes(title="student layer")
    return _compact(fig, 380)


def curves(histories: dict[str, list[dict]]) -> go.Figure:
    """Loss and accuracy per epoch for several runs: validation solid with filled markers, train dashed, lighter
    and with open markers (one colour per run, the two curves told apart without colour too)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for name, hist in histories.items():
        ep = [r["epoch"] for r in hist]
        color = COLORS.get(name)
        for col, metric in ((1, "loss"), (2, "acc")):
            for part, dash, symbol, opacity in (("train", "dash", "circle-open", 0.55), ("val", "solid", "circle", 1.0)):
                fig.add_trace(go.Scatter(x=ep, y=[r[f"{part}_{metric}"] for r in hist], mode="lines+markers",
                                         name=f"{_label(name)} {part}", line=dict(dash=dash, color=color),
                                         marker=dict(symbol=symbol), opacity=opacity, legendgroup=name,
                                         showlegend=col == 1), 1, col)
    fig.update_xaxes(title="epoch")
    return _compact(fig, 340, top=30)


def timing_bars(rows: list[dict], height: int = 360) -> go.Figure:
    """Median seconds per method and model, error bars from the first to the third quartile.

    ``rows``: dicts with ``method``, ``model``, ``median_s``, ``q25_s``, ``q75_s``.
    """
    fig = go.Figure()
    for model in dict.fromkeys(r["model"] for r in rows):
        sel = [r for r in rows if r["model"] == model]
        med = np.array([r["median_s"] for r in sel]) * 1000
        fig.add_trace(go.Bar(
            name=_label(model), x=[_label(r["method"]) for r in sel], y=med, marker_color=COLORS.get(model),
            error_y=dict(type="data", symmetric=False, array=np.array([r["q75_s"] for r in sel]) * 1000 - med,
                         arrayminus=med - np.array([r["q25_s"] for r in sel]) * 1000)))
    # ticks at 1, 2 and 5 of each decade: times within one decade (3 to 70 ms) still get several labels
    fig.update_layout(barmode="group", yaxis=dict(title="ms per image (median, IQR)", type="log", dtick="D2"))
    return _compact(fig, height)


BASELINE_COLOR = "#9E9E9E"


def score_boxes(dists: dict[str, dict[str, list]], labels: dict[str, str], ytitle: str, better: str,
                height: int = 420) -> go.Figure:
    """Per-image score distributions: one box per method for each series; baselines grey, at the right.

    ``dists``: ``{series: {method: values}}``; ``labels``: method -> friendly name (baselines end in
    "(baseline)").
    """
    fig = go.Figure()
    series_colors = dict(zip(dists, ("#4C72B0", "#DD8452", "#55A868", "#8172B3")))
    for series, by_method in dists.items():
        xs, ys = [], []
        for method, values in by_method.items():
            xs += [plot_text(labels.get(method, method))] * len(values)
            ys += list(values)
        fig.add_trace(go.Box(x=xs, y=ys, name=plot_text(series), marker_color=series_colors[series], boxmean=True,
                             boxpoints=False))
    baseline_names = [n for n in dict.fromkeys(x for t in fig.data for x in t.x) if n.endswith("(baseline)")]
    first = next(iter(dists.values()), {})
    if first.get("random"):  # the line every method must beat
        fig.add_hline(y=float(np.mean(first["random"])), line=dict(color=BASELINE_COLOR, dash="dot"),
                      annotation_text="random map (mean)", annotation_position="top left")
    fig.update_layout(boxmode="group", yaxis_title=f"{ytitle} ({better} is better)", legend_title="map, score",
                      xaxis=dict(categoryorder="array", categoryarray=list(dict.fromkeys(
                          [x for t in fig.data for x in t.x if not x.endswith("(baseline)")] + baseline_names))))
    return _compact(fig, height)


def cascade_lines(cascades: dict[str, tuple[list[str], list[float]]]) -> go.Figure:
    """Median rank correlation of the trained and the randomised map as the cascade randomises layer after layer
    (``cascades``: role -> (layers, values))."""
    fig = go.Figure()
    for role, (layers, values) in cascades.items():
        fig.add_trace(go.Scatter(x=[f"{i + 1}. {plot_text(name)}" for i, name in enumerate(layers)], y=values,
                                 name=_label(role), mode="lines+markers", marker_color=COLORS.get(role)))
    fig.add_hline(y=0, line=dict(color=BASELINE_COLOR, dash="dot"))
    # two short lines: one long line is cut at the chart's 340 px height
    fig.update_layout(yaxis=dict(title="rank correlation with<br>the trained map (median)", range=[-1, 1]),
                      xaxis_title="layers randomised so far (head first)")
    return _compact(fig, 340)
