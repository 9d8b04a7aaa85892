"""The explainer classes behind `core.explain.explain`: one small class per method, registered by name.

Each class states its defaults for an input size, its pass count at those settings, the batch it
feeds the model and how far its backward goes. The Captum baselines are called the standard way
(``LayerGradCam(model, layer).attribute(x, target=c)`` etc.) so that timings compare like with like.
KernelShap and Lime fit their linear surrogate with `least_squares_model` (weighted least squares in
closed form, in torch): Captum's default surrogates need scikit-learn, which is not a dependency. The base
class, the registry, `registered_methods` and the records live in `core.explainer`; importing this module fills
the registry, so their names are imported from here. The registration order below is the order every menu and
table shows.
"""
from __future__ import annotations

import math

import torch
from captum._utils.models.linear_model import LinearModel
from captum.attr import (GradientShap, IntegratedGradients, KernelShap, LayerAttribution, LayerGradCam, Lime,
                         Occlusion, Saliency)

from core.cam import cam_head, class_activation_maps
from core.featuremaps import capture_activations, layer_maps
from core.hooks import LayerError, default_target_layer, model_layers, resolve_layer
from core.evidence_model import NO_HEAD, evidence_head, evidence_maps

__all__ = ["EXPLAINERS", "CostEstimate", "Explainer", "ExplainError", "Explanation", "make_explainer",
           "register_explainer", "registered_methods", "least_squares_model"]
from core.explainer import (EXPLAINERS, CostEstimate, Explainer, ExplainError, Explanation, make_explainer,
                            register_explainer, registered_methods, seeded)


def _layer_side(model, layer: str, input_size: tuple[int, int]) -> int:
    """The smaller side of ``layer``'s output for an image of ``input_size`` (one forward of a blank image)."""
    label, _ = resolve_layer(model, layer)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    blank = torch.zeros(1, convs[0].in_channels if convs else 3, *input_size)
    return min(capture_activations(model, blank, [layer]).activations[label].shape[-2:])


