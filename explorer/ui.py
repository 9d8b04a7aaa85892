"""Widgets and blocks shared by the pages that show models: image chooser, metrics, plots, plain notices (the
banner, dataset picker and page header are `explorer.chrome`).

Every widget has a key; view state that belongs in a shared link is bound to the URL with
`explorer.state`. Errors from ``core`` are caught here, at the page boundary, and shown with
``st.error``; the page keeps running. What users and files supply (file names, class names, messages that
quote them) is shown through `explorer.text.plain`: as text, never as Markdown, and cut to a readable length.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch
from PIL import Image

from core.checkpoints import CheckpointError
from core.catalog import DatasetError
from core.images import ImageError, open_image, to_rgb
from core.inference import preprocess, resize_transform
from core.layout import dataset_folder
from core.roles import SHIPPED
from explorer import familiarity, listing, loaders, state
from explorer.text import plain

DISPLAY_MAX = 768  # longest side of an image drawn in the page (a 40 Mpx upload is shown downscaled)
DISPLAY_MIN = 256  # a smaller one (a 64 px phantom) is enlarged by a whole factor, its pixels kept square


def no_checkpoints_help(dataset: str) -> None:
    st.info(
        f"No shipped checkpoints for **{dataset}** in `{dataset_folder(dataset)}`. Where its images are, "
        f"make them with `python -m core.reproduce {dataset}` (teacher, distilled and label-only students, with "
        f"metrics), or train one pair with `python -m core.train --dataset {dataset} --out runs/{dataset} --baseline` "
        f"and copy each stage's `best.pt` and `best.json` from `runs/{dataset}/<stage>/` to "
        f"`checkpoints/{dataset}/<file>.pt` and `<file>.json` ("
        + ", ".join(f"`{r.stage(0)}` to `{r.shipped}`" for r in SHIPPED) + ").", icon=":material/model_training:")


def no_images_help(dataset: str, reason: str | None) -> None:
    st.info(f"The images of **{dataset}** are not here: {plain(reason or 'unknown reason')}. "
            f"With shipped checkpoints you can still upload your own image.", icon=":material/folder_off:")


def _cannot_load(dataset: str, err: CheckpointError) -> None:
    st.error(f"A checkpoint of {dataset} cannot be loaded: {plain(err)}", icon=":material/error:")


def models_or_help(dataset: str):
    """(teacher, student) for the dataset, or None after explaining what is missing."""
    try:
        teacher, student = loaders.load_pair(dataset)
    except CheckpointError as err:
        _cannot_load(dataset, err)
        return None
    if teacher is None or student is None:
        no_checkpoints_help(dataset)
        return None
    return teacher, student


def shipped_models_or_error(dataset: str) -> dict | None:
    """Every shipped model of the dataset by role (`loaders.load_models`; empty when none is shipped), or None after
    saying which checkpoint cannot be loaded."""
    try:
        return loaders.load_models(dataset)
    except CheckpointError as err:
        _cannot_load(dataset, err)
        return None


def prediction(model: str, classes: list[str], probabilities, unusual: bool) -> None:
    """One model's predicted class and confidence: in large type, or for an image unlike the training images in a
    small marked line (a confident class of such an image means little)."""
    name, confidence = classes[int(probabilities.argmax())], float(probabilities.max())
    if unusual:
        st.caption(f"{model}: {plain(name)} ({confidence:.0%}), on an image unlike the training images")
    else:
        st.metric(model, name, f"{confidence:.0%} confident", delta_color="off")


def lesion_outline_choice(chosen: "ChosenImage", where) -> bool:
    """A box to draw the true lesion's outline, offered only for an image with a lesion mask; otherwise a caption
    saying why there is none. Returns whether to draw it."""
    if chosen.mask is None:
        where.caption("No lesion masks in this dataset.")
        return False
    if not chosen.mask.any():
        where.caption("No lesion in this image.")
        return False
    return where.checkbox("Lesion outline", value=True, key="fm_outline")


def pair_and_image_or_stop(dataset: str, columns: tuple | None = None) -> tuple:
    """(teacher, student, chosen image) for pages that explain one image; stops the page after saying
    what is missing (checkpoints, or an image to work on). ``columns``: two columns to draw the image choice in
    (`image_picker`), where a page shares their row with other controls."""
    pair = models_or_help(dataset)
    if not pair:
        st.stop()
    chosen = image_picker(dataset, columns=columns)
    if chosen is None:
        st.stop()
    # an upload always says how it compares with the training images; a test image only when it is unusual
    familiarity.show(dataset, pair[0], chosen.ident, chosen.model_input(pair[0].meta), uploaded=chosen.uploaded,
                     quiet=not chosen.uploaded)
    return pair[0], pair[1], chosen


@dataclass
class ChosenImage:
    """The image a page works on: a test sample (``test_index`` set) or an upload (``test_index`` None)."""

    image: Image.Image  # RGB: a test sample at the dataset's input size, an upload as decoded
    ident: str  # stable cache key: "test:12" or "upload:<sha1>"
    caption: str  # Markdown, ready to show: an upload's name in it is already escaped
    label: int | None = None
    mask: np.ndarray | None = None  # phantom lesion mask at the dataset's size
    dataset: str | None = None  # the dataset a test sample comes from
    test_index: int | None = None  # position in the dataset's test split
    name: str = ""  # an upload's file name as given: untrusted, shown only through `explorer.text.plain`
    words: str = ""  # a test sample in plain words, for what escapes text itself (a report): the class is a user's

    @property
    def uploaded(self) -> bool:
        return self.test_index is None

    def full_size_image(self) -> Image.Image:
        """The image at its own size: a test sample's file as stored (the decoded item for generated
        datasets such as the phantom), an upload as uploaded."""
        if self.test_index is None:
            return self.image
        return loaders.sample_image(self.dataset, self.test_index, full_size=True)

    def model_input(self, meta) -> torch.Tensor:
        """Normalised (1, 3, S, S) tensor for a model with this metadata."""
        return preprocess(meta, [self.image])

    def mask_at(self, size: int) -> np.ndarray | None:
        """The lesion mask resized (nearest) to a model's input side, or None without a mask."""
        if self.mask is None:
            return None
        if self.mask.shape == (size, size):
            return self.mask
        return np.asarray(Image.fromarray(self.mask).resize((size, size), Image.Resampling.NEAREST), dtype=bool)

    def pixels(self, size: int) -> np.ndarray:
        """uint8 (S, S, 3) as the model sees it (before normalisation), for overlays."""
        return (resize_transform(size)(self.image) * 255).round().byte().permute(1, 2, 0).numpy()


