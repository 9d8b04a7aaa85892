"""Explainers: one call shape, stated pass counts = counted forwards, cost model, side effects."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.costs import calibrate, estimate_cost
from core.explain import EXPLAINERS, ExplainError, explain
from core.explainers import registered_methods
from core.featuremaps import normalize_map
from core.models import TEACHERS, ConvBlock, build_model, build_teacher, feature_layers
from core.recipe import INPUT_SIZE_RANGE, SettingError, TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread")

METHODS = ["feature_maps", "cam", "grad_cam", "saliency", "integrated_gradients", "occlusion", "gradient_shap",
           "kernel_shap", "lime"]
# Small settings keep the tiny-model runs fast; the defaults are covered by test_every_method_*.
SMALL = {"integrated_gradients": {"n_steps": 5, "internal_batch_size": 2},
         "occlusion": {"window": 8, "stride": 5, "perturbations_per_eval": 4},
         "gradient_shap": {"n_samples": 5, "internal_batch_size": 2},
         "kernel_shap": {"n_samples": 23, "grid": 4, "perturbations_per_eval": 8},
         "lime": {"n_samples": 23, "grid": 4, "perturbations_per_eval": 8}}


def test_registry_lists_every_method():
    # the methods every model runs, then the one a distilled student runs once it has a head trained beside it
    assert list(EXPLAINERS) == METHODS + ["teacher_evidence"]
    assert all(EXPLAINERS[m].title for m in EXPLAINERS)
    assert registered_methods() == METHODS and EXPLAINERS["teacher_evidence"].needs_head


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_a_valid_map_and_leaves_model_and_input_alone(method, tiny_cnn, image32, hook_count):
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    x = image32.clone()
    hooks = hook_count(tiny_cnn)
    result = explain(tiny_cnn, x, method, target=1, predict=False)  # default parameters
    assert result.heatmap.shape == (32, 32) and result.heatmap.dtype == np.float32
    assert np.isfinite(result.heatmap).all() and result.heatmap.min() >= 0 and result.heatmap.max() <= 1
    assert result.method == method and result.target == 1 and result.seconds > 0
    assert set(result.passes) == {"forward", "backward"}
    assert result.params == EXPLAINERS[method].defaults((32, 32))
    assert hook_count(tiny_cnn) == hooks and not tiny_cnn.training
    assert all(torch.equal(before[k], v) for k, v in tiny_cnn.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in tiny_cnn.parameters())
    assert torch.equal(x, image32) and x.grad is None and not x.requires_grad


@pytest.mark.parametrize("target", [2, None])
@pytest.mark.parametrize("method", METHODS)
def test_stated_passes_equal_counted_forward_images(method, target, tiny_student, image32, count_forwards):
    counter = count_forwards(tiny_student)
    result = explain(tiny_student, image32, method, target, predict=False, **SMALL.get(method, {}))
    assert result.passes["forward"] == counter.images
    estimate = estimate_cost(tiny_student, method, 32, target_known=target is not None, **SMALL.get(method, {}))
    assert estimate.passes == result.passes


def test_batched_methods_feed_their_batch_size(tiny_student, image32, count_forwards):
    counter = count_forwards(tiny_student)
    result = explain(tiny_student, image32, "occlusion", 0, predict=False, window=8, stride=4,
                     perturbations_per_eval=16)
    assert result.passes["forward"] == 7 * 7 + 1 == counter.images
    assert counter.calls == 1 + 4  # the unoccluded pass, then ceil(49 / 16) batches
    counter.reset()
    explain(tiny_student, image32, "integrated_gradients", 0, predict=False, n_steps=32, internal_batch_size=16)
    assert (counter.images, counter.calls) == (32, 2)


def test_calibration_is_done_once_and_predicts_from_pass_counts(tiny_student, image32, count_forwards):
    first = estimate_cost(tiny_student, "integrated_gradients", 32, n_steps=8, internal_batch_size=8)
    counter = count_forwards(tiny_student)
    second = estimate_cost(tiny_student, "integrated_gradients", 32, n_steps=16, internal_batch_size=8)
    assert counter.images == 0  # cached per (model, size, batch, threads)
    assert second.predicted_seconds == pytest.approx(2 * first.predicted_seconds)
    cal = calibrate(tiny_student, 32, 8)
    assert first.predicted_seconds == pytest.approx(8 * (cal.forward_s + cal.backward_s))
    result = explain(tiny_student, image32, "saliency", 0)
    assert counter.images == 1 + calibrate_images(1) and result.predicted_seconds > 0


def calibrate_images(batch: int, repeats: int = 3) -> int:
    """Images a first calibration pushes through: (warm-up + repeats) forwards and forward+backwards."""
    return 2 * (1 + repeats) * batch


def hand_grad_cam(model: nn.Module, x: torch.Tensor, module: nn.Module, target: int) -> torch.Tensor:
    """Grad-CAM by its definition, ReLU(sum_c mean_ij(dy_t/dA_c,ij) * A_c), with plain autograd."""
    store = {}
    handle = module.register_forward_hook(lambda m, i, o: store.setdefault("act", o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits[0, target], store["act"])
    return F.relu((grad.mean(dim=(2, 3), keepdim=True) * store["act"]).sum(1)).detach()


def test_grad_cam_method_matches_grad_cam_by_definition(tiny_student, image64):
    result = explain(tiny_student, image64, "grad_cam", target=2, predict=False)
    cam = hand_grad_cam(tiny_student, image64, tiny_student.block3, 2)
    ours = normalize_map(F.interpolate(cam[:, None], size=(64, 64), mode="bilinear", align_corners=False)[0, 0])
    assert np.allclose(result.heatmap, ours.numpy(), atol=1e-5)
    assert result.extras["layer"] == "block3"


def test_grad_cam_on_a_named_intermediate_layer_is_grad_cam_there_at_the_input_size(tiny_student, image64):
    result = explain(tiny_student, image64, "grad_cam", target=2, predict=False, layer="block2")
    cam = hand_grad_cam(tiny_student, image64, tiny_student.block2, 2)
    ours = normalize_map(F.interpolate(cam[:, None], size=(64, 64), mode="bilinear", align_corners=False)[0, 0])
    assert result.heatmap.shape == (64, 64)
    assert np.allclose(result.heatmap, ours.numpy(), atol=1e-5)
    assert result.extras["layer"] == "block2" and result.params["layer"] == "block2"
    last = explain(tiny_student, image64, "grad_cam", target=2, predict=False)
    assert not np.allclose(result.heatmap, last.heatmap, atol=1e-3), "another layer, another map"


def test_grad_cam_refuses_an_unknown_layer_before_running(tiny_student, image32, count_forwards):
    counter = count_forwards(tiny_student)
    with pytest.raises(ExplainError, match=r"no layer 'nosuch'.*block1, block2, block3"):
        explain(tiny_student, image32, "grad_cam", 0, predict=False, layer="nosuch")
    with pytest.raises(ExplainError, match="nosuch"):
        estimate_cost(tiny_student, "grad_cam", 32, layer="nosuch")
    with pytest.raises(ExplainError, match="layer must be"):
        explain(tiny_student, image32, "grad_cam", 0, predict=False, layer=3)
    assert counter.images == 0


def test_parameters_override_defaults_and_unknown_ones_raise(tiny_student, image32):
    result = explain(tiny_student, image32, "integrated_gradients", 0, predict=False, n_steps=3,
                     internal_batch_size=2)
    assert result.params["n_steps"] == 3 and result.params["internal_batch_size"] == 2
    assert result.params["baseline"] == EXPLAINERS["integrated_gradients"].defaults((32, 32))["baseline"]
    with pytest.raises(ExplainError, match="n_step"):
        explain(tiny_student, image32, "integrated_gradients", 0, predict=False, n_step=3)


def test_feature_maps_explanation_carries_every_layer(tiny_student, image64, count_forwards):
    counter = count_forwards(tiny_student)
    result = explain(tiny_student, image64, "feature_maps", predict=False)
    assert counter.calls == 1
    assert list(result.extras["layers"]) == ["block1", "block2", "block3"]
    assert np.array_equal(result.heatmap, result.extras["layers"]["block3"])
    assert result.target == int(np.argmax(result.extras["logits"]))


class PatchLinear(nn.Module):
    """Class 0 logit = sum(x * W), W constant on each of 4x4 patches: an additive model."""

    def __init__(self):
        super().__init__()
        weights = torch.linspace(-1, 1, 16).view(1, 1, 4, 4)
        self.register_buffer("w", F.interpolate(weights, size=(16, 16), mode="nearest"))

    def forward(self, x):
        score = (x * self.w).sum(dim=(1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], 1)


@pytest.mark.parametrize("method", ["kernel_shap", "occlusion"])
def test_perturbation_methods_recover_an_additive_model(method):
    model = PatchLinear().eval()
    x = torch.ones(1, 3, 16, 16)
    params = {"n_samples": 40, "grid": 4} if method == "kernel_shap" else {"window": 4, "stride": 4}
    result = explain(model, x, method, 0, predict=False, **params)
    # each patch's Shapley value (and occlusion drop) is its own contribution: 3 channels x 16 pixels x w
    per_pixel = 3 * 16 * model.w[0, 0]
    assert np.allclose(result.extras["raw"], per_pixel.numpy(), atol=1e-4)
    assert result.heatmap.argmax() == np.argmax(per_pixel.numpy())


def test_stochastic_methods_are_seeded_and_leave_global_rngs_alone(tiny_student, image32):
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a = explain(tiny_student, image32, "lime", 0, predict=False, **SMALL["lime"])
    b = explain(tiny_student, image32, "lime", 0, predict=False, **SMALL["lime"])
    c = explain(tiny_student, image32, "gradient_shap", 0, predict=False, **SMALL["gradient_shap"])
    d = explain(tiny_student, image32, "gradient_shap", 0, predict=False, **SMALL["gradient_shap"])
    assert np.array_equal(a.heatmap, b.heatmap) and np.array_equal(c.heatmap, d.heatmap)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])


def test_gradient_shap_chunks_average_to_the_same_estimator(tiny_student, image32, count_forwards):
    counter = count_forwards(tiny_student)
    explain(tiny_student, image32, "gradient_shap", 0, predict=False, n_samples=10, internal_batch_size=4)
    assert counter.images == 10 and counter.calls == 3  # memory bounded by the chunk, not n_samples


def test_default_occlusion_window_scales_with_input_size():
    occlusion = EXPLAINERS["occlusion"]
    assert occlusion.defaults((128, 128))["window"] == 16 and occlusion.defaults((128, 128))["stride"] == 8
    assert occlusion.defaults((224, 224))["window"] == 28 and occlusion.defaults((224, 224))["stride"] == 14


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "shap"}, "unknown method"),
    ({"method": "integrated_gradients", "n_step": 3}, "no parameter"),
    ({"method": "integrated_gradients", "n_steps": 0}, "n_steps must be at least 1"),
    ({"method": "occlusion", "window": 64}, "window"),
    ({"method": "saliency", "target": 7}, "out of range"),
])
def test_bad_requests_raise_explain_error(tiny_student, image32, kwargs, message):
    with pytest.raises(ExplainError, match=message):
        explain(tiny_student, image32, predict=False, **kwargs)


def test_bad_inputs_and_training_mode_are_refused(tiny_student, image32):
    with pytest.raises(ExplainError, match=r"\(1, C, H, W\)"):
        explain(tiny_student, image32[0], "saliency", 0)
    with pytest.raises(ExplainError, match=r"\(1, C, H, W\)"):
        explain(tiny_student, image32.repeat(2, 1, 1, 1), "saliency", 0)
    tiny_student.train()
    with pytest.raises(ValueError, match="eval"):
        explain(tiny_student, image32, "saliency", 0)
    assert tiny_student.training  # refused, not switched


# (architecture, its arguments, a side it cannot classify): each pooling halves the side until nothing is left (a
# ResNet-18's rounds up: it classifies any side)
TOO_SMALL = [("densenet121", {}, 16), ("student", {"depth": 5}, 16), ("student", {"depth": 3, "pooled": 1}, 2)]


@pytest.mark.parametrize("arch, args, side", TOO_SMALL, ids=[f"{a} {s} px" for a, _, s in TOO_SMALL])
def test_an_image_too_small_for_the_model_is_refused_before_any_pass(arch, args, side, count_forwards):
    model = build_model(arch, 4, **args).eval()
    with torch.no_grad(), pytest.raises(RuntimeError):
        model(torch.zeros(1, 3, side, side))  # what the model itself says: deep inside, about a pooled size
    counter = count_forwards(model)
    with pytest.raises(ExplainError, match=r"at least \d+ px") as refused:
        explain(model, torch.zeros(1, 3, side, side + 40), "feature_maps", 0, predict=False)
    assert counter.calls == 0 and f"{side}x{side + 40}" in str(refused.value)
    smallest = int(re.search(r"at least (\d+) px", str(refused.value)).group(1))
    with torch.no_grad():
        model(torch.zeros(1, 3, smallest, smallest))  # the side named is the smallest the model classifies
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, 3, smallest - 1, smallest - 1))
    counter.reset()
    assert explain(model, torch.zeros(1, 3, smallest, smallest), "feature_maps", 0, predict=False).heatmap.size
    assert counter.calls == 1
    from core.inference import PredictionError, predict_logits
    counter.reset()
    with pytest.raises(PredictionError, match=f"at least {smallest} px"):  # predict refuses it the same way
        predict_logits(model, torch.zeros(2, 3, side, side + 40))
    assert counter.calls == 0
    if side >= INPUT_SIZE_RANGE[0]:  # the training recipe refuses the same sides, naming the same smallest one
        models = {"teacher_arch": arch} if arch in TEACHERS else {"teacher_arch": "resnet18", "depth": args["depth"]}
        with pytest.raises(SettingError, match=f"use at least {smallest}$"):
            TrainConfig(input_size=side, **models)


class NaNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.conv(x * float("nan")).mean(dim=(2, 3)))


@pytest.mark.parametrize("method", ["saliency", "feature_maps"])
def test_non_finite_maps_are_reported(method):
    with pytest.raises(ExplainError, match="non-finite"):
        explain(NaNModel().eval(), torch.randn(1, 3, 16, 16), method, 0, predict=False)


@pytest.mark.parametrize("arch", ["densenet121", "resnet18"])
def test_teachers_step_through_readable_layers_and_explain(arch, image64, count_forwards):
    model = build_teacher(arch, 4).eval()
    counter = count_forwards(model)
    maps = explain(model, image64, "feature_maps", predict=False)
    assert counter.calls == 1
    assert list(maps.extras["layers"]) == [label for label, _ in feature_layers(model)]
    assert all(m.shape == (64, 64) and np.isfinite(m).all() for m in maps.extras["layers"].values())
    cam = explain(model, image64, "grad_cam", 1, predict=False)
    assert cam.extras["layer"] == feature_layers(model)[-1][0] and np.isfinite(cam.heatmap).all()


def test_concurrent_explanations_on_one_shared_model_equal_sequential_ones(tiny_student, image64):
    import threading

    methods = ["grad_cam", "saliency", "feature_maps", "integrated_gradients"]
    params = {"integrated_gradients": {"n_steps": 4, "internal_batch_size": 2}}
    expected = {m: explain(tiny_student, image64, m, 1, predict=False, **params.get(m, {})).heatmap for m in methods}
    errors, mismatches = [], []

    def worker(method):
        try:
            for _ in range(25):
                got = explain(tiny_student, image64, method, 1, predict=False, **params.get(method, {})).heatmap
                if not np.allclose(got, expected[method], atol=1e-5):
                    mismatches.append(method)
        except Exception as err:  # any failure in a thread fails the test below
            errors.append(f"{method}: {err}")

    threads = [threading.Thread(target=worker, args=(m,)) for m in methods for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and mismatches == []


@pytest.mark.parametrize("method", ["saliency", "grad_cam", "feature_maps"])
def test_predicted_scoring_passes_equal_counted_forwards(method, tiny_student, image32):
    """Scoring a map (deletion, insertion, the sanity cascade) is priced by the passes it really runs, including
    the forwards of the randomised copies the sanity check makes."""
    from core.costs import estimate_scoring_cost
    from core.faithfulness import deletion_curve, insertion_curve
    from core.sanity import sanity_check

    images = []

    def count(module, inputs, output):  # the first block of the student or of a randomised copy: every pass
        if isinstance(module, ConvBlock) and inputs[0].shape[1] == 3:  # runs it, hooked forward or not
            images.append(inputs[0].shape[0])

    heatmap = explain(tiny_student, image32, method, 1, predict=False).heatmap
    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        deletion_curve(tiny_student, image32, heatmap, [1], steps=4)
        insertion_curve(tiny_student, image32, heatmap, [1], steps=4)
        sanity_check(tiny_student, image32, method, 1, n_layers=2)
    finally:
        handle.remove()
    cost = estimate_scoring_cost(tiny_student, method, 32, curve_steps=4, sanity_layers=2)
    assert cost.passes["forward"] == sum(images)
    assert cost.predicted_seconds > estimate_cost(tiny_student, method, 32).predicted_seconds
    none = estimate_scoring_cost(tiny_student, method, 32, curve_steps=None, sanity_layers=None)
    assert none.passes == {"forward": 0, "backward": 0} and none.predicted_seconds == 0


def test_batched_backward_runs_one_at_a_time_in_the_process_and_single_images_are_not_held(tiny_student, image32):
    import threading

    from core import explain as explain_module

    done = []
    held = explain_module.BATCHED_BACKWARD
    held.acquire()  # another user's integrated gradients is running
    try:
        explain(tiny_student, image32, "saliency", 0, predict=False)  # one image: not held back
        worker = threading.Thread(target=lambda: done.append(explain(
            tiny_student, image32, "integrated_gradients", 0, predict=False, n_steps=4, internal_batch_size=4)))
        worker.start()
        worker.join(timeout=2.0)
        assert worker.is_alive() and not done, "a second batched backward ran beside the first"
    finally:
        held.release()
    worker.join(timeout=120)
    assert len(done) == 1 and done[0].heatmap.shape == (32, 32)


def test_calibrations_asked_at_once_measure_the_model_once(tiny_student):
    """Sessions opening the Explanations page together each asked for the same model's calibration: every thread
    ran the model's batches at once (holding all their activations); now one measures and the others reuse it."""
    import threading

    from core import costs

    calls, inside, most_inside, guard = [0], [0], [0], threading.Lock()

    def counting(module, args):
        with guard:
            calls[0] += 1
            inside[0] += 1
            most_inside[0] = max(most_inside[0], inside[0])

    def leaving(module, args, output):
        with guard:
            inside[0] -= 1

    before = tiny_student.register_forward_pre_hook(counting)
    after = tiny_student.register_forward_hook(leaving)
    try:
        start = threading.Barrier(4)

        def ask():
            start.wait()
            costs.calibrate(tiny_student, 24, 2, repeats=2, warmup=1)

        threads = [threading.Thread(target=ask) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        before.remove()
        after.remove()
    assert calls[0] == 2 * (2 + 1)  # one forward series and one forward+backward series, warmup included
    assert most_inside[0] == 1


def test_each_method_states_the_side_of_the_grid_its_map_is_drawn_at(tiny_student, image32):
    """The study draws each method's random map at the method's own coarseness: the side must be the map's."""
    from core.explainers import make_explainer

    side = lambda method, **params: make_explainer(tiny_student, method, (32, 32), **params).map_side()  # noqa: E731
    cam = explain(tiny_student, image32, "cam", 1)
    assert side("cam") == cam.extras["raw"].shape[-1]
    maps = explain(tiny_student, image32, "feature_maps", 1)
    assert side("feature_maps") == list(maps.extras["shapes"].values())[-1][-1]
    assert side("feature_maps", layers=["block1"]) == maps.extras["shapes"]["block1"][-1]
    assert side("grad_cam") == side("cam")  # the default Grad-CAM layer is the pooled one
    assert side("grad_cam", layer="block1") == maps.extras["shapes"]["block1"][-1]
    assert side("saliency") == side("integrated_gradients") == 32  # one value per pixel
    assert side("occlusion", window=4, stride=2) == (32 - 4) // 2 + 1  # window positions per side
    assert side("kernel_shap", grid=5) == side("lime", grid=5) == 5
