"""The Explanations page's record of one explained image (`explorer.explanation_record`): what `explain_pair` builds
survives JSON unchanged, and a malformed or newer one is refused by the name of its field."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from core.faithfulness import agreement
from explorer import explanations_view
from explorer.explanation_record import MethodPair, ModelExplanation, PairExplanation, PairExplanationError, Passes
from explorer.loaders import LoadedModel

METHODS = ["grad_cam", "saliency"]  # one forward and one backward pass each


@pytest.fixture
def explained(tiny_cnn, tiny_student, image32, single_thread) -> PairExplanation:
    """Two tiny models explaining class 1 of one 32 x 32 image with every score, a lesion in its top-left corner."""
    models = {"teacher": LoadedModel(tiny_cnn, None, "", "teacher"),
              "student": LoadedModel(tiny_student, None, "", "student")}
    mask = np.zeros((32, 32), bool)
    mask[:8, :8] = True
    return explanations_view.explain_pair(models, {role: image32 for role in models}, METHODS, 1,
                                          masks={role: mask for role in models})


def through_json(record: PairExplanation) -> PairExplanation:
    """The record written as JSON text (standard JSON: no NaN) and read back."""
    return PairExplanation.from_json(json.loads(json.dumps(record.to_json(), allow_nan=False)))


def test_a_pair_explanation_survives_json_unchanged(explained):
    back = through_json(explained)
    assert back.target == 1 and list(back.methods) == METHODS, "the class and the methods in the order run"
    for method in METHODS:
        before, after = explained.methods[method], back.methods[method]
        assert list(after.models) == ["teacher", "student"]
        for role in ("teacher", "student"):
            made, read = before.models[role], after.models[role]
            assert read.heatmap.dtype == np.float32 and np.array_equal(read.heatmap, made.heatmap), (method, role)
            assert made.heatmap.shape == (32, 32)
            assert (read.seconds, read.predicted_seconds, read.layer) == (made.seconds, made.predicted_seconds,
                                                                         made.layer)
            assert read.passes == made.passes == Passes(1, 1), "one forward and one backward pass"
            assert read.curves == made.curves and made.curves is not None
            assert read.sanity == made.sanity and len(made.sanity.layers) == explanations_view.SANITY_LAYERS
            assert read.lesion == made.lesion and made.lesion is not None, "a lesion mask was given"
        expected = agreement(before.models["teacher"].heatmap, before.models["student"].heatmap)
        assert after.agreement == before.agreement
        assert after.agreement.spearman == pytest.approx(expected["spearman"])
        assert after.agreement.iou == pytest.approx(expected["iou"])
    assert explained.methods["grad_cam"].models["student"].layer == "block3", "the layer Grad-CAM used"
    assert explained.methods["saliency"].models["student"].layer is None


def test_a_nan_map_and_missing_scores_survive_json():
    heatmap = np.full((2, 3), np.nan, np.float32)
    heatmap[0, 0] = 0.25
    record = PairExplanation(0, {"cam": MethodPair({"student": ModelExplanation(heatmap, 0.5, 0.25, Passes(1, 0))})})
    back = through_json(record).methods["cam"]
    read = back.models["student"]
    assert np.array_equal(read.heatmap, heatmap, equal_nan=True)
    assert read.curves is read.sanity is read.lesion is read.layer is back.agreement is None, "not measured"


def refusal(explained: PairExplanation, change) -> str:
    block = copy.deepcopy(explained.to_json())
    change(block)
    with pytest.raises(PairExplanationError) as refused:
        PairExplanation.from_json(block)
    return str(refused.value)


def teacher(block: dict) -> dict:
    return block["methods"]["grad_cam"]["models"]["teacher"]


@pytest.mark.parametrize("change, field, problem", [
    (lambda b: b.update(version=2), "'version'", "version 1"),
    (lambda b: b.pop("version"), "'version'", "missing"),
    (lambda b: b.update(target="1"), "'target'", "a string"),
    (lambda b: b.update(methods=[]), "'methods'", "not an object"),
    (lambda b: teacher(b).pop("seconds"), "'methods.grad_cam.models.teacher.seconds'", "missing"),
    (lambda b: teacher(b)["heatmap"][3].pop(), "'methods.grad_cam.models.teacher.heatmap'", "rows of one length"),
    (lambda b: teacher(b)["heatmap"][0].__setitem__(0, "0.5"), "'methods.grad_cam.models.teacher.heatmap'",
     "neither a number nor null"),
    (lambda b: teacher(b)["passes"].update(forward=True), "'methods.grad_cam.models.teacher.passes.forward'",
     "a boolean"),
    (lambda b: teacher(b)["curves"].update(auc=0.5), "'methods.grad_cam.models.teacher.curves.auc'",
     "not one this code reads"),
    (lambda b: teacher(b)["sanity"].update(layers="fc"), "'methods.grad_cam.models.teacher.sanity.layers'",
     "a string"),
    (lambda b: b["methods"]["saliency"]["agreement"].update(iou="high"), "'methods.saliency.agreement.iou'",
     "not a number"),
    (lambda b: b["methods"]["saliency"].update(teacher={}), "'methods.saliency.teacher'", "not one this code reads"),
])
def test_a_malformed_or_newer_pair_explanation_is_refused_by_its_field(explained, change, field, problem):
    message = refusal(explained, change)
    assert field in message and problem in message, message


def test_what_is_not_an_object_is_refused():
    with pytest.raises(PairExplanationError, match="not an object"):
        PairExplanation.from_json([1, 2])