@st.cache_data(max_entries=16, show_spinner=False)
def decode_upload(data: bytes, name: str) -> tuple[Image.Image, str]:
    """Decode uploaded bytes with `core.images` (raises `ImageError`); returns (RGB image, note)."""
    img = open_image(data, name=name)
    mode, size = img.mode, img.size
    rgb = to_rgb(img)
    original = img.info.get("original_size", size)
    note = f"{original[0]}x{original[1]} px" + (f", reduced to {size[0]}x{size[1]} while decoding"
                                                 if tuple(original) != tuple(size) else "")
    if "dicom" in img.info:  # which frame and window a DICOM file is shown with
        note += f", {img.info['dicom']}"
    elif mode != "RGB":
        note += f", converted from Pillow mode {mode} to RGB"
    return rgb, note


def display_copy(img: Image.Image) -> Image.Image:
    """The image as drawn: downscaled if huge, enlarged by a whole factor (nearest pixel) if small, else itself."""
    if max(img.size) > DISPLAY_MAX:
        img = img.copy()
        img.thumbnail((DISPLAY_MAX, DISPLAY_MAX))
    elif max(img.size) < DISPLAY_MIN:
        factor = -(-DISPLAY_MIN // max(img.size))
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    return img


def show_image(img: Image.Image, caption: str = "") -> None:
    """Draw an image at a readable size (`display_copy`; the model input is computed from the original)."""
    st.image(display_copy(img))
    if caption:
        st.caption(caption)


def _upload_choice(key: str) -> ChosenImage | None:
    up = st.file_uploader("Upload an image (PNG, JPEG, TIFF, BMP, WebP, DICOM; grey, 16-bit, RGBA, CMYK are "
                          "converted; DICOM is windowed as the file says)",
                          key=f"{key}_upload")
    if up is None:
        return None
    data = up.getvalue()
    try:
        rgb, note = decode_upload(data, up.name)
    except ImageError as err:
        st.error(f"Cannot use this upload: {plain(err)}", icon=":material/broken_image:")
        return None
    digest = hashlib.sha1(data).hexdigest()[:12]
    return ChosenImage(rgb, f"upload:{digest}", f"{plain(up.name, limit=200)} ({note})", name=up.name)


def open_test_image(index: int, key: str = "image") -> None:
    """Callback: show test image ``index`` in the image chooser."""
    state.set_value(f"{key}_source", "Test image")
    state.set_value(key, int(index))


def open_explanation(index: int, method: str) -> None:
    """Show test image ``index`` explained by ``method`` on the Explanations page (call before switching)."""
    open_test_image(index)
    state.set_value("method", [method])


def image_picker(dataset: str, key: str = "image", allow_upload: bool = True,
                 columns: tuple | None = None) -> ChosenImage | None:
    """Choose a test image (bound to ``?image=``) or an upload; returns None when nothing usable is chosen.
    ``columns``: the two columns for the source and the test image's number (default: a row of their own)."""
    have_images = loaders.images_available(dataset)
    sources = (["Test image"] if have_images else []) + (["Upload"] if allow_upload else [])
    if not sources:
        no_images_help(dataset, listing.status(dataset)["reason"])
        return None
    state.bind(f"{key}_source", sources[0], param="source", options=sources)
    # the source and the test image's number share one row: every page that explains an image needs the height
    source_col, number_col = columns or st.columns([1, 2], vertical_alignment="bottom")
    source = source_col.radio("Image", sources, key=f"{key}_source", horizontal=True)
    state.publish(f"{key}_source", param="source")
    if source == "Upload":
        return _upload_choice(key)
    try:
        ds = loaders.split(dataset, "test")
    except DatasetError as err:
        no_images_help(dataset, str(err))
        return None
    n = len(ds)
    state.bind(key, loaders.first_clear_image(dataset), param="image", parse=int, lo=0, hi=n - 1)
    index = number_col.number_input("Test image", min_value=0, max_value=n - 1, step=1, key=key,
                                    help=f"Its number in the test split, 0 to {n - 1}")
    state.publish(key, param="image")
    try:
        return test_image(dataset, int(index))
    except DatasetError as err:
        st.warning(f"Test image #{index} cannot be read ({plain(err)}); choose another one.",
                   icon=":material/broken_image:")
        return None


def test_image(dataset: str, index: int) -> ChosenImage:
    """Test image ``index`` of ``dataset`` as a page works on it; raises `DatasetError` where it cannot be read."""
    ds = loaders.split(dataset, "test")
    label = int(ds.targets[index])
    image = loaders.sample_image(dataset, index)
    words = f"test #{index}, true class: {ds.classes[label]}"
    return ChosenImage(image, f"test:{index}", plain(words, limit=300), label, loaders.sample_mask(dataset, index),
                       dataset=dataset, test_index=index, words=words)


def skipped_images_notice(skipped: list[int], left_out_of: str = "") -> None:
    """Which test images a page left out because their files cannot be read (nothing when none were)."""
    if skipped:
        st.warning(f"{len(skipped)} test image(s) cannot be read and are left out{left_out_of}: "
                   f"#{', #'.join(map(str, skipped))}.", icon=":material/broken_image:")


def metric_with_ci(label: str, value: float, ci, fmt: str = "{:.1%}", where=None) -> None:
    """A metric with its 95% interval underneath (``ci`` = [low, high] or None)."""
    where = where or st
    where.metric(label, fmt.format(value))
    if ci:
        where.caption(f"95% CI {fmt.format(ci[0])} to {fmt.format(ci[1])}")


# Only the camera button (PNG at twice the size, for slides), and only while the pointer is over the figure, so
# it never covers a title.
PLOT_CONFIG = {"displayModeBar": "hover", "modeBarButtons": [["toImage"]], "displaylogo": False,
               "toImageButtonOptions": {"format": "png", "scale": 2}}


def plot(fig, key: str | None = None, where=None) -> None:
    """Draw a Plotly figure (in ``where``, a column or container, if given) with the PNG download button."""
    (where or st).plotly_chart(fig, key=key, config=PLOT_CONFIG)
