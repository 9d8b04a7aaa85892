"""A case report of one explained image: one self-contained HTML file, and the maps as PNG files.

Built from plain data (checkpoint metadata, class probabilities, the `PairExplanation` that
`explorer.explanations_view.explain_pair` builds) with no Streamlit calls, so it is tested without the app. Every
text that reaches the HTML goes through `html.escape`: an upload's file name, class names and notes
are data, never markup. The file needs nothing from outside: maps are PNG data URIs, the colour bar
is a CSS gradient and the style sheet is inline.
"""

from __future__ import annotations

import base64
import functools
import html
import importlib.metadata
import io
import re
import zipfile
from dataclasses import dataclass

import numpy as np
from PIL import Image
from plotly.colors import convert_colors_to_same_type, get_colorscale

from core.checkpoints import CheckpointMeta, library_versions, now_iso
from explorer import explanations_view
from explorer.chrome import DISCLAIMER
from explorer.explanation_record import MethodPair, ModelExplanation, PairExplanation
from explorer.names import method_label, role_label
from explorer.plots import HEAT, heat_scale


@dataclass(frozen=True)
class ModelCase:
    """One model's side of a case: its checkpoint and what it saw and predicted."""

    meta: CheckpointMeta
    file_name: str  # the checkpoint file's name
    sha256: str | None  # of the checkpoint file; None where it could not be read
    probabilities: np.ndarray  # (C,) softmax of the image
    pixels: np.ndarray  # uint8 (S, S, 3): the image at the model's input size, before normalisation


@dataclass(frozen=True)
class Case:
    """Everything a case report shows: one image, one explained class, both models, every map."""

    dataset: str
    ident: str  # the image's key, "test:12" or "upload:<sha1>"
    image: str  # what the image is, in words (an upload's file name: untrusted)
    target: int  # index of the explained class
    result: PairExplanation  # every method's map and scores on each model
    opacity: float  # of the map over the image, as on the page
    models: dict[str, ModelCase]  # by role

    @property
    def classes(self) -> list[str]:
        return next(iter(self.models.values())).meta.classes


# --------------------------------------------------------------------------- maps as pictures

@functools.lru_cache(maxsize=4)
def colour_table(name: str = HEAT, levels: int = 256) -> np.ndarray:
    """(levels, 3) RGB 0-255 of a map colour scale (`explorer.plots.heat_scale`), interpolated linearly between its
    stops as Plotly does."""
    scale = get_colorscale(name)
    stops = [float(at) for at, _ in scale]
    rgb = np.array(convert_colors_to_same_type([colour for _, colour in scale], colortype="tuple")[0]) * 255
    at = np.linspace(0.0, 1.0, levels)
    return np.stack([np.interp(at, stops, rgb[:, k]) for k in range(3)], axis=1)



def overlay(pixels: np.ndarray, heat: np.ndarray, opacity: float) -> np.ndarray:
    """uint8 (H, W, 3): a 0-1 map coloured like the page's maps, blended over the image at ``opacity``."""
    colour = colour_table(heat_scale(pixels))[np.clip(np.rint(np.nan_to_num(heat) * 255), 0, 255).astype(int)]
    return np.rint((1 - opacity) * pixels.astype(float) + opacity * colour).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def map_pngs(case: Case) -> dict[str, bytes]:
    """One PNG per method and model, named ``<method>_<role>.png``: the map over the image."""
    return {f"{method}_{role}.png": png_bytes(overlay(m.pixels, pair.models[role].heatmap, case.opacity))
            for method, pair in case.result.methods.items() for role, m in case.models.items() if role in pair.models}


EXPORT_SIDE = 512  # the exported maps' side: a slide or a print, not the model's 64-128 px


