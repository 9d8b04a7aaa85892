"""Layer-by-layer feature maps: capture, the paper's average maps, channel ranking and ablation.

Everything here works on a model that is shared between users (the app caches one instance per
checkpoint): the hooks of `core.hooks` record only this thread's forward and the model is left as
found. Gradients are taken with `torch.autograd.grad` on the captured activation, so no parameter
``.grad`` is ever written.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.hooks import (LayerError, first_tensor, hooked, model_layers, preserve_model_state, record_activations,
                        require_eval, resolve_layer)

__all__ = ["Capture", "ChannelRanking", "AblationResult", "LayerMaps", "capture_activations", "average_feature_map",
           "normalize_map", "layer_maps", "rank_channels", "ablate_channels"]


class Capture(NamedTuple):
    """What one hooked forward pass returns."""

    activations: OrderedDict  # label -> (B, C, h, w) tensor
    logits: torch.Tensor  # (B, num_classes)


def capture_activations(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None, *,
                        reduce=None) -> Capture:
    """Activations of every listed layer (default: all of `model_layers`) and the logits, in ONE forward.

    ``reduce``: keep ``reduce(activation)`` per layer instead of the activation (`core.hooks.record_activations`).

    Raises:
        LayerError: a listed layer did not run during the forward pass.
    """
    require_eval(model)
    if layers is None and callable(getattr(model, "forward_intermediates", None)):  # every layer, no hooks
        with preserve_model_state(model), torch.inference_mode():
            logits, store = model.forward_intermediates(x, reduce=reduce)
        return Capture(OrderedDict(store), logits)
    with preserve_model_state(model), record_activations(model, layers, reduce=reduce) as store, \
            torch.inference_mode():
        logits = model(x)
    wanted = list(layers) if layers else [label for label, _ in model_layers(model)]
    missing = [name for name in wanted if resolve_layer(model, name)[0] not in store]
    if missing:
        raise LayerError(f"layers {missing} did not run in the forward pass")
    return Capture(store, logits)


def normalize_map(m: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of a (B, H, W) or (H, W) tensor to [0, 1].

    A constant map becomes 0; a map with NaN or infinite values becomes all NaN (so it is noticed).
    """
    flat = m.reshape(-1, m.shape[-2] * m.shape[-1])
    out = torch.empty_like(flat)
    for row, dest in zip(flat, out):  # a whole-tensor min/max is ~20x faster than one along a dim
        lo, hi = torch.aminmax(row)
        span = float(hi - lo)
        if not math.isfinite(span):
            dest.fill_(float("nan"))  # never hide a NaN map
        elif span > 0:
            torch.sub(row, lo, out=dest).div_(span)
        else:
            dest.zero_()
    return out.view_as(m)


