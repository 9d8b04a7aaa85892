"""Shared fixtures: tiny seeded models and inputs (offline, fast on 2 CPU cores).

Every model fixture is built under a fixed seed and returned in eval mode; tests get a fresh
instance each time, so a test that breaks a model cannot affect another.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.models import CamHead, build_student
from tests import support
from tests.support import ForwardCounter


class TinyCNN(nn.Module):
    """Two 3x3 convolutions with ReLU, global average pooling and a linear head (3 classes)."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, stride=2)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, num_classes)

    @property
    def cam_head(self) -> CamHead:
        return CamHead("relu2", self.fc, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def seeded(build, seed: int = 0) -> nn.Module:
    """Build a model under ``seed`` without disturbing the global random state; eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


@pytest.fixture
def single_thread():
    """Run a test on one torch thread (restored afterwards): `tests.support.single_thread`."""
    with support.single_thread():
        yield


@pytest.fixture
def tiny_cnn() -> nn.Module:
    """Seeded `TinyCNN` in eval mode (layers found by the Conv2d fallback: conv1, conv2)."""
    return seeded(TinyCNN)


@pytest.fixture
def tiny_student() -> nn.Module:
    """Seeded ``build_student(4, depth=3)`` in eval mode (layers block1..block3)."""
    return seeded(lambda: build_student(4, depth=3))


@pytest.fixture
def image32() -> torch.Tensor:
    """A seeded normalised (1, 3, 32, 32) input."""
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def image64() -> torch.Tensor:
    """A seeded normalised (1, 3, 64, 64) input."""
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def count_forwards():
    """``count_forwards(model) -> ForwardCounter``; the hooks are removed after the test."""
    counters = []

    def attach(model: nn.Module) -> ForwardCounter:
        counters.append(ForwardCounter(model))
        return counters[-1]

    yield attach
    for counter in counters:
        counter.remove()


@pytest.fixture
def hook_count():
    """``hook_count(model) -> int``: forward/backward hooks registered anywhere in ``model``."""

    def count(model: nn.Module) -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                   + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())

    return count


@pytest.fixture
def registry_restored():
    """The datasets a test registers (a user's folder read by name) are undone: the registry is module state
    other tests read."""
    from core import catalog

    saved, problems = dict(catalog.DATASETS), dict(catalog.FOLDER_PROBLEMS)
    yield
    catalog.DATASETS.clear()
    catalog.DATASETS.update(saved)
    catalog.FOLDER_PROBLEMS.clear()
    catalog.FOLDER_PROBLEMS.update(problems)