def _positive(attr: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """(1, C, H, W) signed attribution -> (positive part summed over channels, {"raw": signed map})."""
    raw = attr.detach()[0].float().sum(0)
    return raw.clamp_min(0), {"raw": raw.cpu().numpy()}


def _grid_mask(input_size: tuple[int, int], grid: int) -> torch.Tensor:
    """(1, 1, H, W) feature mask of ``grid x grid`` patches (ids row-major), the superpixels of SHAP/LIME."""
    h, w = input_size
    rows = torch.arange(h) * grid // h
    cols = torch.arange(w) * grid // w
    return (rows[:, None] * grid + cols[None, :]).view(1, 1, h, w)


def _fit_least_squares(model: LinearModel, dataloader, construct_kwargs: dict, **_) -> dict:
    """Weighted ridge regression with an unpenalised intercept, solved in closed form.

    Minimises ``sum_i w_i (y_i - b - x_i . beta)^2 + alpha ||beta||^2`` (alpha = 0: weighted least
    squares, KernelShap's estimator; alpha = 1: the ridge of the original LIME package).
    """
    xs, ys, ws = zip(*[(b[0], b[1], b[2]) for b in dataloader])
    X, y, w = (torch.cat(t).double().reshape(len(torch.cat(t)), -1) for t in (xs, ys, ws))
    y, w = y[:, 0], w[:, 0].clamp_min(0)
    w = w / w.max().clamp_min(1e-300)  # scale-free; KernelShap gives the empty/full coalitions huge weights
    x_mean = (w[:, None] * X).sum(0) / w.sum()
    y_mean = (w * y).sum() / w.sum()
    sw = w.sqrt()[:, None]
    A, b = sw * (X - x_mean), sw[:, 0] * (y - y_mean)
    alpha = float(construct_kwargs.get("alpha", 0.0))
    if alpha > 0:
        A = torch.cat([A, math.sqrt(alpha) * torch.eye(X.shape[1], dtype=A.dtype)])
        b = torch.cat([b, torch.zeros(X.shape[1], dtype=b.dtype)])
    beta = torch.linalg.lstsq(A, b[:, None], driver="gelsd").solution[:, 0]
    model._construct_model_params(weight_values=beta.float().view(1, -1),
                                  bias_value=(y_mean - x_mean @ beta).float().view(1))
    return {}


def least_squares_model(alpha: float = 0.0) -> LinearModel:
    """A Captum interpretable model fitted by `_fit_least_squares` (no scikit-learn needed)."""
    return LinearModel(train_fn=_fit_least_squares, alpha=alpha)


@register_explainer("feature_maps")
class FeatureMaps(Explainer):
    """The paper's explanation: average feature maps of every layer from one forward pass.

    The last layer's map is ``.heatmap``; ``extras["layers"]`` holds every layer's. The average map does
    not depend on the class: ``target`` is only recorded (the predicted class when not given).
    """

    title = "Average feature maps (all layers)"
    short_title = "Feature maps"
    single_pass = True
    preselected = True
    backward_to = "none"
    needs_target = False
    thread_safe = True  # core.hooks records only the calling thread's forward
    normalised = True  # `LayerMaps` normalises each map it upsamples

    @classmethod
    def defaults(cls, input_size):
        return {"layers": None}

    def passes(self):
        return {"forward": 1, "backward": 0}

    def map_side(self):
        layers = self.params["layers"]
        return _layer_side(self.model, layers[-1] if layers else model_layers(self.model)[-1][1], self.input_size)

    def attribute(self, x, target):
        result = layer_maps(self.model, x, self.params["layers"])
        last = result["layers"][result["layers"].last]  # the other layers are upsampled when read
        return torch.from_numpy(last), {**result, "target": result["predicted"] if target is None else target}


@register_explainer("cam")
class ClassActivationMap(Explainer):
    """CAM (Zhou et al. 2016): the class's linear weights over the pooled layer's channels, one forward pass.

    Class-specific like Grad-CAM, at the cost of the average feature maps (see `core.cam`).
    """

    title = "CAM (class activation map)"
    short_title = "CAM"
    single_pass = True
    backward_to = "none"
    needs_target = False
    thread_safe = True  # core.hooks records only the calling thread's forward

    def passes(self):
        return {"forward": 1, "backward": 0}

    def map_side(self):
        return _layer_side(self.model, cam_head(self.model).layer, self.input_size)

    def attribute(self, x, target):
        out = class_activation_maps(self.model, x, target)
        logits = out["logits"][0].cpu()
        return out["maps"][0], {"layer": out["layer"], "raw": out["raw"][0].cpu().numpy(),
                                "target": int(out["targets"][0]), "logits": logits.numpy(),
                                "probabilities": torch.softmax(logits, 0).numpy()}


@register_explainer("grad_cam")
class GradCam(Explainer):
    """Grad-CAM (Selvaraju et al. 2017) with Captum's ``LayerGradCam``, upsampled bilinearly.

    ``layer``: a feature layer's label (``"denseblock3"``) or a module path; None is the last conv layer.
    """

    title = "Grad-CAM"
    preselected = True
    backward_to = "layer"

    @classmethod
    def defaults(cls, input_size):
        return {"layer": None}

    def validate(self):
        super().validate()
        layer = self.params["layer"]
        if layer is None:
            return
        if not isinstance(layer, str):
            raise ExplainError(f"grad_cam: layer must be a layer name, got {layer!r}")
        try:  # refused here, before any pass runs (the cost estimate builds the explainer too)
            resolve_layer(self.model, layer)
        except LayerError as err:
            raise ExplainError(f"grad_cam: {err}") from None

    def passes(self):
        return {"forward": 1, "backward": 1}

    def map_side(self):
        return _layer_side(self.model, self.params["layer"] or default_target_layer(self.model), self.input_size)

    def attribute(self, x, target):
        layer = self.params["layer"] or default_target_layer(self.model)
        label, module = resolve_layer(self.model, layer)
        cam = LayerGradCam(self.model, module).attribute(x, target=target, relu_attributions=True)
        cam = LayerAttribution.interpolate(cam.detach(), tuple(x.shape[-2:]), "bilinear")
        return cam[0, 0].float().clamp_min(0), {"layer": label}


@register_explainer("saliency")
class SaliencyMap(Explainer):
    """Vanilla gradient (Simonyan et al. 2014): max over channels of |d y_t / d x|."""

    title = "Saliency (gradient)"
    short_title = "Saliency"
    preselected = True

    def passes(self):
        return {"forward": 1, "backward": 1}

    def attribute(self, x, target):
        grads = Saliency(self.model).attribute(x, target=target, abs=True)
        return grads[0].detach().float().amax(0), {}


@register_explainer("integrated_gradients")
class IntegratedGradientsMap(Explainer):
    """Integrated gradients (Sundararajan et al. 2017) from a zero (mean-colour) baseline."""

    title = "Integrated gradients"
    slow = True
    app_batch = 4

    @classmethod
    def defaults(cls, input_size):
        return {"n_steps": 32, "internal_batch_size": 16, "baseline": 0.0}

    def passes(self):
        n = self.params["n_steps"]
        return {"forward": n, "backward": n}

    def batch_size(self):
        return min(self.params["internal_batch_size"], self.params["n_steps"])

    def validate(self):
        super().validate()
        if self.params["internal_batch_size"] < 2:
            raise ExplainError("integrated_gradients: internal_batch_size must be >= 2 (Captum's minimum)")

    def attribute(self, x, target):
        attr = IntegratedGradients(self.model).attribute(
            x, baselines=float(self.params["baseline"]), target=target, n_steps=self.params["n_steps"],
            internal_batch_size=self.params["internal_batch_size"])
        return _positive(attr)


@register_explainer("occlusion")
class OcclusionMap(Explainer):
    """Occlusion (Zeiler & Fergus 2014): score drop when a square window is set to the baseline.

    Windows per side ``ceil((H - window) / stride) + 1`` (Captum's count), plus one unoccluded pass.
    """

    title = "Occlusion"
    slow = True
    in_timing_table = False
    backward_to = "none"

    @classmethod
    def defaults(cls, input_size):
        side = min(input_size)  # 16 px windows, stride 8, at 128 px; scaled to the input
        return {"window": max(2, round(16 * side / 128)), "stride": max(1, round(8 * side / 128)),
                "perturbations_per_eval": 16, "baseline": 0.0}

    def validate(self):
        super().validate()
        if self.params["window"] > min(self.input_size) or self.params["stride"] > self.params["window"]:
            raise ExplainError(f"occlusion: need stride <= window <= image side {min(self.input_size)}, "
                               f"got window {self.params['window']}, stride {self.params['stride']}")

    def n_windows(self) -> int:
        k, s = self.params["window"], self.params["stride"]
        return math.prod(math.ceil((d - k) / s) + 1 for d in self.input_size)

    def passes(self):
        return {"forward": self.n_windows() + 1, "backward": 0}

    def map_side(self):
        k, s = self.params["window"], self.params["stride"]
        return min(math.ceil((d - k) / s) + 1 for d in self.input_size)

    def batch_size(self):
        return min(self.params["perturbations_per_eval"], self.n_windows())

    def attribute(self, x, target):
        c, k, s = x.shape[1], self.params["window"], self.params["stride"]
        attr = Occlusion(self.model).attribute(
            x, sliding_window_shapes=(c, k, k), strides=(c, s, s), target=target,
            baselines=float(self.params["baseline"]), perturbations_per_eval=self.params["perturbations_per_eval"])
        return _positive(attr / c)  # the window spans all channels: each carries the full score drop


@register_explainer("gradient_shap")
class GradientShapMap(Explainer):
    """GradientSHAP (Lundberg & Lee 2017; Captum): expected gradients over a black and a noise baseline.

    Captum's ``GradientShap`` pushes all ``n_samples`` through in one batch; here it is
    called on chunks of ``internal_batch_size`` samples and the chunk means are averaged (the same
    estimator), which bounds memory. ``black``: the normalised value of a black pixel (a number or
    one per channel); by default the darkest value of each channel in the image.
    """

    title = "GradientSHAP"
    slow = True
    app_batch = 4

    @classmethod
    def defaults(cls, input_size):
        return {"n_samples": 16, "internal_batch_size": 16, "stdevs": 0.09, "black": None, "seed": 0}

    def passes(self):
        n = self.params["n_samples"]
        return {"forward": n, "backward": n}

    def batch_size(self):
        return min(self.params["internal_batch_size"], self.params["n_samples"])

    def attribute(self, x, target):
        p = self.params
        if p["black"] is not None and torch.as_tensor(p["black"]).numel() not in (1, x.shape[1]):
            raise ExplainError(f"gradient_shap: black needs one value or one per channel ({x.shape[1]}), "
                               f"got {p['black']!r}")
        black = torch.as_tensor(p["black"], dtype=x.dtype).view(1, -1, 1, 1).expand_as(x) if p["black"] is not None \
            else x.detach().amin(dim=(2, 3), keepdim=True).expand_as(x)
        with seeded(p["seed"]):
            baselines = torch.cat([black, torch.randn_like(x)])
            total, remaining = torch.zeros_like(x), p["n_samples"]
            while remaining > 0:
                n = min(p["internal_batch_size"], remaining)
                total += n * GradientShap(self.model).attribute(x, baselines=baselines, n_samples=n,
                                                                stdevs=p["stdevs"], target=target).detach()
                remaining -= n
        return _positive(total / p["n_samples"])


class _SurrogateExplainer(Explainer):
    """Shared settings of KernelShap and Lime: ``grid x grid`` patches, batched perturbations."""

    slow = True
    backward_to = "none"

    @classmethod
    def defaults(cls, input_size):
        return {"n_samples": 200, "grid": 8, "perturbations_per_eval": 16, "baseline": 0.0, "seed": 0}

    def passes(self):
        return {"forward": self.params["n_samples"], "backward": 0}

    def batch_size(self):
        return min(self.params["perturbations_per_eval"], self.params["n_samples"])

    def map_side(self):
        return self.params["grid"]

    def attribute(self, x, target):
        p = self.params
        with seeded(p["seed"]):
            attr = self.captum().attribute(
                x, baselines=float(p["baseline"]), target=target, n_samples=p["n_samples"],
                feature_mask=_grid_mask(tuple(x.shape[-2:]), p["grid"]).to(x.device),
                perturbations_per_eval=p["perturbations_per_eval"])
        return _positive(attr / x.shape[1])  # each patch's value is repeated over the channels


@register_explainer("kernel_shap")
class KernelShapMap(_SurrogateExplainer):
    """KernelSHAP (Lundberg & Lee 2017) over a grid of patches, Shapley-kernel weighted least squares."""

    title = "KernelSHAP"

    def captum(self):
        explainer = KernelShap(self.model)
        explainer.interpretable_model = least_squares_model(alpha=0.0)
        return explainer


@register_explainer("lime")
class LimeMap(_SurrogateExplainer):
    """LIME (Ribeiro et al. 2016) over a grid of patches, ridge surrogate (alpha 1, as the lime package)."""

    title = "LIME"
    in_timing_table = False

    @classmethod
    def defaults(cls, input_size):
        return {**super().defaults(input_size), "alpha": 1.0}

    def captum(self):
        return Lime(self.model, interpretable_model=least_squares_model(alpha=float(self.params["alpha"])))


@register_explainer("teacher_evidence")
class TeacherEvidence(Explainer):
    """The teacher's evidence for a class, read off the student: the student's evidence head (`core.teacher_evidence`)
    on its pooled layer, from the one forward that gives its logits.

    The map is the softmax over positions of the target class's channel, the head's estimate of the teacher's
    normalised ReLU(CAM) (its Grad-CAM at its default layer), upsampled bilinearly as that Grad-CAM is. A model
    without a head attached is refused before any pass, with the command that trains one.
    """

    title = "The teacher's evidence, read off the student"
    short_title = "Teacher's evidence"
    single_pass = True
    backward_to = "none"
    needs_target = False
    thread_safe = True  # core.hooks records only the calling thread's forward; the head only reads
    needs_head = True

    @classmethod
    def can_explain(cls, model):
        return evidence_head(model) is not None

    def validate(self):
        super().validate()
        if not self.can_explain(self.model):
            raise ExplainError(f"teacher_evidence: {NO_HEAD}")

    def passes(self):
        return {"forward": 1, "backward": 0}

    def map_side(self):  # the head keeps the pooled layer's grid (a padded 3x3 and a 1x1 convolution)
        return _layer_side(self.model, cam_head(self.model).layer, self.input_size)

    def attribute(self, x, target):
        out = evidence_maps(self.model, x)
        logits = out["logits"][0].cpu()
        target = int(logits.argmax()) if target is None else target
        cell_map = out["maps"][0, target]
        heatmap = torch.nn.functional.interpolate(cell_map[None, None], size=tuple(x.shape[-2:]), mode="bilinear",
                                                  align_corners=False)[0, 0]
        return heatmap, {"layer": out["layer"], "raw": cell_map.cpu().numpy(), "target": target,
                         "logits": logits.numpy(), "probabilities": torch.softmax(logits, 0).numpy()}
