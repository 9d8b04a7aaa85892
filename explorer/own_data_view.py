"""The Train page's upload of the user's own images: a zip unpacked safely into the data root (`core.archive`),
then chosen in the dataset picker, so that the page trains on it and every page shows it."""

from __future__ import annotations

import streamlit as st

from core.archive import MAX_ARCHIVE_BYTES, MAX_FILES, unpack_dataset
from core.catalog import DatasetError
from explorer import listing, state
from explorer.text import plain

UPLOAD_KEY = "own_data_zip"
MESSAGE_KEY = "_own_data_message"


def _unpack() -> None:
    """The uploader's callback: it runs before the page is drawn, so the picker can be set to the new dataset."""
    upload = st.session_state.get(UPLOAD_KEY)
    if upload is None:
        return
    try:
        info = unpack_dataset(upload, upload.name, size=upload.size)
    except DatasetError as err:
        st.session_state[MESSAGE_KEY] = ("error", f"{upload.name} was not added: {err}")
        return
    listing.status.clear()
    state.set_value("dataset", info.name)
    st.session_state[MESSAGE_KEY] = ("success", f"{info.name} added ({len(info.classes)} classes: "
                                                f"{', '.join(info.classes)}); it is chosen in the picker.")


def zip_upload() -> None:
    """An expander with the uploader and what became of the last upload."""
    with st.expander("Your own images: upload a zip"):
        st.caption(f"A zip of one folder with a sub-folder of images per class (or train/ and test/ holding them), "
                   f"at most {MAX_ARCHIVE_BYTES // 2**20} MiB and {MAX_FILES:,} files. It becomes a dataset named "
                   "after the folder: pick it, train here, and its models are kept for every page.")
        st.file_uploader("Zip of a folder of images", type=["zip"], key=UPLOAD_KEY, on_change=_unpack)
    # below the expander, which the rerun after an upload draws closed: the answer is seen either way
    kind, text = st.session_state.get(MESSAGE_KEY, (None, ""))
    if kind == "error":
        st.error(plain(text), icon=":material/error:")
    elif kind == "success":
        st.success(plain(text), icon=":material/check_circle:")
