"""Teachers (torchvision, no downloads) and the shallow student; each knows its own layers.

Every model takes a normalised (B, 3, H, W) float tensor and returns (B, num_classes) logits.
Its ``feature_info`` lists the layers that the feature-map view steps through, in forward order,
with their channels and resolution (`feature_layers` gives the ``(label, module_path)`` pairs).
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import DenseNet, ResNet
from torchvision.models.resnet import BasicBlock

from core.layer_info import CamHead, FeatureLayer
from core.registry import Registry
from core import torchvision_teachers

MODELS = Registry("architecture")


class DenseNet121Teacher(DenseNet):
    """torchvision DenseNet121 whose final ReLU is a module of its own, out of place.

    torchvision applies ``F.relu(..., inplace=True)`` to the output of ``features.norm5``; that would
    overwrite what a forward hook captured there and break Captum's layer attributions. As a module
    (``relu5``) its output, the activation the classifier pools, is a layer hooks can reach: Grad-CAM there
    equals ReLU(CAM) (see `core.cam`), as on the student, whose blocks end in their own ReLU.
    State-dict keys are torchvision's (the ReLU holds no tensor), so a local torchvision state dict and every
    shipped checkpoint load unchanged.
    """

    role = "teacher"

    def __init__(self, num_classes: int):
        super().__init__(32, (6, 12, 24, 16), 64, num_classes=num_classes)
        self.relu5 = nn.ReLU()

    @property
    def feature_info(self) -> list[FeatureLayer]:
        """Stem, every dense block and transition, and the final norm, in forward order.

        The final norm is read after its ReLU (``relu5``): that is what the classifier pools, so the feature-map
        view's last step, the default Grad-CAM layer and CAM all show the same activation."""
        channels, reduction = self.features.conv0.out_channels, 4  # conv0 and pool0 each halve the side
        info = [FeatureLayer("stem", "features.pool0", channels, reduction)]
        for name, module in self.features.named_children():
            if name.startswith("denseblock"):
                last = list(module.children())[-1]
                channels = last.norm1.num_features + last.conv2.out_channels
            elif name.startswith("transition"):
                channels, reduction = module.conv.out_channels, reduction * 2
            else:
                continue
            info.append(FeatureLayer(name, f"features.{name}", channels, reduction))
        return info + [FeatureLayer("norm5", "relu5", self.features.norm5.num_features, reduction)]

    @property
    def cam_head(self) -> CamHead:
        return CamHead("relu5", self.classifier, relu=False)  # forward: features -> relu5 -> pool -> classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu5(self.features(x))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.classifier(out)


class ResNet18Teacher(ResNet):
    """torchvision ResNet18 (state-dict keys unchanged) that knows its own layers."""

    role = "teacher"

    def __init__(self, num_classes: int):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)

    @property
    def feature_info(self) -> list[FeatureLayer]:
        info = [FeatureLayer("stem", "maxpool", self.conv1.out_channels, 4)]
        for i in range(1, 5):
            layer = getattr(self, f"layer{i}")
            info.append(FeatureLayer(f"layer{i}", f"layer{i}", layer[-1].conv2.out_channels, 4 * 2 ** (i - 1)))
        return info

    @property
    def cam_head(self) -> CamHead:
        return CamHead("layer4", self.fc, relu=False)  # a BasicBlock ends in its own ReLU


MODELS.register("densenet121")(DenseNet121Teacher)
MODELS.register("resnet18")(ResNet18Teacher)


# Channel widths of the default student. The first block is a stride-2 convolution with few
# channels: full-resolution early convolutions cost most of a shallow CNN's time, and the
# feature-map analysis must stay cheap.
STUDENT_WIDTHS = (24, 48, 96, 192, 256, 256, 256, 256)
STUDENT_POOLED_BLOCKS = 4  # blocks 1-4 halve the resolution; deeper blocks keep it


