"""CAM: the class's linear weights over the pooled layer, checked against the logits and Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam
from torch import nn

from core.cam import class_activation_maps
from core.explain import explain
from core.hooks import LayerError
from core.models import build_model, build_student
from tests.conftest import seeded


def test_cam_mean_over_positions_is_the_logit_without_bias(tiny_student):
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    for target in range(4):
        out = class_activation_maps(tiny_student, x, target)
        with torch.no_grad():
            logits = tiny_student(x)
        bias = tiny_student.classifier.bias[target]
        assert torch.allclose(out["raw"].mean((1, 2)), logits[:, target] - bias, atol=1e-5)
        assert out["maps"].shape == (3, 64, 64) and bool((out["maps"] >= 0).all())


def test_cam_on_the_densenet_teacher_includes_its_final_relu():
    teacher = seeded(lambda: build_model("densenet121", 4))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    out = class_activation_maps(teacher, x, [1, 3])
    with torch.no_grad():
        logits = teacher(x)
    expected = logits[[0, 1], [1, 3]] - teacher.classifier.bias[[1, 3]]
    assert torch.allclose(out["raw"].mean((1, 2)), expected, atol=1e-4)
    assert out["layer"] == "norm5" and out["targets"].tolist() == [1, 3]


def test_cam_defaults_to_each_images_predicted_class(tiny_student):
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    out = class_activation_maps(tiny_student, x)
    with torch.no_grad():
        assert out["targets"].tolist() == tiny_student(x).argmax(1).tolist()


@pytest.mark.parametrize("depth", [3, 5])
def test_cam_equals_grad_cam_up_to_a_positive_factor(depth):
    # Grad-CAM's channel weights on a GAP + linear model are w[c, k] / (h * w): the same map, scaled.
    student = seeded(lambda: build_student(4, depth=depth), seed=depth)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    for target in range(4):
        cam = class_activation_maps(student, x, target)["raw"][0]
        grad_cam = LayerGradCam(student, getattr(student, f"block{depth}")).attribute(
            x, target=target, relu_attributions=True)[0, 0].detach()
        h, w = cam.shape
        assert torch.allclose(grad_cam, cam.clamp_min(0) / (h * w), atol=1e-6)
        a = explain(student, x, "cam", target, predict=False).heatmap
        b = explain(student, x, "grad_cam", target, predict=False).heatmap
        assert np.allclose(a, b, atol=1e-5)


def test_cam_explainer_costs_one_forward_and_reports_its_class(tiny_student, image64, count_forwards):
    counter = count_forwards(tiny_student)
    e = explain(tiny_student, image64, "cam", predict=False)
    assert counter.images == 1 and e.passes == {"forward": 1, "backward": 0}
    with torch.no_grad():
        assert e.target == int(tiny_student(image64).argmax())
    assert e.extras["layer"] == "block3" and e.heatmap.shape == (64, 64)
    assert explain(tiny_student, image64, "cam", 2, predict=False).target == 2


def test_cam_on_a_model_without_a_declared_head_says_why(image32):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(LayerError, match="cam_head"):
        class_activation_maps(model.eval(), image32)


@pytest.mark.parametrize("arch", ["student", "densenet121"])
def test_grad_cam_at_the_default_layer_equals_relu_cam_on_student_and_teacher(arch):
    # Grad-CAM equals ReLU(CAM) up to a positive factor only at the tensor the classifier pools: the teacher's
    # relu5 (after norm5), not norm5 itself, whose negative positions get no gradient through the ReLU.
    from core.hooks import default_target_layer

    model = seeded(lambda: build_model(arch, 4), seed=4)
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(9))  # the teacher's last map: 3 x 3
    assert default_target_layer(model) == model.cam_head.layer and not model.cam_head.relu
    flat, differs_before_relu = [], []
    for target in range(4):
        cam = explain(model, x, "cam", target, predict=False)
        grad_cam = explain(model, x, "grad_cam", target, predict=False)
        assert grad_cam.extras["layer"] == cam.extras["layer"]
        assert np.allclose(cam.heatmap, grad_cam.heatmap, atol=1e-5), (arch, target)  # both min-max scaled
        flat.append(np.ptp(cam.heatmap) == 0)
        if arch == "densenet121":
            norm5 = explain(model, x, "grad_cam", target, predict=False, layer="features.norm5").heatmap
            differs_before_relu.append(not np.allclose(cam.heatmap, norm5, atol=1e-3))
    assert not all(flat), "some class has a map to compare"
    assert arch != "densenet121" or any(differs_before_relu), "before its ReLU, the teacher's maps differ"


def test_the_teachers_relu_module_adds_no_state_and_shipped_checkpoints_load_unchanged():
    from pathlib import Path

    import torch.nn.functional as F
    from torchvision.models import densenet121

    from core import checkpoints

    teacher = build_model("densenet121", 4)
    assert list(teacher.state_dict()) == list(densenet121(weights=None, num_classes=4).state_dict())
    model, meta = checkpoints.load(Path(__file__).resolve().parent.parent / "checkpoints/phantom/teacher.pt")
    x = torch.randn(2, 3, meta.input_size, meta.input_size, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():  # the forward torchvision's DenseNet runs, with its functional ReLU
        expected = model.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(model.features(x)), 1), 1))
        assert torch.allclose(model(x), expected, atol=1e-5)