def average_feature_map(act: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """The paper's average feature map: mean over channels, bilinear upsampling, min-max in [0, 1].

    Args:
        act: activation (B, C, h, w) or (C, h, w).
        size: output side or (H, W), usually the input's.

    Returns:
        (B, H, W) maps, or (H, W) for a 3-D input. Averaging before upsampling gives the same result
        as after (both are linear) at C times less work.
    """
    single = act.dim() == 3
    act = act.unsqueeze(0) if single else act
    maps = _upsampled(act.float().mean(1, keepdim=True), size)
    return maps[0] if single else maps


def _upsampled(mean: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(B, 1, h, w) channel means -> (B, H, W) maps: bilinear upsampling, then min-max to [0, 1]."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    return normalize_map(F.interpolate(mean, size=size, mode="bilinear", align_corners=False)[:, 0])


class LayerMaps(Mapping):
    """label -> float32 (H, W) average feature map in [0, 1], in forward order, each upsampled on first access.

    The channel means come from the one forward pass; upsampling and normalising a map to the input's size
    costs more than the mean itself, and a view draws one layer at a time, so a layer costs that only once
    it is read (then it is kept).
    """

    def __init__(self, means: OrderedDict, size: tuple[int, int]):
        self._means, self._size, self._maps = means, size, {}

    def __getitem__(self, label: str) -> np.ndarray:
        if label not in self._maps:
            self._maps[label] = _upsampled(self._means[label], self._size)[0].cpu().numpy()
        return self._maps[label]

    def __iter__(self):
        return iter(self._means)

    def __len__(self) -> int:
        return len(self._means)

    @property
    def last(self) -> str:
        return next(reversed(self._means))


def _channel_mean_and_shape(activation: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    return activation[:1].float().mean(1, keepdim=True), tuple(activation.shape[1:])


def layer_maps(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None) -> dict:
    """Every layer's average feature map for one image, from ONE forward pass (the app's stepping view).

    Args:
        x: normalised (1, 3, H, W) input.

    Returns:
        ``{"layers": `LayerMaps` label -> float32 (H, W) map in [0, 1], "shapes": OrderedDict
        label -> (C, h, w), "logits": (K,) array, "probabilities": (K,) array, "predicted": int}``.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"layer_maps needs one image shaped (1, C, H, W), got {tuple(x.shape)}")
    reduced, logits = capture_activations(model, x, layers, reduce=_channel_mean_and_shape)
    means = OrderedDict((label, mean) for label, (mean, _) in reduced.items())
    maps = LayerMaps(means, tuple(x.shape[-2:]))
    shapes = OrderedDict((label, shape) for label, (_, shape) in reduced.items())
    logits = logits[0].float().cpu()
    return {"layers": maps, "shapes": shapes, "logits": logits.numpy(),
            "probabilities": torch.softmax(logits, 0).numpy(), "predicted": int(logits.argmax())}


def _activation_with_grad(model: nn.Module, x: torch.Tensor, module: nn.Module,
                          target: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """One forward and one backward from the target logit to ``module``'s output.

    The trunk runs under ``no_grad``; the hook switches recording on at ``module`` and returns a fresh
    leaf, so the graph (and the backward) covers only the layers after it.

    Returns:
        ``(activation, d logit_target / d activation, logits, target)`` for the first image.
    """
    require_eval(model)
    store, owner = {}, threading.get_ident()

    def hook(mod, inputs, output):
        if threading.get_ident() != owner:
            return None
        torch.set_grad_enabled(True)  # undone when the enclosing no_grad block exits
        store["act"] = first_tensor(output).detach().requires_grad_(True)
        return store["act"]

    with preserve_model_state(model):
        with torch.no_grad(), hooked([(module, hook)]):
            logits = model(x)
        if "act" not in store:
            raise LayerError(f"layer {type(module).__name__} did not run in the forward pass")
        target = int(logits[0].argmax()) if target is None else int(target)
        if not 0 <= target < logits.shape[1]:
            raise ValueError(f"target {target} out of range for {logits.shape[1]} classes")
        (grad,) = torch.autograd.grad(logits[:, target].sum(), store["act"])
    return store["act"].detach(), grad, logits.detach(), target


@dataclass
class ChannelRanking:
    """Channels of one layer ranked by their contribution to one class logit.

    Attributes:
        layer: layer label. target: explained class. logit: its logit.
        channels: the top-k channel indices, best first.
        scores: contribution of every channel, ``sum_ij A_c,ij * dy_t/dA_c,ij`` (first-order Taylor
            estimate of the logit drop when channel c is zeroed).
        maps: the top-k channels' activations upsampled and normalised, (k, H, W).
    """

    layer: str
    target: int
    logit: float
    channels: list[int]
    scores: np.ndarray
    maps: np.ndarray


def rank_channels(model: nn.Module, x: torch.Tensor, layer: str, target: int | None = None,
                  k: int = 8) -> ChannelRanking:
    """Rank a layer's channels for a class by activation x gradient (one forward + one short backward)."""
    label, module = resolve_layer(model, layer)
    act, grad, logits, target = _activation_with_grad(model, x[:1], module, target)
    scores = (act * grad).sum(dim=(2, 3))[0]
    k = max(1, min(int(k), scores.numel()))
    top = torch.argsort(scores, descending=True)[:k]
    maps = normalize_map(F.interpolate(act[:, top].float(), size=tuple(x.shape[-2:]), mode="bilinear",
                                       align_corners=False)[0])
    return ChannelRanking(label, target, float(logits[0, target]), [int(c) for c in top],
                          scores.cpu().numpy(), maps.cpu().numpy())


@dataclass
class AblationResult:
    """Logit drops when channels of a layer are zeroed.

    Attributes:
        logit: target logit of the intact model. ablated_logit: with ``channels`` zeroed.
        drop: ``logit - ablated_logit``. random_drops: drops for ``n_random`` seeded draws of as many
            random channels. random_drop: their mean (the comparison the ranking must beat).
    """

    layer: str
    target: int
    channels: list[int]
    logit: float
    ablated_logit: float
    drop: float
    random_drops: np.ndarray
    random_drop: float

    @property
    def confirms_ranking(self) -> bool:
        """The chosen channels' drop exceeds every random draw's: with ``n`` draws, a chance of
        ``1 / (n + 1)`` if the ranking were no better than random."""
        return bool(self.random_drops.size) and self.drop > float(self.random_drops.max())


def ablate_channels(model: nn.Module, x: torch.Tensor, layer: str, channels: Sequence[int],
                    target: int, n_random: int = 8, seed: int = 0) -> AblationResult:
    """Zero ``channels`` at ``layer`` and compare the logit drop with ``n_random`` random sets of as many,
    drawn from the layer's other channels.

    One forward of a batch of ``2 + n_random`` copies of the image: each copy gets its own channel mask
    in the hook (intact, chosen, random draws).
    """
    label, module = resolve_layer(model, layer)
    require_eval(model)
    channels = [int(c) for c in channels]
    generator = torch.Generator().manual_seed(seed)
    state = {}
    owner = threading.get_ident()

    def hook(mod, inputs, output):
        if threading.get_ident() != owner:
            return None
        out = first_tensor(output)
        n_channels = out.shape[1]
        if any(not 0 <= c < n_channels for c in channels):
            raise LayerError(f"channel index out of range for {label} with {n_channels} channels")
        mask = torch.ones(out.shape[0], n_channels, 1, 1, dtype=out.dtype, device=out.device)
        mask[1, channels] = 0
        # random sets come from the other channels, so a draw never repeats the ranked choice
        others = torch.tensor([c for c in range(n_channels) if c not in set(channels)] or list(range(n_channels)))
        for row in range(2, out.shape[0]):
            mask[row, others[torch.randperm(len(others), generator=generator)[:len(channels)]]] = 0
        state["ran"] = True
        return out * mask

    batch = x[:1].expand(2 + n_random, *x.shape[1:])
    with preserve_model_state(model), hooked([(module, hook)]), torch.inference_mode():
        logits = model(batch)[:, target].float()
    if "ran" not in state:
        raise LayerError(f"layer {label} did not run in the forward pass")
    drops = (logits[0] - logits[1:]).cpu().numpy()
    return AblationResult(label, int(target), channels, float(logits[0]), float(logits[1]), float(drops[0]),
                          drops[1:], float(drops[1:].mean()) if n_random else float("nan"))
