"""Any torchvision classification CNN as a teacher, by name: built with random weights and the dataset's class count
(nothing is downloaded), its layers found from its own forward pass rather than from a list written per
architecture.

What the explorer needs of a model (`core.layer_info`) is found once per architecture:

- ``feature_info``: the layers the feature-map view steps through. One forward pass on the meta device (shapes only,
  no memory, no arithmetic) records every module's output; from the model's trunk (descending while one child holds
  it all, opening a child that spans three resolutions or more, such as a RegNet's ``trunk_output``), the last module
  at each resolution is kept, in forward order: a ResNet's stem and ``layer1`` to ``layer4``, an EfficientNet's
  stages, a ConvNeXt's stages. A module called more than once in a forward (a shared ReLU) is never one of them.
- ``cam_head``: where the classifier reads the global average of the last feature layer through one linear layer
  (with or without a ReLU between, whether a module or a function: found by computing both on a small image), CAM
  applies; elsewhere (a MobileNetV3's two-layer head, a ConvNeXt's norm after pooling) there is no CAM head, and
  Grad-CAM takes the last feature layer.

Vision transformers are refused: they have no spatial feature maps to step through or to pool.
"""

from __future__ import annotations

import functools

import torch
import torchvision.models
from torch import nn

from core.layer_info import CamHead, FeatureLayer

# Families without spatial feature maps (tokens instead), and two whose training forward returns auxiliary outputs.
TRANSFORMERS = ("vit_", "swin_", "maxvit_")
AUXILIARY = ("googlenet", "inception_v3")
NAMES = tuple(name for name in torchvision.models.list_models(module=torchvision.models)
              if not name.startswith(TRANSFORMERS) and name not in AUXILIARY)
# The classifier's own pooling (a VGG's 7 x 7 average) resizes the last map; it is not a layer of the trunk.
HEAD_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
PROBE_SIDE = 224  # the side the layers are found at: every torchvision CNN classifies it
CHECK_SIDE = 96  # the side of the one real forward that tells whether CAM applies


def refusal(name: str) -> str | None:
    """Why ``name`` cannot be a teacher here; None when it can."""
    if name in NAMES:
        return None
    if name.startswith(TRANSFORMERS):
        return (f"{name} is a vision transformer: it has no spatial feature maps to step through or to pool, so its "
                "decisions cannot be shown layer by layer here; choose a CNN")
    if name in AUXILIARY:
        return f"{name} returns auxiliary outputs while it trains; choose another CNN"
    if name in torchvision.models.list_models():
        return f"{name} is not an image classifier (a detection, segmentation or video model)"
    return None


def build(name: str, num_classes: int) -> nn.Module:
    """``name``'s torchvision model with ``num_classes`` outputs and random weights, knowing its layers (the
    ``feature_info`` and ``cam_head`` attributes, and ``role`` "teacher").

    Raises:
        ValueError: a name that is not a torchvision classification CNN (`refusal`).
    """
    if name not in NAMES:
        raise ValueError(refusal(name) or f"unknown architecture {name!r}; torchvision's classification CNNs: "
                                          f"{', '.join(NAMES)}")
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except NotImplementedError:  # on the meta device, an initialisation that reads a tensor's values (RegNet's)
        with torch.device("cpu"):
            model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    layers, head = _layers(name)
    model.role = "teacher"
    model.feature_info = list(layers)
    model.cam_head = CamHead(head[0], model.get_submodule(head[1]), head[2]) if head else None
    return model


@functools.lru_cache(maxsize=32)
def _layers(name: str) -> tuple[tuple[FeatureLayer, ...], tuple[str, str, bool] | None]:
    """(feature layers, (pooled layer, classifier, ReLU between) or None) of an architecture, found once."""
    try:
        with torch.device("meta"):
            probe = torchvision.models.get_model(name, weights=None, num_classes=2).eval()
    except (NotImplementedError, RuntimeError):  # an initialisation that reads a tensor's values (RegNet's)
        with torch.device("cpu"):
            probe = torchvision.models.get_model(name, weights=None, num_classes=2).eval()
    records, order = _trace(probe, PROBE_SIDE)
    kept = _stages(probe, records, order)
    layers = tuple(FeatureLayer(path, path, records[path][1], PROBE_SIDE // records[path][2]) for path in kept)
    if not layers:
        raise ValueError(f"{name}: no layer gives a spatial feature map")
    return layers, _cam_head(name, layers[-1].module)


def _trace(model: nn.Module, side: int) -> tuple[dict[str, tuple[int, int | None, int | None]], list[str]]:
    """Every module's (calls, channels, side) of its first output, None where it is not a (B, C, H, W) map, and the
    modules in the order they first ran."""
    records: dict[str, list] = {}
    order: list[str] = []

    def hook(path):
        def record(module, inputs, output):
            if path in records:
                records[path][0] += 1
                return
            spatial = isinstance(output, torch.Tensor) and output.dim() == 4
            records[path] = [1, output.shape[1] if spatial else None, output.shape[-1] if spatial else None]
            order.append(path)
        return record

    handles = [m.register_forward_hook(hook(path)) for path, m in model.named_modules() if path]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return {path: tuple(r) for path, r in records.items()}, order


def _stages(model: nn.Module, records: dict, order: list[str]) -> list[str]:
    """The last module at each resolution (above 1 x 1) of the model's trunk, in forward order."""
    def maps(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
        kids = [(f"{prefix}{name}", child) for name, child in module.named_children()
                if not isinstance(child, HEAD_POOLING)]
        return [(path, child) for path, child in kids if path in records and records[path][0] == 1
                and records[path][2] is not None and records[path][2] > 1]

    chosen: list[str] = []

    def walk(module: nn.Module, prefix: str) -> None:
        kids = maps(module, prefix)
        if len(kids) == 1 and maps(kids[0][1], kids[0][0] + "."):
            return walk(kids[0][1], kids[0][0] + ".")  # the one child that holds the whole trunk
        for path, child in kids:
            inner = maps(child, path + ".")
            if len({records[p][2] for p, _ in inner}) >= 3:  # several stages in one container
                walk(child, path + ".")
            else:
                chosen.append(path)

    walk(model, "")
    last_at: dict[int, str] = {}
    for path in sorted(chosen, key=order.index):
        last_at[records[path][2]] = path
    return sorted(last_at.values(), key=order.index)


@functools.lru_cache(maxsize=32)
def _cam_head(name: str, layer: str) -> tuple[str, str, bool] | None:
    """(layer, classifier path, ReLU between) where the logits are a linear layer of the layer's global average
    (after a ReLU or not), checked on a small image with a fresh model; None where neither gives the logits."""
    with torch.device("cpu"), torch.random.fork_rng(devices=[]):  # real numbers, whatever device a caller set
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None, num_classes=3).eval()
        return _cam_check(model, layer)


def _cam_check(model: nn.Module, layer: str) -> tuple[str, str, bool] | None:
    linears = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    path, classifier = linears[-1]
    captured = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: captured.update(out=o.detach().clone()))
    try:
        with torch.no_grad():
            logits = model(torch.randn(2, 3, CHECK_SIDE, CHECK_SIDE, device="cpu"))
    finally:
        handle.remove()
    with torch.no_grad():
        for relu in (False, True):
            pooled = (captured["out"].relu() if relu else captured["out"]).mean(dim=(2, 3))
            if pooled.shape[1] == classifier.in_features and torch.allclose(classifier(pooled), logits, atol=1e-4):
                return layer, path, relu
    return None
