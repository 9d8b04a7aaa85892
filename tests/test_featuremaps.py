"""Hooks, feature-map capture, average maps, channel ranking and ablation, CKA."""

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.cka import cka_matrix, linear_cka
from core.explain import explain
from core.featuremaps import ablate_channels, average_feature_map, capture_activations, layer_maps, rank_channels
from core.hooks import LayerError, model_layers, preserve_model_state, record_activations, resolve_layer

pytestmark = pytest.mark.usefixtures("single_thread")


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model, before):
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_capture_returns_every_layer_in_order_from_one_forward(tiny_student, image64, count_forwards, hook_count):
    counter = count_forwards(tiny_student)
    hooks = hook_count(tiny_student)
    acts, logits = capture_activations(tiny_student, image64)
    assert counter.calls == 1
    assert list(acts) == ["block1", "block2", "block3"]
    assert [tuple(a.shape) for a in acts.values()] == [(1, 24, 16, 16), (1, 48, 8, 8), (1, 96, 4, 4)]
    with torch.no_grad():
        assert torch.allclose(logits, tiny_student(image64))
    assert hook_count(tiny_student) == hooks


def test_conv_fallback_for_unregistered_models(tiny_cnn, image32):
    assert model_layers(tiny_cnn) == [("conv1", "conv1"), ("conv2", "conv2")]
    acts, _ = capture_activations(tiny_cnn, image32, layers=["conv2"])
    assert list(acts) == ["conv2"] and acts["conv2"].shape == (1, 6, 16, 16)