class ConvBlock(nn.Sequential):
    """conv3x3 - BatchNorm - ReLU, optionally followed by 2x2 max pooling."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, pool: bool = True):
        layers = [
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=False),  # out of place: hooks keep what they captured
        ]
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


@MODELS.register("student")
class StudentCNN(nn.Module):
    """Shallow student: ``depth`` conv blocks (``block1``..``blockN``), global pooling, a linear head.

    Args:
        num_classes: number of output classes.
        depth: number of conv blocks, 3 to 8 (the paper's student has five).
        widths: output channels per block; defaults to the first ``depth`` of `STUDENT_WIDTHS`.
        dropout: dropout before the classifier.
        pooled: how many blocks, from the first, end in 2x2 max pooling (all of them when ``depth`` is smaller).
            Each one fewer doubles the side of the last feature map (the explanation's resolution) and the cost
            of the blocks after it.
    """

    role = "student"

    def __init__(self, num_classes: int, depth: int = 5, widths: tuple[int, ...] | None = None,
                 dropout: float = 0.2, pooled: int = STUDENT_POOLED_BLOCKS):
        super().__init__()
        if not 3 <= depth <= 8:
            raise ValueError(f"student depth must be between 3 and 8, got {depth}")
        if pooled < 0:
            raise ValueError(f"pooled blocks must be 0 or more, got {pooled}")
        widths = tuple(widths) if widths is not None else STUDENT_WIDTHS[:depth]
        if len(widths) != depth:
            raise ValueError(f"widths has {len(widths)} entries but depth is {depth}")
        c_in = 3
        for i, c_out in enumerate(widths, start=1):
            block = ConvBlock(c_in, c_out, stride=2 if i == 1 else 1, pool=i <= pooled)
            self.add_module(f"block{i}", block)
            c_in = c_out
        self.depth, self.widths, self.pooled = depth, widths, pooled
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, num_classes)

    @property
    def feature_info(self) -> list[FeatureLayer]:
        # block1 halves the side by its stride 2; each pooled block (the first ``pooled``) once more
        return [FeatureLayer(f"block{i}", f"block{i}", c, 2 * 2 ** min(i, self.pooled))
                for i, c in enumerate(self.widths, start=1)]

    @property
    def cam_head(self) -> CamHead:
        # the last block ends in its ReLU (and max pooling where it pools); dropout is the identity in eval
        return CamHead(f"block{self.depth}", self.classifier, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.depth + 1):
            x = getattr(self, f"block{i}")(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(self.dropout(x))

    def forward_intermediates(self, x: torch.Tensor, reduce=None) -> tuple[torch.Tensor, dict[str, object]]:
        """The logits and every `feature_info` layer's output (``reduce(output)`` when given), in one pass.

        The same computation as ``forward``, without hooks: at this model's size the hooks' dispatch is a
        measurable share of the pass (`core.featuremaps.capture_activations` uses this when it can).
        """
        outputs = {}
        for i in range(1, self.depth + 1):
            x = getattr(self, f"block{i}")(x)
            outputs[f"block{i}"] = reduce(x) if reduce is not None else x
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(self.dropout(x)), outputs


# The registered teachers (their layers written out), then every other torchvision classification CNN (its layers
# found from its forward pass, `core.torchvision_teachers`).
REGISTERED_TEACHERS = tuple(name for name, cls in MODELS.items() if cls.role == "teacher")
TEACHERS = REGISTERED_TEACHERS + tuple(n for n in torchvision_teachers.NAMES if n not in REGISTERED_TEACHERS)


def build_model(arch: str, num_classes: int, **arch_args) -> nn.Module:
    """Build an architecture with random weights (nothing is downloaded): a registered one, or any torchvision
    classification CNN by name (`core.torchvision_teachers.build`, which takes no further arguments)."""
    if arch not in MODELS and arch in torchvision_teachers.NAMES and not arch_args:
        return torchvision_teachers.build(arch, num_classes)
    if arch not in MODELS and (why := torchvision_teachers.refusal(arch)):
        raise ValueError(why)
    return MODELS.build(arch, num_classes, **arch_args)


def build_teacher(name: str, num_classes: int, pretrained_weights: str | Path | None = None) -> nn.Module:
    """Build a teacher by name; optionally load a local state dict (e.g. ImageNet weights).

    A classifier whose shape differs from ``num_classes`` is left at its random initialisation,
    so ImageNet weights (1000 classes) can be used as a starting point.
    """
    if name not in TEACHERS:
        raise ValueError(torchvision_teachers.refusal(name) or
                         f"unknown teacher {name!r}; choose one of {', '.join(TEACHERS)}")
    model = build_model(name, num_classes)
    if pretrained_weights is not None:
        state = torch.load(pretrained_weights, map_location="cpu", weights_only=True)
        own = model.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not any(v.dim() == 4 for v in usable.values()):  # not one convolution's weights fit
            raise ValueError(f"{pretrained_weights}: no tensor matches a {name} layer")
        model.load_state_dict(usable, strict=False)
    return model


def build_student(num_classes: int, depth: int = 5, widths: tuple[int, ...] | None = None,
                  dropout: float = 0.2, pooled: int = STUDENT_POOLED_BLOCKS) -> nn.Module:
    """Build the shallow student (see `StudentCNN`)."""
    return build_model("student", num_classes, depth=depth, widths=widths, dropout=dropout, pooled=pooled)


_LARGEST_SIDE_TRIED = 4096  # where the search for the smallest side starts from above


def smallest_side_needed(model: str | nn.Module, side: int, **arch_args) -> int | None:
    """None when ``model`` classifies images of ``side`` px; else the smallest side it does classify.

    Each pooling halves the side, and a side pooled to nothing fails deep inside the forward pass (a DenseNet-121
    below 29 px, a student that pools 5 blocks below 63). Tried on a twin built on the meta device, which allocates
    no memory, computes nothing and runs none of the given model's hooks; a larger side only keeps more pixels, so
    the smallest is found by bisection, and only for a side that fails. The training recipe and `core.explain` ask.

    Args:
        model: a registered architecture's name (built with ``arch_args``), or a model built from one.
        side: the smaller of the image's height and width (each is pooled on its own).

    Returns:
        None as well for a model whose class is not registered here (its own forward pass says).

    Raises:
        ValueError: arguments the architecture refuses (a student's depth).
    """
    if isinstance(model, str) and model not in MODELS:
        return None  # a torchvision CNN found by name: its own forward pass says
    if isinstance(model, nn.Module):
        found = _architecture(model)
        if found is None:
            return None
        model, arch_args = found
    key = (model, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in arch_args.items())))
    if _classifies(key, side):
        return None
    low, high = side, _LARGEST_SIDE_TRIED  # low fails, high is taken to pass
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if _classifies(key, middle) else (middle, high)
    return high


def _architecture(model: nn.Module) -> tuple[str, dict] | None:
    """The registered name of ``model``'s class and its constructor's settings, which a registered model keeps as
    attributes of the same names (a student's depth, widths and pooled blocks; its dropout is a module, and does
    not change sides); None for a class not registered."""
    arch = next((name for name, cls in MODELS.items() if type(model) is cls), None)
    if arch is None:
        return None
    settings = {name: getattr(model, name, None) for name in _constructor_settings(MODELS[arch])}
    return arch, {name: value for name, value in settings.items() if value is not None
                  and not isinstance(value, nn.Module)}


@functools.lru_cache(maxsize=64)
def _constructor_settings(cls: type) -> tuple[str, ...]:
    """A registered class's constructor settings after ``num_classes`` (read once: `inspect.signature` costs about
    as much as the rest of an explanation's input checks)."""
    return tuple(inspect.signature(cls).parameters)[1:]


@functools.lru_cache(maxsize=16)
def _meta_twin(key: tuple) -> nn.Module:
    arch, arch_args = key
    with torch.device("meta"):
        return build_model(arch, 2, **dict(arch_args)).eval()


@functools.lru_cache(maxsize=512)
def _classifies(key: tuple, side: int) -> bool:
    with torch.no_grad():
        try:
            _meta_twin(key)(torch.zeros(1, 3, side, side, device="meta"))
        except RuntimeError:
            return False
    return True


def feature_layers(model: nn.Module) -> list[tuple[str, str]]:
    """Readable, ordered ``(label, module_path)`` pairs of a model that knows its layers (``feature_info``)."""
    info = getattr(model, "feature_info", None)
    if info is None:
        raise TypeError(f"{type(model).__name__} has no feature_info layer list")
    return [(layer.label, layer.module) for layer in info]


def gradcam_layer(model: nn.Module) -> str:
    """Module path of the standard Grad-CAM target: the activation the classifier pools where the model declares
    it (its `CamHead` without a ReLU after the layer: there Grad-CAM equals ReLU(CAM), see `core.cam`), else the
    last feature layer."""
    head = getattr(model, "cam_head", None)
    if isinstance(head, CamHead) and not head.relu:
        return head.layer
    return feature_layers(model)[-1][1]


def layer_table(model: nn.Module, input_size: int) -> list[dict]:
    """The model's layers as the maps see them, measured by one forward pass on a blank image.

    One row per ``feature_info`` layer in forward order, then the head: ``layer``, ``module``, ``output``
    (channels, height, width), ``parameters`` (those of the modules that run after the previous row and up to
    this one, so the rows add up to the model's total) and ``maps`` (which explanations read this layer).
    """
    info = model.feature_info
    modules = dict(model.named_modules())
    cam = getattr(model, "cam_head", None)
    owner = {id(m): sum(p.numel() for p in m.parameters(recurse=False)) for m in modules.values()}
    rows, segment, seen = [], [0], set()

    def count(module, _inp, _out):  # each module's own parameters, once, in the order they run
        if id(module) not in seen:
            seen.add(id(module))
            segment[0] += owner[id(module)]

    def close(layer):
        def hook(_module, _inp, out):
            out = out[0] if isinstance(out, (tuple, list)) else out
            role = "feature maps" + (", Grad-CAM (default) and CAM" if cam and layer.module == cam.layer else "")
            rows.append({"layer": layer.label, "module": layer.module, "output": tuple(out.shape[1:]),
                         "parameters": segment[0], "maps": role})
            segment[0] = 0
        return hook

    handles = [m.register_forward_hook(count) for m in modules.values()]
    handles += [modules[layer.module].register_forward_hook(close(layer)) for layer in info]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    # parameters no forward hook saw (none in these models) would otherwise go missing from the total
    unseen = sum(n for key, n in owner.items() if key not in seen)
    head = next((name for name, m in modules.items() if cam is not None and m is cam.classifier), "")
    rows.append({"layer": "head (global pooling + linear)", "module": head,
                 "output": tuple(logits.shape[1:]), "parameters": segment[0] + unseen, "maps": ""})
    return rows


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: int) -> int:
    """FLOPs of one forward pass on a (1, 3, S, S) input (a multiply-add counts as 2)."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
