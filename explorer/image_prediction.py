"""What the models predict for the one image a page shows (the Dataset and Explanations pages).

The model is the page's loaded one, passed as an unhashed ``_loaded`` argument; its `LoadedModel.version` and the
image's id key the cache, so Streamlit reuses the result across reruns and users without hashing tensors.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from core.inference import predict_tensor
from explorer.loaders import LoadedModel


@st.cache_data(max_entries=64, show_spinner=False)
def probabilities(_loaded: LoadedModel, version: tuple, ident: str, _x: torch.Tensor) -> np.ndarray:
    """Class probabilities (C,) of one preprocessed image (cached per checkpoint version and image id)."""
    with _loaded.lock:  # another session may have explainer hooks on this model right now
        return predict_tensor(_loaded.model, _x)[0]