class Exploding(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_hooks_removed_and_state_restored_after_an_exception(tiny_cnn, image32, hook_count):
    tiny_cnn.conv2 = Exploding()
    tiny_cnn.fc.weight.requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"):
        capture_activations(tiny_cnn, image32, layers=["conv1"])
    with pytest.raises(RuntimeError, match="boom"):
        rank_channels(tiny_cnn, image32, "conv1", target=0)
    assert hook_count(tiny_cnn) == 0
    assert not tiny_cnn.training and not tiny_cnn.fc.weight.requires_grad
    assert tiny_cnn.conv1.weight.requires_grad and tiny_cnn.conv1.weight.grad is None


def test_hooks_removed_when_the_block_raises(tiny_student, hook_count):
    with pytest.raises(KeyError), record_activations(tiny_student):
        assert hook_count(tiny_student) == 3
        raise KeyError("inside")
    assert hook_count(tiny_student) == 0


def test_an_empty_layer_list_hooks_nothing(tiny_student, image64, hook_count):
    with record_activations(tiny_student, []) as store:
        assert hook_count(tiny_student) == 0
        tiny_student(image64)
    assert len(store) == 0
    with record_activations(tiny_student, None) as store:
        assert hook_count(tiny_student) == tiny_student.depth  # None: every layer
        tiny_student(image64)
    assert list(store) == ["block1", "block2", "block3"]


def test_preserve_model_state_restores_flags_and_grads(tiny_cnn):
    with preserve_model_state(tiny_cnn):
        tiny_cnn.conv1.training = True
        tiny_cnn.fc.weight.requires_grad_(False)
        tiny_cnn.conv1.weight.grad = torch.ones_like(tiny_cnn.conv1.weight)
    assert not tiny_cnn.conv1.training and tiny_cnn.fc.weight.requires_grad
    assert tiny_cnn.conv1.weight.grad is None


def test_nested_preserve_blocks_restore_what_the_inner_one_changed_and_stay_per_thread(tiny_cnn):
    with preserve_model_state(tiny_cnn):
        with preserve_model_state(tiny_cnn):
            tiny_cnn.conv1.training = True
        seen = []  # another thread's block on the same model records and restores on its own
        worker = threading.Thread(target=lambda: seen.append(_changed_and_restored(tiny_cnn)))
        worker.start()
        worker.join()
        assert seen == [True]
    assert not tiny_cnn.conv1.training
    with preserve_model_state(tiny_cnn):  # the outer block has ended: a new one records again
        tiny_cnn.fc.weight.requires_grad_(False)
    assert tiny_cnn.fc.weight.requires_grad


def _changed_and_restored(model) -> bool:
    with preserve_model_state(model):
        model.fc.training = True
    return not model.fc.training


def test_layer_maps_keep_only_the_channel_means_not_the_activations(tiny_student, image64):
    kept = capture_activations(tiny_student, image64).activations
    result = layer_maps(tiny_student, image64)
    for label, activation in kept.items():
        assert result["shapes"][label] == tuple(activation.shape[1:])
    last = result["layers"].last
    expected = F.interpolate(kept[last].mean(1, keepdim=True), size=image64.shape[-2:], mode="bilinear",
                             align_corners=False)[0, 0]
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert np.allclose(result["layers"][last], expected.numpy(), atol=1e-5)


def test_hooks_ignore_forward_passes_of_other_threads(tiny_student, image64):
    with record_activations(tiny_student) as store:
        worker = threading.Thread(target=lambda: tiny_student(image64))
        worker.start()
        worker.join()
        assert len(store) == 0  # another user's forward on the shared model is not recorded
        with torch.no_grad():
            tiny_student(image64)
    assert list(store) == ["block1", "block2", "block3"]


def test_refuses_a_model_in_training_mode(tiny_student, image64):
    tiny_student.train()
    with pytest.raises(ValueError, match="eval"):
        capture_activations(tiny_student, image64)


def test_unknown_layer_lists_the_known_ones(tiny_student):
    with pytest.raises(LayerError, match="block1, block2, block3"):
        resolve_layer(tiny_student, "layer9")
    assert resolve_layer(tiny_student, "block2")[1] is tiny_student.block2


def test_average_feature_map_is_channel_mean_upsampled_and_normalised():
    act = torch.rand(2, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    maps = average_feature_map(act, 16)
    manual = F.interpolate(act.mean(1, keepdim=True), size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    lo = manual.flatten(1).min(1).values.view(2, 1, 1)
    hi = manual.flatten(1).max(1).values.view(2, 1, 1)
    assert maps.shape == (2, 16, 16)
    assert torch.allclose(maps, (manual - lo) / (hi - lo), atol=1e-6)
    assert average_feature_map(torch.ones(3, 4, 4), (8, 6)).abs().sum() == 0  # constant map -> zeros, no NaN


def test_layer_maps_are_finite_input_sized_and_in_range(tiny_student, image64, count_forwards):
    before = snapshot(tiny_student)
    counter = count_forwards(tiny_student)
    result = layer_maps(tiny_student, image64)
    assert counter.calls == 1
    assert list(result["layers"]) == ["block1", "block2", "block3"]
    for m in result["layers"].values():
        assert m.shape == (64, 64) and m.dtype == np.float32 and np.isfinite(m).all()
        assert m.min() >= 0 and m.max() <= 1
    assert result["shapes"]["block3"] == (96, 4, 4)
    assert np.isclose(result["probabilities"].sum(), 1) and result["predicted"] == result["logits"].argmax()
    assert_untouched(tiny_student, before)



def test_layer_maps_upsample_a_layer_only_when_it_is_read_and_match_the_average_map(tiny_student, image64,
                                                                                    monkeypatch):
    calls = []
    real = torch.nn.functional.interpolate
    monkeypatch.setattr(torch.nn.functional, "interpolate", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = layer_maps(tiny_student, image64)
    assert calls == [], "no map is upsampled before it is read"
    last = result["layers"]["block3"]
    assert len(calls) == 1
    assert result["layers"]["block3"] is last and len(calls) == 1, "a map read twice is made once"
    activations, _ = capture_activations(tiny_student, image64)
    for label, act in activations.items():  # each equals the paper's average map of that layer
        assert np.allclose(result["layers"][label], average_feature_map(act[0], 64).numpy(), atol=1e-6)

class HandCam(nn.Module):
    """features: identity 1x1 conv; head: global average pool + linear W (no bias)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(2, 2, 1, bias=False)
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            self.head.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_grad_cam_equals_hand_computed_map():
    model = HandCam().eval()
    x0 = torch.arange(16.0).view(4, 4) / 16
    x = torch.stack([x0, torch.full((4, 4), 0.5)]).unsqueeze(0)
    # dy_t/dA_c,ij = W[t, c] / 16, so alpha_c = W[t, c] / 16 and cam = relu(sum_c alpha_c A_c), then min-max
    def expected(cam):
        return ((cam - cam.min()) / (cam.max() - cam.min())).numpy()
    cam0 = explain(model, x, "grad_cam", 0, predict=False, layer="features").heatmap
    assert np.allclose(cam0, expected(torch.relu((x0 - 0.5) / 16)), atol=1e-6)
    cam1 = explain(model, x, "grad_cam", 1, predict=False, layer="features").heatmap
    assert np.allclose(cam1, expected(torch.relu((0.5 * x0 + 2 * 0.5) / 16)), atol=1e-6)
    assert cam0[0, 0] == 0 and cam0[3, 3] > 0


class Decisive(nn.Module):
    """Channel 2 of ``conv`` carries almost all of class 0's logit."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.full((4, 3, 1, 1), 0.3) + torch.arange(4.0).view(4, 1, 1, 1) * 0.05)
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[0.1, 0.1, 3.0, 0.1], [0.0, 0.0, 0.0, 0.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def test_channel_ranking_and_ablation_find_the_decisive_channel(count_forwards):
    model = Decisive().eval()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.5
    ranking = rank_channels(model, x, "conv", target=0, k=2)
    assert ranking.channels[0] == 2 and ranking.target == 0
    assert ranking.maps.shape == (2, 8, 8)
    counter = count_forwards(model)
    result = ablate_channels(model, x, "conv", ranking.channels[:1], target=0, n_random=8, seed=0)
    assert counter.calls == 1 and counter.images == 10
    with torch.no_grad():
        act2 = torch.relu(model.conv(x))[0, 2].mean()
    assert result.drop == pytest.approx(3.0 * float(act2), rel=1e-5)  # the logit is linear in the pooled channels
    assert result.confirms_ranking and result.drop > result.random_drops.max()
    weakest = ablate_channels(model, x, "conv", [1], target=0, n_random=8, seed=0)
    assert not weakest.confirms_ranking  # a channel worth 0.1 of the logit beats no draw that hits channel 2
    again = ablate_channels(model, x, "conv", [2], target=0, n_random=8, seed=0)
    assert np.array_equal(again.random_drops, result.random_drops)


def test_ablation_rejects_channels_out_of_range(tiny_student, image64):
    with pytest.raises(LayerError, match="out of range"):
        ablate_channels(tiny_student, image64, "block1", [99], target=0)


def test_rank_channels_leaves_the_model_untouched(tiny_student, image64):
    before = snapshot(tiny_student)
    ranking = rank_channels(tiny_student, image64, "block2", k=4)
    assert len(ranking.channels) == 4 and ranking.scores.shape == (48,)
    assert ranking.target == int(tiny_student(image64).argmax())
    assert_untouched(tiny_student, before)


def test_linear_cka_properties():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 10, generator=g)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g))
    assert linear_cka(X, X) == pytest.approx(1.0)
    assert linear_cka(X, 3.0 * X @ q) == pytest.approx(1.0)  # orthogonal + isotropic scaling invariance
    assert linear_cka(X, X + 5.0) == pytest.approx(1.0)  # centring
    assert linear_cka(X, torch.randn(40, 10, generator=g)) < 0.5
    with pytest.raises(ValueError):
        linear_cka(X, X[:5])
    assert linear_cka(X, 3.0 * X @ q, debiased=True) == pytest.approx(1.0)


def test_debiased_cka_removes_the_small_sample_bias():
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randn(40, 2000, generator=g), torch.randn(40, 2000, generator=g)  # unrelated, n << p
    assert linear_cka(X, Y) > 0.8  # the plain estimate calls them similar
    assert abs(linear_cka(X, Y, debiased=True)) < 0.15  # its spread is about 0.03 at n = 40
    shared = torch.randn(40, 5, generator=g)
    assert linear_cka(shared @ torch.randn(5, 2000, generator=g), shared @ torch.randn(5, 300, generator=g),
                      debiased=True) > 0.5


def test_cka_matrix_labels_and_self_match(tiny_student):
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    result = cka_matrix(tiny_student, tiny_student, images, batch_size=4, pool=2)
    assert result.matrix.shape == (3, 3)
    assert result.teacher_layers == result.student_layers == ["block1", "block2", "block3"]
    assert np.allclose(np.diag(result.matrix), 1.0)
    assert result.best_teacher_layer() == {"block1": "block1", "block2": "block2", "block3": "block3"}


def test_the_students_hook_free_pass_gives_what_the_hooks_record(tiny_student, image64):
    every = [label for label, _ in model_layers(tiny_student)]
    hooked = capture_activations(tiny_student, image64, every)  # layers listed: the hooks
    direct = capture_activations(tiny_student, image64)  # every layer: forward_intermediates
    assert list(direct.activations) == every == list(hooked.activations)
    for label in every:
        assert torch.equal(direct.activations[label], hooked.activations[label])
    assert torch.equal(direct.logits, hooked.logits)
    with torch.inference_mode():
        assert torch.equal(direct.logits, tiny_student(image64))
