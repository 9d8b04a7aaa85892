"""What a model says about its own layers: the ones the feature-map view steps through (`FeatureLayer`) and how its
classifier reads the last of them (`CamHead`). The registered models (`core.models`) declare them by hand; any other
torchvision CNN has them found from its forward pass (`core.torchvision_teachers`).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn


class FeatureLayer(NamedTuple):
    """One layer the feature-map view steps through.

    Attributes:
        label: readable name ("denseblock3"). module: its path in ``named_modules``.
        channels: channels of its output. reduction: input side / output side.
    """

    label: str
    module: str
    channels: int
    reduction: int


class CamHead(NamedTuple):
    """How a model that ends in global average pooling and a linear layer turns its last map into logits.

    ``logits = classifier(mean over positions of post(layer output))``, with ``post`` a ReLU when ``relu``;
    the class activation map of class c is then ``sum_k classifier.weight[c, k] * post(A)_k`` (CAM).
    """

    layer: str  # module path of the pooled feature layer
    classifier: nn.Linear
    relu: bool  # a ReLU between the layer's output and the pooling
