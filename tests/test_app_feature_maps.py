"""Feature maps page on phantom: lock-step stepping without new forward passes, ranking, CKA, deep links."""

import os

import torch
from PIL import Image

from explorer import feature_maps_view, loaders
from explorer.loaders import LoadedModel
from tests.apptest_support import (assert_ok, bad_uploads, fresh_streamlit_caches, has_chart,  # noqa: F401
                                   odd_uploads, open_page, png_bytes, texts)
from tests.support import ForwardCounter


def heading(at) -> str:
    """The step slider's label: which pair of layers is shown."""
    return at.slider(key="layer").label


def test_stepping_changes_the_layer_without_a_new_forward_pass():
    at = open_page("feature_maps")
    assert_ok(at)
    assert has_chart(at, "fm_map_teacher") and has_chart(at, "fm_map_student") and has_chart(at, "fm_cka")
    first = heading(at)
    assert first.startswith("Step 1 of 9: teacher stem and student block1")
    teacher, student = loaders.load_model("phantom", "teacher"), loaders.load_model("phantom", "student")
    counters = [ForwardCounter(teacher.model), ForwardCounter(student.model)]
    try:
        at.button(key="layer_next").click().run()
        second = heading(at)
        at.slider(key="layer").set_value(9).run()
        last = heading(at)
        at.button(key="layer_prev").click().run()
        assert_ok(at)
        assert [c.calls for c in counters] == [0, 0], "stepping ran a model again"
    finally:
        for c in counters:
            c.remove()
    assert second.startswith("Step 2 of 9") and second != first
    assert last.startswith("Step 9 of 9: teacher norm5 and student block5")
    assert heading(at).startswith("Step 8 of 9")
    assert at.query_params["layer"] == "8"
    assert at.button(key="layer_next").disabled is False


def test_cka_pairing_steps_over_student_layers():
    at = open_page("feature_maps")
    at.radio(key="fm_pairing").set_value("best CKA match").run()
    assert_ok(at)
    assert heading(at).startswith("Step 1 of 5: teacher ")
    assert at.slider(key="layer").max == 5


def test_rank_and_ablate_shows_the_check_and_the_channels():
    at = open_page("feature_maps")
    at.slider(key="layer").set_value(5).run()
    at.toggle(key="fm_rank").set_value(True).run()
    assert_ok(at)
    labels = [m.label for m in at.metric]
    assert labels[0].startswith("Logit drop, top 8 zeroed") and labels[1].startswith("Logit drop, 8 random")
    assert has_chart(at, "fm_channels") and has_chart(at, "fm_channel_big")
    assert len(at.selectbox(key="channel").options) == 8


def test_a_deep_link_reopens_the_exact_view():
    at = open_page("feature_maps")
    at.number_input(key="image").set_value(6).run()
    at.radio(key="model").set_value("teacher").run()
    at.slider(key="layer").set_value(4).run()
    at.toggle(key="fm_rank").set_value(True).run()
    channels = at.selectbox(key="channel").options
    at.selectbox(key="channel").set_value(int(channels[2])).run()
    assert_ok(at)
    link = dict(at.query_params)
    assert link["image"] == "6" and link["layer"] == "4" and link["model"] == "teacher"
    view = heading(at)

    shared = open_page("feature_maps", link)  # a new session opened from the shared URL
    assert_ok(shared)
    assert shared.number_input(key="image").value == 6
    assert shared.slider(key="layer").value == 4
    assert shared.radio(key="model").value == "teacher"
    assert shared.selectbox(key="channel").value == int(channels[2])
    assert heading(shared) == view


def test_feature_maps_of_an_upload_and_a_bad_upload():
    at = open_page("feature_maps")
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="image_upload").set_value(bad_uploads()["truncated"]).run()
    assert not at.exception
    assert "Cannot use this upload" in at.error[0].value
    at.file_uploader(key="image_upload").set_value(odd_uploads()["16-bit grey"]).run()
    assert_ok(at)
    assert has_chart(at, "fm_map_teacher") and has_chart(at, "fm_map_student")


def test_layer_correspondence_uses_the_models_it_is_given_and_their_versions(monkeypatch):
    teacher, student = loaders.load_pair("phantom")
    versions = (teacher.version, student.version)

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded again by its dataset's name")

    monkeypatch.setattr(loaders, "load_model", refuse)
    counters = [ForwardCounter(teacher.model), ForwardCounter(student.model)]
    try:
        first = feature_maps_view.layer_correspondence("phantom", teacher, student, versions, n_images=8)
        ran = [c.calls for c in counters]
        feature_maps_view.layer_correspondence("phantom", teacher, student, versions, n_images=8)
        cached = [c.calls for c in counters]
        mtime, head_mtime = versions[1][2]
        rewritten = (versions[0], (*versions[1][:2], (mtime + 1.0, head_mtime)))  # the student file's mtime moved
        again = feature_maps_view.layer_correspondence("phantom", teacher, student, rewritten, n_images=8)
        rerun = [c.calls for c in counters]
    finally:
        for c in counters:
            c.remove()
    assert min(ran) > 0 and cached == ran, "the same versions computed again"
    assert all(r > c for r, c in zip(rerun, cached)), "a rewritten checkpoint was not noticed"
    assert first["n_images"] == again["n_images"] == 8 and len(first["best_teacher"]) == 5


def test_a_models_version_follows_its_file(tmp_path):
    file = tmp_path / "teacher.pt"
    file.write_bytes(b"weights")
    os.utime(file, (1000.0, 1000.0))
    loaded = LoadedModel(torch.nn.Identity(), None, str(file), "teacher")
    assert loaded.version == ("teacher", str(file), (1000.0, None))  # (the file's mtime, the evidence head's)
    os.utime(file, (2000.0, 2000.0))
    assert loaded.version == ("teacher", str(file), (2000.0, None))
    head = tmp_path / "student_evidence.pt"  # a head retrained beside the model: results are computed again
    head.write_bytes(b"head")
    os.utime(head, (3000.0, 3000.0))
    assert loaded.version == ("teacher", str(file), (2000.0, 3000.0))
    file.unlink()
    assert loaded.version == ("teacher", str(file), (None, 3000.0))


def test_the_lesion_outline_is_offered_only_where_there_is_a_lesion_to_draw():
    at = open_page("feature_maps", {"image": "1"})  # class 1 of the phantom: a lesion
    assert_ok(at)
    assert at.checkbox(key="fm_outline").value
    at = open_page("feature_maps", {"image": "0"})  # no_lesion
    assert_ok(at)
    assert not [c for c in at.checkbox if c.key == "fm_outline"] and "No lesion in this image." in texts(at)
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="image_upload").set_value(("g.png", png_bytes(Image.new("L", (64, 64), 90)),
                                                     "image/png")).run()
    assert_ok(at)
    assert "No lesion masks" in texts(at)
