"""Layer-by-layer feature maps: capture, average maps, channel ranking and ablation, CKA.

Everything here works on a model that is shared between users (the app caches one instance per
checkpoint): the model must be in eval mode and is left exactly as found. Hooks only live inside a
context manager and only record the forward pass of the thread that registered them, so two users
stepping through the same cached model never see each other's activations. Gradients are taken
with `torch.autograd.grad` on the captured activation, so no parameter ``.grad`` is ever written.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.models import feature_layers, gradcam_layer

__all__ = [
    "LayerError", "Capture", "ChannelRanking", "AblationResult", "LayerCorrespondence",
    "model_layers", "resolve_layer", "require_eval", "preserve_model_state", "record_activations",
    "capture_activations", "average_feature_map", "normalize_map", "layer_maps", "grad_cam",
    "rank_channels", "ablate_channels", "linear_cka", "cka_matrix", "default_target_layer",
]


class LayerError(ValueError):
    """A layer name that the model does not have, or a layer that never ran."""


def model_layers(model: nn.Module) -> list[tuple[str, str]]:
    """Ordered ``(label, module_path)`` pairs to step through.

    Registered teachers and students use `core.models.feature_layers`; any other model falls back
    to every ``nn.Conv2d`` in definition order (labelled by its path).
    """
    try:
        return feature_layers(model)
    except TypeError:
        pairs = [(name, name) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if not pairs:
            raise LayerError(f"{type(model).__name__} has no convolution layers to show") from None
        return pairs


def default_target_layer(model: nn.Module) -> str:
    """Module path of the standard Grad-CAM layer: the last convolutional feature layer."""
    try:
        return gradcam_layer(model)
    except TypeError:
        return model_layers(model)[-1][1]


def resolve_layer(model: nn.Module, layer: str) -> tuple[str, nn.Module]:
    """Find a layer by its readable label (``"denseblock3"``) or its module path (``"features.norm5"``)."""
    for label, path in model_layers(model):
        if layer in (label, path):
            return label, model.get_submodule(path)
    try:
        return layer, model.get_submodule(layer)
    except AttributeError:
        known = ", ".join(label for label, _ in model_layers(model))
        raise LayerError(f"{type(model).__name__} has no layer {layer!r}; known layers: {known}") from None


def require_eval(model: nn.Module) -> None:
    """Refuse a model in training mode: BatchNorm would update its statistics, dropout would add noise."""
    if model.training:
        raise ValueError("the model is in training mode; explanations need model.eval() "
                         "(a shared model is never switched here)")


@contextmanager
def preserve_model_state(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every module's ``training`` flag and every parameter's ``requires_grad`` and ``.grad``.

    A safety net for code that touches a shared model (TorchCAM's demo does the same). Flags are
    written back directly: ``.train()``/``.eval()`` are never called.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, requires_grad, grad in params:
            p.requires_grad_(requires_grad)
            p.grad = grad


@contextmanager
def _hooked(modules: Sequence[tuple[nn.Module, object]]) -> Iterator[None]:
    """Register ``(module, forward_hook)`` pairs; remove them all on exit, also after an error."""
    handles = []
    try:
        for module, hook in modules:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _first_tensor(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@contextmanager
def record_activations(model: nn.Module, layers: Sequence[str] | None = None, *,
                       keep_graph: bool = False) -> Iterator[OrderedDict]:
    """Context manager: while open, forward passes of this thread store each layer's output.

    Yields an OrderedDict ``label -> activation`` in the listed order (default: `model_layers`),
    filled by the forward passes run inside the block (the last one wins). Hooks are removed on
    exit, on success and on error. ``keep_graph=True`` keeps the outputs attached to autograd
    (for losses on intermediate layers, e.g. attention transfer); otherwise they are detached.
    """
    pairs = [resolve_layer(model, name) for name in layers] if layers else \
        [(label, model.get_submodule(path)) for label, path in model_layers(model)]
    store: OrderedDict[str, torch.Tensor] = OrderedDict()
    owner = threading.get_ident()

    def make_hook(label):
        def hook(module, inputs, output):
            if threading.get_ident() == owner:  # skip other users' forwards on a shared model
                out = _first_tensor(output)
                store[label] = out if keep_graph else out.detach()
        return hook

    with _hooked([(module, make_hook(label)) for label, module in pairs]):
        yield store
    order = [label for label, _ in pairs]
    for label in order:  # the forward may run layers in another order than listed
        if label in store:
            store.move_to_end(label)


class Capture(NamedTuple):
    """What one hooked forward pass returns."""

    activations: OrderedDict  # label -> (B, C, h, w) tensor
    logits: torch.Tensor  # (B, num_classes)


def capture_activations(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None) -> Capture:
    """Activations of every listed layer (default: all of `model_layers`) and the logits, in ONE forward.

    Raises:
        LayerError: a listed layer did not run during the forward pass.
    """
    require_eval(model)
    with preserve_model_state(model), record_activations(model, layers) as store, torch.inference_mode():
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
    size = (size, size) if isinstance(size, int) else tuple(size)
    mean = act.float().mean(1, keepdim=True)
    maps = normalize_map(F.interpolate(mean, size=size, mode="bilinear", align_corners=False)[:, 0])
    return maps[0] if single else maps


def layer_maps(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None) -> dict:
    """Every layer's average feature map for one image, from ONE forward pass (the app's stepping view).

    Args:
        x: normalised (1, 3, H, W) input.

    Returns:
        ``{"layers": OrderedDict label -> float32 (H, W) map in [0, 1], "shapes": OrderedDict
        label -> (C, h, w), "logits": (K,) array, "probabilities": (K,) array, "predicted": int}``.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"layer_maps needs one image shaped (1, C, H, W), got {tuple(x.shape)}")
    activations, logits = capture_activations(model, x, layers)
    size = tuple(x.shape[-2:])
    maps = OrderedDict((label, average_feature_map(a[0], size).cpu().numpy())
                       for label, a in activations.items())
    shapes = OrderedDict((label, tuple(a.shape[1:])) for label, a in activations.items())
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
        store["act"] = _first_tensor(output).detach().requires_grad_(True)
        return store["act"]

    with preserve_model_state(model):
        with torch.no_grad(), _hooked([(module, hook)]):
            logits = model(x)
        if "act" not in store:
            raise LayerError(f"layer {type(module).__name__} did not run in the forward pass")
        target = int(logits[0].argmax()) if target is None else int(target)
        if not 0 <= target < logits.shape[1]:
            raise ValueError(f"target {target} out of range for {logits.shape[1]} classes")
        (grad,) = torch.autograd.grad(logits[:, target].sum(), store["act"])
    return store["act"].detach(), grad, logits.detach(), target


