"""What the app keeps across ordinary clicks: every result keyed by what it depends on, selections that survive
moving between pages, deep links that restore the view (each case first reproduced, then fixed)."""

from __future__ import annotations

from explorer import page_list
from tests.apptest_support import (assert_ok, finish_training, fresh_streamlit_caches, has_chart,  # noqa: F401
                                   open_page, texts)


def test_explanations_of_one_dataset_are_never_drawn_over_anothers_image():
    at = open_page("explanations", {"dataset": "phantom", "image": "0", "method": "feature_maps"})
    at.checkbox(key="exp_faithfulness").uncheck()
    at.checkbox(key="exp_sanity").uncheck()
    at.button(key="exp_run").click().run()
    assert_ok(at)
    assert has_chart(at, "exp_map_feature_maps_teacher")
    at.sidebar.selectbox(key="dataset").set_value("brain_tumor").run()
    assert_ok(at)
    # the brain_tumor image's own maps (cheap: made as the page opens), never the phantom's
    assert "computed for brain_tumor" in texts(at) and "computed for phantom" not in texts(at)
    at.sidebar.selectbox(key="dataset").set_value("phantom").run()  # back: its own result is still there
    assert_ok(at)
    assert has_chart(at, "exp_map_feature_maps_teacher")
    assert "computed for phantom" in texts(at)


def test_method_selection_survives_moving_between_explanations_and_timing():
    at = open_page("explanations", {"method": "grad_cam,saliency"})
    assert at.multiselect(key="method").value == ["grad_cam", "saliency"]
    at.switch_page(page_list.page("timing").link).run()
    assert_ok(at)
    assert at.multiselect(key="method").value == ["grad_cam", "saliency"]
    assert at.query_params["method"] == "grad_cam,saliency"
    at.switch_page(page_list.page("explanations").link).run()
    assert_ok(at)
    assert at.multiselect(key="method").value == ["grad_cam", "saliency"]
    assert "Choose at least one method" not in texts(at)


def subheaders(at) -> list[str]:
    return [h.value for h in at.subheader]


def test_a_timing_run_is_shown_only_for_the_dataset_and_settings_it_measured():
    at = open_page("timing", {"dataset": "phantom", "method": "feature_maps"})
    at.slider(key="timing_images").set_value(1)
    at.slider(key="timing_repeats").set_value(1)
    at.button(key="timing_run").click().run()
    assert_ok(at)
    assert "Measured here" in subheaders(at) and "Computed for phantom" in texts(at)
    at.sidebar.selectbox(key="dataset").set_value("brain_tumor").run()
    assert_ok(at)
    assert "Measured here" not in subheaders(at), "a phantom timing run shown under brain_tumor"
    at.sidebar.selectbox(key="dataset").set_value("phantom").run()
    assert "Measured here" in subheaders(at)
    at.slider(key="timing_repeats").set_value(2).run()  # other settings: not what was measured
    assert "Measured here" not in subheaders(at)


def test_training_results_are_shown_only_for_the_dataset_and_recipe_they_came_from():
    at = open_page("train", {"dataset": "phantom"})
    at.radio(key="train_source").set_value("distil the shipped teacher").run()
    at.slider(key="train_epochs").set_value(1)
    at.slider(key="train_per_class").set_value(8)
    at.slider(key="train_cap").set_value(10)
    at.checkbox(key="train_label_only").set_value(False)
    at.button(key="train_run").click().run()
    finish_training(at)
    assert_ok(at)
    assert any(h.startswith("Results on") for h in subheaders(at))
    assert "Computed for phantom: the shipped teacher" in texts(at)
    at.sidebar.selectbox(key="dataset").set_value("alzheimer").run()
    assert_ok(at)
    assert not any(h.startswith("Results on") for h in subheaders(at)), "phantom curves shown under alzheimer"
    assert "Press Train" in texts(at)


def test_the_model_choice_on_feature_maps_survives_an_upload():
    from tests.apptest_support import odd_uploads

    at = open_page("feature_maps", {"model": "student", "rank": "True"})
    assert at.radio(key="model").value == "student"
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="image_upload").set_value(odd_uploads()["16-bit grey"]).run()
    assert_ok(at)
    assert at.radio(key="model").value == "student" and at.query_params["model"] == "student"


def test_changing_the_layer_pairing_keeps_the_layer_step():
    at = open_page("feature_maps", {"layer": "3"})
    assert at.slider(key="layer").value == 3
    at.radio(key="fm_pairing").set_value("best CKA match").run()
    assert_ok(at)
    assert at.slider(key="layer").value == 3
    at.slider(key="layer").set_value(5).run()
    at.radio(key="fm_pairing").set_value("same relative depth").run()
    assert at.slider(key="layer").value == 5


def test_a_deep_link_restores_the_whole_feature_map_view():
    at = open_page("feature_maps", {"layer": "2", "show": "raw map", "opacity": "0.3", "k": "4", "rank": "True"})
    assert_ok(at)
    assert at.slider(key="layer").value == 2 and at.radio(key="fm_mode").value == "raw map"
    assert at.slider(key="fm_opacity").value == 0.3 and at.slider(key="fm_k").value == 4
    at.slider(key="fm_k").set_value(6).run()
    assert at.query_params["k"] == "6"


def test_a_deep_link_restores_the_explained_class():
    at = open_page("explanations", {"image": "2", "class": "midline"})
    assert_ok(at)
    assert at.selectbox(key="exp_target").value == "midline"
    at.selectbox(key="exp_target").set_value("extra_axial").run()
    assert at.query_params["class"] == "extra_axial"


def test_a_broken_link_says_what_it_ignored():
    at = open_page("feature_maps", {"layer": "99"})
    assert_ok(at)
    assert at.slider(key="layer").value == 1
    assert any("layer=99" in w.value for w in at.warning)
    at = open_page("home", {"dataset": "nosuch"})
    assert_ok(at)
    assert any("dataset=nosuch" in w.value for w in at.warning)


def test_every_map_uses_one_colormap_and_shows_its_scale():
    import numpy as np

    from explorer import plots

    heat = np.random.default_rng(0).random((8, 8))
    figs = [plots.image_with_map(np.zeros((8, 8, 3), np.uint8), heat, 0.5),
            plots.channel_grid(np.stack([heat, heat]), ["a", "b"]),
            plots.cka_heatmap(heat[:3, :4], list("abc"), list("defg"))]
    traces = [t for f in figs for t in f.data if t.type == "heatmap"]
    scales = {tuple(map(tuple, t.colorscale)) for t in traces}
    assert len(scales) == 1  # one colormap for every map
    assert all(t.zmin == 0 and t.zmax == 1 for t in traces)  # a fixed range: no wrap, no rescaling per trace
    for fig in figs:
        assert any(t.showscale for t in fig.data if t.type == "heatmap"), "a map without its colour bar"