def labelled_png(pixels: np.ndarray, heat: np.ndarray, opacity: float, title: str) -> bytes:
    """The map over the image at `EXPORT_SIDE` px (bilinear, as the page draws it), with ``title`` above it and the
    colour bar (0 to 1, the map's min-max normalised scale) beside it."""
    from PIL import ImageDraw, ImageFont

    bar_width, margin, title_height = 22, 12, 40
    picture = Image.fromarray(overlay(pixels, heat, opacity), "RGB").resize((EXPORT_SIDE, EXPORT_SIDE),
                                                                             Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (EXPORT_SIDE + bar_width + 4 * margin, EXPORT_SIDE + title_height), "white")
    canvas.paste(picture, (0, title_height))
    bar = np.repeat(colour_table(heat_scale(pixels))[::-1, None, :], bar_width, axis=1).astype(np.uint8)  # 1 on top
    canvas.paste(Image.fromarray(bar, "RGB").resize((bar_width, EXPORT_SIDE)), (EXPORT_SIDE + margin, title_height))
    try:
        font = ImageFont.load_default(size=16)
    except TypeError:  # Pillow before 10.1: its one bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(canvas)
    draw.text((margin // 2, title_height // 4), title, fill="black", font=font)
    right = EXPORT_SIDE + bar_width + margin + 4
    draw.text((right, title_height), "1", fill="black", font=font)
    draw.text((right, title_height + EXPORT_SIDE - 18), "0", fill="black", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def maps_zip(case: Case) -> bytes:
    """One labelled PNG per method and model (`labelled_png`: the map over the image at 512 px, titled with the
    method, the model and the class explained, and its colour bar), named as in `map_pngs`, in one ZIP file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for method, pair in case.result.methods.items():
            for role, m in case.models.items():
                if role in pair.models:
                    title = f"{method_label(method)}, {role_label(role)}: class {case.classes[case.target]}"
                    archive.writestr(f"{method}_{role}.png", labelled_png(m.pixels, pair.models[role].heatmap,
                                                                          case.opacity, title))
    return buffer.getvalue()


def download_name(case: Case, extension: str) -> str:
    """A safe file name for a download of this case (the upload's own name is not used)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", f"case_{case.dataset}_{case.ident}_class{case.target}")
    return f"{stem}.{extension}"


# --------------------------------------------------------------------------- what to say

def versions() -> dict[str, str]:
    """Library versions of this process (python, torch, torchvision, numpy and the machine from
    `core.checkpoints.library_versions`, plus the explainer, app and image libraries)."""
    found = library_versions()
    for package in ("captum", "streamlit", "plotly", "pillow"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


RECIPE_FIELDS = [("epochs", "epochs"), ("batch_size", "batch"), ("lr", "lr"), ("weight_decay", "weight decay"),
                 ("augment", "augment"), ("protocol", "protocol"), ("train_images", "train images"),
                 ("val_images", "val images"), ("best_val_loss", "best val loss"), ("stopped", "stopped")]


def _value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def recipe_summary(meta: CheckpointMeta) -> str:
    """The training recipe in one line, from the fields the checkpoint records. The distillation settings come
    from ``meta.kd`` alone: a teacher's ``train`` also carries the (unused) loss settings of its run."""
    train = meta.train or {}
    parts = [f"{label} {_value(train[key])}" for key, label in RECIPE_FIELDS if train.get(key) not in (None, "")]
    if train.get("history"):
        parts.append(f"epochs run {len(train['history'])}")
    kd = dict(meta.kd or {})
    loss = kd.pop("loss", None)
    parts.append(f"student loss {loss} (" + ", ".join(f"{k} {_value(v)}" for k, v in kd.items()) + ")" if kd or loss
                 else "no distillation")
    return ", ".join(parts)


def metrics_summary(meta: CheckpointMeta) -> str:
    """The shipped test metrics in one line, or "not recorded"."""
    test = (meta.metrics or {}).get("test") or {}
    names = [("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro F1"),
             ("ece", "ECE")]
    parts = [f"{label} {test[key]:.3f}" for key, label in names if isinstance(test.get(key), (int, float))]
    if test.get("n"):
        parts.append(f"{test['n']} images")
    return ", ".join(parts) or "not recorded"


def _arch(meta: CheckpointMeta) -> str:
    args = ", ".join(f"{k} {v}" for k, v in (meta.arch_args or {}).items())
    return f"{meta.arch} ({args})" if args else meta.arch


def checkpoint_rows(case: Case) -> list[list]:
    """Rows (field, value per role) describing each checkpoint."""
    ms = list(case.models.values())
    return [["file"] + [m.file_name for m in ms], ["sha256"] + [m.sha256 or "unavailable" for m in ms],
            ["architecture"] + [_arch(m.meta) for m in ms], ["dataset"] + [m.meta.dataset for m in ms],
            ["input size"] + [f"{m.meta.input_size} x {m.meta.input_size}" for m in ms],
            ["seed"] + [m.meta.seed for m in ms], ["created"] + [m.meta.created or "not recorded" for m in ms],
            ["weights"] + [m.meta.weights_dtype for m in ms],
            ["data fingerprint"] + [m.meta.data_fingerprint or "not recorded" for m in ms],
            ["training recipe"] + [recipe_summary(m.meta) for m in ms],
            ["test metrics"] + [metrics_summary(m.meta) for m in ms],
            ["trained with"] + [", ".join(f"{k} {v}" for k, v in m.meta.versions.items()) or "not recorded"
                                for m in ms]]


def prediction_rows(case: Case) -> list[list]:
    """Rows (class, probability per role), the explained class marked, then each model's predicted class."""
    ms = list(case.models.values())
    rows = [[name + (" (explained)" if i == case.target else "")] + [f"{m.probabilities[i]:.4f}" for m in ms]
            for i, name in enumerate(case.classes)]
    return rows + [["predicted class"] + [case.classes[int(np.argmax(m.probabilities))] for m in ms]]


def score_table_rows(pair: MethodPair, roles: list[str]) -> list[list]:
    """A method's passes and `explanations_view.score_rows`, one row per score."""
    models = [pair.models[r] for r in roles]
    rows = [["passes (forward/backward)"] + [f"{m.passes.forward}/{m.passes.backward}" for m in models]]
    rows += [[row["score"]] + [row.get(r, "n/a") for r in roles] for row in explanations_view.score_rows(pair)]
    layers = [m.sanity.layers if m.sanity else () for m in models]
    if any(layers):
        rows.append(["sanity: layers re-initialised"] + [", ".join(names) for names in layers])
    return rows


def agreement_text(pair: MethodPair) -> str:
    agree = pair.agreement
    if agree is None:
        return ""
    spearman, iou = (("n/a" if v is None else f"{v:.2f}") for v in (agree.spearman, agree.iou))
    return f"Teacher-student agreement (rank correlation of the two maps): Spearman {spearman}, top-10% IoU {iou}."


# --------------------------------------------------------------------------- HTML

STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:1.5rem auto;padding:0 1rem;color:#222}
.notice{background:#fff4d6;border:1px solid #e0b84a;padding:.6rem .8rem;border-radius:4px}
table{border-collapse:collapse;margin:.5rem 0 1rem;display:block;max-width:100%;overflow-x:auto}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;
vertical-align:top}th{background:#f2f2f2}.maps{display:flex;gap:1rem;flex-wrap:wrap}
figure{margin:0;width:256px}figure img{width:256px;height:256px;image-rendering:pixelated}figcaption{font-size:.85rem}
.bar{width:256px;height:12px;background:linear-gradient(to right,GRADIENT)}.scale{font-size:.85rem;margin:.5rem 0 1rem}
.scale span{display:inline-block;width:128px}.scale span+span{text-align:right}code{word-break:break-all}
"""


def _e(value) -> str:
    return html.escape(str(value))


def table(head: list, rows: list[list], css_id: str) -> str:
    """An HTML table, every cell escaped."""
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{_e(css_id)}"><tr>{header}</tr>{body}</table>'


def colour_bar() -> str:
    """The map colour scale as a CSS gradient, with what its ends mean."""
    return ('<div class="scale"><div class="bar"></div><span>0</span><span>1</span><br>'
            "Each map is min-max normalised to 0-1: colours compare places within one map, not across maps.</div>")


def _gradient(scale: str) -> str:
    stops = np.linspace(0, 1, 11)
    return ",".join(f"rgb({r:.0f},{g:.0f},{b:.0f}) {s:.0%}" for s, (r, g, b) in
                    zip(stops, colour_table(scale)[np.rint(stops * 255).astype(int)]))


def _figure(method: str, role: str, png: bytes, r: ModelExplanation) -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    at = f" at {r.layer}" if r.layer else ""  # the layer a CAM method used
    label = f"{role_label(role)}: {method_label(method)}{at}, {r.seconds * 1000:.0f} ms measured"
    return (f'<figure><img src="{uri}" alt="{_e(label)}" data-method="{_e(method)}" data-role="{_e(role)}">'
            f"<figcaption>{_e(label)}</figcaption></figure>")


def method_section(case: Case, method: str, pngs: dict[str, bytes]) -> str:
    """A method's maps on both models, its scores and the models' agreement."""
    pair = case.result.methods[method]
    roles = [r for r in case.models if r in pair.models]
    figures = "".join(_figure(method, r, pngs[f"{method}_{r}.png"], pair.models[r]) for r in roles)
    scores = table(["score"] + [role_label(r) for r in roles], score_table_rows(pair, roles), f"scores-{method}")
    return (f'<h3>{_e(method_label(method))}</h3><div class="maps">{figures}</div>{scores}'
            f"<p>{_e(agreement_text(pair))}</p>")


def case_report_html(case: Case) -> str:
    """The whole report: image and class, predictions, every map with its scores and cost, the checkpoints
    and the library versions, as one HTML document with nothing to fetch."""
    columns = [role_label(r) for r in case.models]
    pngs = map_pngs(case)
    facts = [["dataset", case.dataset], ["image", case.image], ["image key", case.ident],
             ["explained class", f"{case.classes[case.target]} (index {case.target})"],
             ["map opacity", f"{case.opacity:.2f}"], ["written", now_iso()]]
    parts = [f"<h1>Case report: {_e(case.image)}</h1>", f'<p class="notice">{_e(DISCLAIMER)}</p>',
             table(["", "value"], facts, "case"),
             "<h2>Predictions</h2>", table(["class", *columns], prediction_rows(case), "predictions"),
             "<h2>Explanations</h2>", colour_bar(),
             *(method_section(case, method, pngs) for method in case.result.methods),
             "<h2>Checkpoints</h2>", table(["", *columns], checkpoint_rows(case), "checkpoints"),
             "<h2>Library versions</h2>", table(["library", "version"], list(versions().items()), "versions"),
             f'<p class="notice">{_e(DISCLAIMER)}</p>']
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>KD Explorer case report: {_e(case.image)}</title>"
            f"<style>{STYLE.replace('GRADIENT', _gradient(heat_scale(next(iter(case.models.values())).pixels)))}"
            "</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")