def grad_cam(model: nn.Module, x: torch.Tensor, layer: str | None = None,
             target: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_c mean_ij(dy_t/dA_c,ij) * A_c)`` at ``layer``.

    Returns:
        ``(cam (B, h, w) at the layer's resolution, unnormalised; logits (B, K))``.
    """
    _, module = resolve_layer(model, layer or default_target_layer(model))
    act, grad, logits, _ = _activation_with_grad(model, x, module, target)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * act).sum(1)), logits


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


def ablate_channels(model: nn.Module, x: torch.Tensor, layer: str, channels: Sequence[int],
                    target: int, n_random: int = 8, seed: int = 0) -> AblationResult:
    """Zero ``channels`` at ``layer`` and compare the logit drop with ``n_random`` random sets of as many.

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
        out = _first_tensor(output)
        n_channels = out.shape[1]
        if any(not 0 <= c < n_channels for c in channels):
            raise LayerError(f"channel index out of range for {label} with {n_channels} channels")
        mask = torch.ones(out.shape[0], n_channels, 1, 1, dtype=out.dtype, device=out.device)
        mask[1, channels] = 0
        for row in range(2, out.shape[0]):
            mask[row, torch.randperm(n_channels, generator=generator)[:len(channels)]] = 0
        state["ran"] = True
        return out * mask

    batch = x[:1].expand(2 + n_random, *x.shape[1:])
    with preserve_model_state(model), _hooked([(module, hook)]), torch.inference_mode():
        logits = model(batch)[:, target].float()
    if "ran" not in state:
        raise LayerError(f"layer {label} did not run in the forward pass")
    drops = (logits[0] - logits[1:]).cpu().numpy()
    return AblationResult(label, int(target), channels, float(logits[0]), float(logits[1]), float(drops[0]),
                          drops[1:], float(drops[1:].mean()) if n_random else float("nan"))


def _centred_gram(X: torch.Tensor, debiased: bool) -> torch.Tensor:
    """Gram matrix of the rows of X, centred; debiased: the U-statistic form of Song et al. (2012)."""
    gram = X @ X.T
    n = gram.shape[0]
    if not debiased:
        means = gram.mean(0)
        return gram - means[:, None] - means[None, :] + means.mean()
    gram = gram.clone().fill_diagonal_(0)
    means = gram.sum(0) / (n - 2)
    means = means - means.sum() / (2 * (n - 1))
    return (gram - means[:, None] - means[None, :]).fill_diagonal_(0)


def linear_cka(X: torch.Tensor | np.ndarray, Y: torch.Tensor | np.ndarray, *, debiased: bool = False) -> float:
    """Linear CKA (Kornblith et al. 2019) between two representations of the same n examples.

    ``CKA = <K_c, L_c>_F / (||K_c||_F ||L_c||_F)`` with centred Gram matrices ``K_c`` of ``X X^T``.
    Computed through the n x n Gram matrices, so wide layers cost O(n^2 p). X: (n, p), Y: (n, q);
    extra dimensions are flattened. Invariant to orthogonal transforms and isotropic scaling.

    With few examples and wide layers (n << p) the plain estimate is biased towards 1 even for
    unrelated representations; ``debiased=True`` uses the unbiased HSIC estimator (Song et al. 2012,
    as in Nguyen, Raghu & Kornblith 2021), which needs n >= 4 and may return NaN on degenerate input.
    """
    X = torch.as_tensor(X).flatten(1).double()
    Y = torch.as_tensor(Y).flatten(1).double()
    n_min = 4 if debiased else 2
    if X.shape[0] != Y.shape[0] or X.shape[0] < n_min:
        raise ValueError(f"CKA needs the same n >= {n_min} examples on both sides, got {X.shape[0]} and {Y.shape[0]}")
    K, L = _centred_gram(X, debiased), _centred_gram(Y, debiased)
    kk, ll = (K * K).sum(), (L * L).sum()
    if kk <= 0 or ll <= 0:
        return float("nan") if debiased else 0.0
    return float((K * L).sum() / torch.sqrt(kk * ll))


@dataclass
class LayerCorrespondence:
    """CKA between every teacher layer (rows) and every student layer (columns)."""

    matrix: np.ndarray
    teacher_layers: list[str]
    student_layers: list[str]

    def best_teacher_layer(self) -> dict[str, str]:
        """For each student layer, the teacher layer it is most similar to."""
        return {s: self.teacher_layers[int(self.matrix[:, j].argmax())] for j, s in enumerate(self.student_layers)}


def _layer_features(model: nn.Module, images: torch.Tensor, batch_size: int, pool: int | None) -> OrderedDict:
    feats: OrderedDict[str, list[torch.Tensor]] = OrderedDict()
    for start in range(0, len(images), batch_size):
        acts, _ = capture_activations(model, images[start:start + batch_size])
        for label, a in acts.items():
            if pool and (a.shape[-1] > pool or a.shape[-2] > pool):
                a = F.adaptive_avg_pool2d(a, pool)  # bounds memory at O(n C pool^2)
            feats.setdefault(label, []).append(a.flatten(1).double().cpu())
    return OrderedDict((label, torch.cat(chunks)) for label, chunks in feats.items())


def cka_matrix(teacher: nn.Module, student: nn.Module, images: torch.Tensor, *,
               student_images: torch.Tensor | None = None, batch_size: int = 16,
               pool: int | None = 8, debiased: bool = True) -> LayerCorrespondence:
    """Linear CKA between all teacher and student layers over a batch of images.

    Args:
        images: normalised (N, 3, H, W) batch, N >= 4 (a few dozen images give stable values).
        student_images: the same images preprocessed for the student, if it differs.
        pool: activations larger than ``pool x pool`` are average-pooled to it before flattening.
        debiased: use the debiased estimator (default: layers are far wider than the number of
            images, where plain CKA is close to 1 for any pair; see `linear_cka`).
    """
    t_feats = _layer_features(teacher, images, batch_size, pool)
    s_feats = _layer_features(student, images if student_images is None else student_images, batch_size, pool)
    matrix = np.array([[linear_cka(t, s, debiased=debiased) for s in s_feats.values()] for t in t_feats.values()])
    return LayerCorrespondence(matrix, list(t_feats), list(s_feats))
