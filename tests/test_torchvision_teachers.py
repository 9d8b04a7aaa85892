"""Any torchvision classification CNN is a teacher by name: its layers, Grad-CAM and CAM found from the model (not
named by hand), saved and loaded like the registered ones, started from a local state dict; transformers and
names torchvision does not have are refused with the reason."""

import numpy as np
import pytest
import torch
import torchvision

from core import checkpoints
from core.checkpoints import CheckpointMeta
from core.explain import explain
from core.featuremaps import layer_maps
from core.models import TEACHERS, build_model, build_teacher, feature_layers, gradcam_layer
from tests.support import single_thread

# What torchvision's own code makes these models of (their stages, the channels of the last), written out here.
EXPECTED = {
    "resnet50": (["relu", "layer1", "layer2", "layer3", "layer4"], 2048, "layer4"),
    "efficientnet_b0": (["features.1", "features.2", "features.3", "features.5", "features.8"], 1280, "features.8"),
    "convnext_tiny": (["features.1", "features.3", "features.5", "features.7"], 768, None),
    "mobilenet_v3_small": (["features.0", "features.1", "features.3", "features.8", "features.12"], 576, None),
}


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_layers_grad_cam_and_cam_are_found_from_the_model(name):
    layers, channels, pooled = EXPECTED[name]
    torch.manual_seed(0)
    model = build_teacher(name, 3).eval()
    assert name in TEACHERS
    assert [module for _, module in feature_layers(model)] == layers
    assert model.feature_info[-1].channels == channels and model.feature_info[-1].reduction == 32
    # CAM where the logits are one linear layer of the last map's average; elsewhere none, and Grad-CAM on the last
    assert (model.cam_head.layer if model.cam_head else None) == pooled
    assert gradcam_layer(model) == layers[-1]
    x = torch.randn(1, 3, 96, 96)
    maps = layer_maps(model, x)
    assert list(maps["layers"]) == layers and all(np.isfinite(m).all() for m in maps["layers"].values())
    grad_cam = explain(model, x, "grad_cam", 1, predict=False).heatmap
    assert grad_cam.shape == (96, 96) and np.isfinite(grad_cam).all()
    if pooled:  # at the pooled activation with nothing between it and the linear layer, Grad-CAM is ReLU(CAM)
        cam = explain(model, x, "cam", 1, predict=False).heatmap
        assert np.allclose(grad_cam, cam, atol=1e-4)


def test_a_relu_between_the_last_map_and_the_pooling_is_found_even_as_a_function():
    # torchvision's DenseNet-169 applies F.relu to features.norm5 in its forward, not as a module
    model = build_teacher("densenet169", 2)
    assert model.cam_head.layer == "features.norm5" and model.cam_head.relu


def test_a_torchvision_teacher_is_saved_and_loaded_like_a_registered_one(tmp_path):
    torch.manual_seed(0)
    model = build_teacher("mobilenet_v3_small", 3).eval()
    meta = CheckpointMeta(arch="mobilenet_v3_small", num_classes=3, classes=["a", "b", "c"], input_size=64,
                          mean=[0.5] * 3, std=[0.25] * 3, role="teacher", dataset="phantom", arch_args={})
    path = checkpoints.save(model, meta, tmp_path / "teacher.pt")
    loaded, loaded_meta = checkpoints.load(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert [m for _, m in feature_layers(loaded)] == EXPECTED["mobilenet_v3_small"][0]


def test_local_weights_start_the_trunk_and_a_new_classifier(tmp_path):
    torch.manual_seed(1)
    imagenet_like = torchvision.models.get_model("resnet50", weights=None, num_classes=1000)
    torch.save(imagenet_like.state_dict(), tmp_path / "weights.pt")
    model = build_teacher("resnet50", 4, pretrained_weights=tmp_path / "weights.pt")
    assert torch.equal(model.conv1.weight, imagenet_like.conv1.weight)
    assert torch.equal(model.layer4[-1].conv3.weight, imagenet_like.layer4[-1].conv3.weight)
    assert model.fc.out_features == 4  # the 1000-class classifier does not fit: left as built
    torch.save({"head.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no tensor matches a resnet50 layer"):
        build_teacher("resnet50", 4, pretrained_weights=tmp_path / "other.pt")


@pytest.mark.parametrize("name, words", [("vit_b_16", "vision transformer"), ("swin_t", "vision transformer"),
                                         ("fasterrcnn_resnet50_fpn", "not an image classifier"),
                                         ("resnet5O", "unknown teacher 'resnet5O'; choose one of densenet121")])
def test_what_cannot_be_a_teacher_is_refused_with_the_reason(name, words):
    with pytest.raises(ValueError, match=words):
        build_teacher(name, 3)
    with pytest.raises(ValueError):
        build_model(name, 3)
    assert name not in TEACHERS


def test_the_command_line_trains_and_distils_from_a_torchvision_teacher(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "core.train", "--dataset", "phantom", "--teacher-arch",
                          "mobilenet_v3_small", "--epochs", "1", "--student-epochs", "1", "--input-size", "64",
                          "--max-per-class", "12", "--depth", "3", "--threads", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    teacher, meta = checkpoints.load(tmp_path / "teacher" / "best.pt")
    assert meta.arch == "mobilenet_v3_small" and meta.arch_args == {}
    assert [m for _, m in feature_layers(teacher)] == EXPECTED["mobilenet_v3_small"][0]
    student_meta = checkpoints.load_meta(tmp_path / "student_s0" / "best.pt")
    assert student_meta.train["teacher_sha256"] == checkpoints.file_sha256(tmp_path / "teacher" / "best.pt")
