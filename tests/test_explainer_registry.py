"""What a method tells the app and the studies is its class's attributes: the lists all come from the registry,
so a new method is one class."""

import json
import subprocess
import sys

import pytest
import torch

from core.explainers import EXPLAINERS, Explainer, ExplainError, make_explainer, register_explainer, registered_methods
from explorer import explanations_view, names
from explorer.explanation_record import MethodPair, ModelExplanation, PairExplanation, Passes
from tests.apptest_support import ROOT, assert_ok, fresh_streamlit_caches, open_page  # noqa: F401

METHODS = ["feature_maps", "cam", "grad_cam", "saliency", "integrated_gradients", "occlusion", "gradient_shap",
           "kernel_shap", "lime"]
NEW = "test_new_method"


def test_registered_methods_keep_the_registration_order_and_filter_on_the_class_attributes():
    assert registered_methods() == METHODS
    assert registered_methods(slow=False) == ["feature_maps", "cam", "grad_cam", "saliency"]
    assert registered_methods(slow=True) == ["integrated_gradients", "occlusion", "gradient_shap", "kernel_shap",
                                             "lime"]
    assert registered_methods(single_pass=True) == ["feature_maps", "cam"]
    assert registered_methods(preselected=True) == ["feature_maps", "grad_cam", "saliency"]
    assert registered_methods(in_timing_table=False) == ["occlusion", "lime"]
    assert registered_methods(slow=False, single_pass=False) == ["grad_cam", "saliency"]
    assert {m: EXPLAINERS[m].app_batch for m in METHODS if EXPLAINERS[m].app_batch is not None} == {
        "integrated_gradients": 4, "gradient_shap": 4}
    with pytest.raises(ExplainError, match="no attribute"):
        registered_methods(fast=True)


def test_the_names_a_method_shows_are_its_class_attributes():
    short = {"feature_maps": "Feature maps", "cam": "CAM", "grad_cam": "Grad-CAM", "saliency": "Saliency",
             "integrated_gradients": "Integrated gradients", "occlusion": "Occlusion",
             "gradient_shap": "GradientSHAP", "kernel_shap": "KernelSHAP", "lime": "LIME"}
    assert {m: names.method_label(m, short=True) for m in METHODS} == short
    assert names.method_label("feature_maps") == "Average feature maps (all layers)"
    assert names.method_label("saliency") == "Saliency (gradient)" and names.method_label("lime") == "LIME"
    assert names.label("forward") == "Forward pass (prediction only)", "the timing's row of plain forward passes"
    assert names.method_label("no_such_method", short=True) == "no_such_method"


def test_the_class_attributes_agree_with_what_each_method_runs(tiny_student):
    for method in METHODS:
        cls, explainer = EXPLAINERS[method], make_explainer(tiny_student, method, 128)
        passes = explainer.passes()
        assert cls.slow == (passes["forward"] > 1), (method, passes)  # at the defaults, 128 px
        if cls.single_pass:
            assert passes == {"forward": 1, "backward": 0} and cls.backward_to == "none", method
        if cls.app_batch is not None:  # a batched backward to the input, bounded in the app
            assert cls.backward_to == "input" and cls.app_batch < explainer.params["internal_batch_size"], method


@pytest.fixture
def new_method():
    """A method registered the one way a method is added (`register_explainer` on an `Explainer` subclass),
    taken out of the registry again afterwards."""

    @register_explainer(NEW)
    class NewMethod(Explainer):
        """Each pixel's absolute value summed over the channels (no pass through the model)."""

        title = "A new method"
        short_title = "New"
        slow = True
        preselected = True
        app_batch = 3
        backward_to = "none"
        needs_target = False

        @classmethod
        def defaults(cls, input_size):
            return {"internal_batch_size": 8}

        def passes(self):
            return {"forward": 0, "backward": 0}

        def attribute(self, x, target):
            return x[0].detach().abs().sum(0), {"target": 0 if target is None else target}

    try:
        yield NEW
    finally:
        del EXPLAINERS[NEW]


def test_a_new_method_class_appears_in_every_list_the_app_uses(new_method, tiny_student, image32):
    assert registered_methods()[-1] == new_method and registered_methods(slow=True)[-1] == new_method
    assert registered_methods(preselected=True) == ["feature_maps", "grad_cam", "saliency", new_method]
    assert names.method_label(new_method) == "A new method" and names.label(new_method) == "New"
    assert explanations_view.method_params(new_method, None) == {"internal_batch_size": 3}
    from core.explain import explain

    result = explain(tiny_student, image32, new_method, 1, predict=False,
                     **explanations_view.method_params(new_method, None))
    assert result.params == {"internal_batch_size": 3} and result.heatmap.shape == (32, 32)
    assert torch.isfinite(torch.from_numpy(result.heatmap)).all()
    maps = {role: ModelExplanation(result.heatmap, seconds, 0.0, Passes(1, 0))
            for role, seconds in (("teacher", 0.1), ("student", 0.2))}
    rows = explanations_view.summary_rows(PairExplanation(1, {new_method: MethodPair(maps)}))
    assert [(r["Method"], r["Model"]) for r in rows] == [("New", "Teacher"), ("New", "Student")]


def test_a_new_method_class_is_offered_and_costed_on_the_explanations_page(new_method):
    at = open_page("explanations", {"image": "1"})
    assert_ok(at)
    menu = at.multiselect(key="method")
    assert menu.options[-1] == "A new method", "offered, under its title"
    assert menu.value == ["feature_maps", "grad_cam", "saliency", new_method], "preselected"
    assert list(at.dataframe[0].value["method"])[-1] == "A new method", "its predicted cost"


def test_a_new_method_class_joins_the_study_and_the_timing_table_lists():
    # A fresh process: the study's lists are read when it is imported, as a class added to core.explainers is.
    script = """
import json
from core.explainers import Explainer, register_explainer
for name, is_slow in (("new_cheap", False), ("new_slow", True)):
    register_explainer(name)(type(name, (Explainer,), {"title": name, "slow": is_slow}))
from core import faithfulness_study
from core.explainers import registered_methods
print(json.dumps([faithfulness_study.CHEAP_METHODS, faithfulness_study.SLOW_METHODS,
                  registered_methods(in_timing_table=True)]))
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    cheap, slow, timed = json.loads(run.stdout.strip().splitlines()[-1])
    # the teacher's evidence too: it is studied where the student's head is shipped
    assert cheap == ["feature_maps", "cam", "grad_cam", "saliency", "teacher_evidence", "new_cheap"]
    assert slow == ["integrated_gradients", "occlusion", "gradient_shap", "kernel_shap", "lime", "new_slow"]
    assert timed == ["feature_maps", "cam", "grad_cam", "saliency", "integrated_gradients", "gradient_shap",
                     "kernel_shap", "new_cheap", "new_slow"]
