"""Model registry, layer lists, parameter and FLOP counts."""

import pytest
import torch

from core.models import (MODELS, build_model, build_student, build_teacher, count_flops, count_parameters,
                         feature_layers, gradcam_layer, layer_table)


@pytest.mark.parametrize("name", ["densenet121", "resnet18"])
def test_teachers_build_offline_and_expose_layers(name):
    model = build_teacher(name, 4).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4)
    paths = [p for _, p in feature_layers(model)]
    modules = dict(model.named_modules())
    assert all(p in modules for p in paths)
    assert gradcam_layer(model) == paths[-1]


def test_densenet_layer_list_is_readable():
    labels = [label for label, _ in feature_layers(build_teacher("densenet121", 4))]
    assert labels == ["stem", "denseblock1", "transition1", "denseblock2", "transition2", "denseblock3",
                      "transition3", "denseblock4", "norm5"]


def test_densenet_hooked_output_is_not_overwritten_in_place():
    model = build_teacher("densenet121", 4).eval()
    seen = {}
    handle = model.features.norm5.register_forward_hook(lambda m, i, o: seen.setdefault("out", o.clone()))
    kept = {}
    h2 = model.features.norm5.register_forward_hook(lambda m, i, o: kept.setdefault("ref", o))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    handle.remove(), h2.remove()
    assert (seen["out"] < 0).any()  # BN output has negatives, so an in-place ReLU would change it
    assert torch.equal(seen["out"], kept["ref"])


@pytest.mark.parametrize("depth", [3, 5, 8])
def test_student_depths(depth):
    model = build_student(4, depth=depth).eval()
    assert [label for label, _ in feature_layers(model)] == [f"block{i}" for i in range(1, depth + 1)]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)


def test_student_rejects_bad_depth_and_widths():
    with pytest.raises(ValueError, match="between 3 and 8"):
        build_student(4, depth=2)
    with pytest.raises(ValueError, match="widths"):
        build_student(4, depth=4, widths=(8, 8))


def test_student_is_far_cheaper_than_teacher():
    teacher, student = build_teacher("densenet121", 4), build_student(4)
    assert count_parameters(student) * 5 < count_parameters(teacher)
    assert count_flops(student, 128) * 10 < count_flops(teacher, 128)
    # A conv layer's FLOPs by hand: 3x3 conv, 3->24 channels, stride 2 on 32x32 -> 16x16 outputs.
    assert count_flops(build_student(4, depth=3, widths=(24, 8, 8)), 32) >= 2 * 16 * 16 * 24 * 27


def test_unknown_names_and_pretrained_weights(tmp_path):
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("vgg99", 4)
    with pytest.raises(ValueError, match="unknown teacher"):
        build_teacher("student", 4)
    source = build_teacher("resnet18", 10)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = build_teacher("resnet18", 4, pretrained_weights=tmp_path / "w.pt")
    assert torch.equal(model.conv1.weight, source.conv1.weight)  # the 10-class head is skipped
    assert model.fc.out_features == 4
    torch.save({"junk": torch.zeros(3)}, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="no tensor matches"):
        build_teacher("resnet18", 4, pretrained_weights=tmp_path / "junk.pt")
    assert set(MODELS) >= {"densenet121", "resnet18", "student"}


@pytest.mark.parametrize("build", [lambda: build_teacher("densenet121", 4), lambda: build_teacher("resnet18", 4),
                                   lambda: build_student(4, depth=3), lambda: build_student(4, depth=7),
                                   lambda: build_student(4, pooled=2), lambda: build_student(4, pooled=0)])
def test_feature_info_states_each_layers_channels_and_resolution(build):
    model = build().eval()
    info = model.feature_info
    seen = {}
    modules = dict(model.named_modules())
    handles = [modules[layer.module].register_forward_hook(lambda m, i, o, label=layer.label: seen.setdefault(label, o))
               for layer in info]
    with torch.no_grad():
        model(torch.zeros(1, 3, 128, 128))
    for handle in handles:
        handle.remove()
    assert [layer.label for layer in info] == list(seen)
    for layer in info:
        assert seen[layer.label].shape[1:] == (layer.channels, 128 // layer.reduction, 128 // layer.reduction)


def test_each_pooled_block_fewer_doubles_the_side_of_the_students_last_map():
    sides = {}
    for pooled in (4, 3, 2):
        _, maps = build_student(4, pooled=pooled).eval().forward_intermediates(torch.zeros(1, 3, 128, 128))
        sides[pooled] = maps["block5"].shape[-1]
    assert sides == {4: 4, 3: 8, 2: 16}  # 128 px: stride 2, then one halving per pooled block
    with pytest.raises(ValueError, match="pooled blocks"):
        build_student(4, pooled=-1)


def test_registry_refuses_unknown_architecture_arguments_and_duplicate_names():
    with pytest.raises(ValueError, match="no argument.*depht"):
        build_model("student", 4, depht=4)
    with pytest.raises(ValueError, match="already registered"):
        MODELS.register("student")(object)


@pytest.mark.parametrize("build", [lambda: build_student(4), lambda: build_teacher("densenet121", 4)])
def test_layer_table_measures_shapes_and_shares_out_every_parameter(build):
    model = build()
    rows = layer_table(model, 64)
    info = model.feature_info
    assert [r["layer"] for r in rows[:-1]] == [layer.label for layer in info]
    for row, layer in zip(rows, info):  # the measured output agrees with what the layer list states
        assert row["output"] == (layer.channels, 64 // layer.reduction, 64 // layer.reduction)
    assert rows[-1]["output"] == (4,)
    assert sum(r["parameters"] for r in rows) == sum(p.numel() for p in model.parameters())
    assert all(r["parameters"] > 0 for r in rows)
    marked = [r["module"] for r in rows if "CAM" in r["maps"]]
    assert marked == [model.cam_head.layer]
    assert model.training  # left as found


def test_metadata_knows_every_architecture_and_its_arguments_without_torch():
    import inspect

    from core.metadata import ARCHITECTURES

    taken = {name: tuple(p for p in inspect.signature(cls).parameters) for name, cls in MODELS.items()}
    assert taken == ARCHITECTURES
