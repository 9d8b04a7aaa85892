"""Hook and model-state plumbing under every explanation: layer lookup, hooks, a shared model left as found.

The app caches one model instance per checkpoint and every user shares it, so nothing here may
change a model: the model must be in eval mode, hooks only live inside a context manager and only
record the forward passes of the thread that registered them, and `preserve_model_state` restores
every flag a method might touch. Nothing here imports from the explanation modules above it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from core.models import feature_layers, gradcam_layer

__all__ = ["LayerError", "model_layers", "default_target_layer", "resolve_layer", "require_eval",
           "preserve_model_state", "hooked", "first_tensor", "record_activations"]


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
    """Module path of the standard Grad-CAM layer: the activation the classifier pools where the model declares
    it (`core.models.gradcam_layer`), else its last feature layer (its last convolution for an unknown model)."""
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


_PRESERVING = threading.local()  # ids of the models this thread is already preserving


def _all_modules(model: nn.Module) -> list[nn.Module]:
    """Every module once, in one walk: ``modules()`` and then ``parameters()`` walk the tree twice and build a
    dotted name per module, which costs about as much as the student's channel means."""
    found, seen, stack = [], set(), [model]
    while stack:
        module = stack.pop()
        if id(module) not in seen:
            seen.add(id(module))
            found.append(module)
            stack.extend(child for child in module._modules.values() if child is not None)
    return found


@contextmanager
def preserve_model_state(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every module's ``training`` flag and every parameter's ``requires_grad`` and ``.grad``.

    A safety net for code that touches a shared model (TorchCAM's demo does the same). Flags are
    written back directly: ``.train()``/``.eval()`` are never called. Nested on the same model in one
    thread, only the outermost block records and restores: walking every module and parameter costs about
    0.1 ms, as much as a third of the student's whole forward pass, and an explanation nests it several deep.
    """
    active = _PRESERVING.__dict__.setdefault("ids", set())
    if id(model) in active:
        yield model
        return
    modules = _all_modules(model)
    modes = [(m, m.training) for m in modules]
    params = [(p, p.requires_grad, p.grad) for m in modules for p in m._parameters.values() if p is not None]
    active.add(id(model))
    try:
        yield model
    finally:  # only what changed is written back: a module's attribute write is slow, and this runs per map
        active.discard(id(model))
        for m, mode in modes:
            if m.training != mode:
                m.training = mode
        for p, requires_grad, grad in params:
            if p.requires_grad != requires_grad:
                p.requires_grad_(requires_grad)
            if p.grad is not grad:
                p.grad = grad


@contextmanager
def hooked(modules: Sequence[tuple[nn.Module, object]]) -> Iterator[None]:
    """Register ``(module, forward_hook)`` pairs; remove them all on exit, also after an error."""
    handles = []
    try:
        for module, hook in modules:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def first_tensor(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@contextmanager
def record_activations(model: nn.Module, layers: Sequence[str] | None = None, *,
                       keep_graph: bool = False, reduce=None) -> Iterator[OrderedDict]:
    """Context manager: while open, forward passes of this thread store each layer's output.

    Yields an OrderedDict ``label -> activation`` in the listed order, filled by the forward passes
    run inside the block (the last one wins). ``layers=None`` records every layer of `model_layers`;
    an empty list records nothing and registers no hook. Hooks are removed on exit, on success and
    on error. ``keep_graph=True`` keeps the outputs attached to autograd (for losses on
    intermediate layers, e.g. attention transfer); otherwise they are detached. ``reduce``: a function of
    the activation whose result is stored instead, in the hook, so that the activation itself is freed as in
    a plain forward (keeping every layer's output costs fresh memory, and its page faults, on every pass).
    """
    pairs = [resolve_layer(model, name) for name in layers] if layers is not None else \
        [(label, model.get_submodule(path)) for label, path in model_layers(model)]
    store: OrderedDict[str, torch.Tensor] = OrderedDict()
    owner = threading.get_ident()

    def make_hook(label):
        def hook(module, inputs, output):
            if threading.get_ident() == owner:  # skip other users' forwards on a shared model
                out = first_tensor(output)
                out = out if keep_graph else out.detach()
                store[label] = reduce(out) if reduce is not None else out
        return hook

    with hooked([(module, make_hook(label)) for label, module in pairs]):
        yield store
    order = [label for label, _ in pairs]
    for label in order:  # the forward may run layers in another order than listed
        if label in store:
            store.move_to_end(label)
