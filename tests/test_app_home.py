"""Home page, shared sidebar, banner, and what the app says when data or checkpoints are missing."""

import os
import subprocess
import sys

import pytest

from core.catalog import DATASETS
from explorer import page_list
from tests.apptest_support import ROOT
from tests.apptest_support import as_read, assert_ok, fresh_streamlit_caches, open_app, open_page, texts  # noqa: F401


def test_home_shows_banner_paper_and_a_card_per_dataset():
    at = open_app()
    assert_ok(at)
    assert at.title[0].value == "Knowledge distillation explorer"
    assert any("not for diagnosis" in w.value for w in at.warning), "the teaching/research banner is missing"
    page = texts(at)
    assert "arxiv.org/abs/2502.15959" in page
    for name in DATASETS:
        assert f"**{name}**" in as_read(page), f"no card for {name}"
    # phantom needs nothing: its images are generated and its checkpoints are shipped
    assert "models: teacher" in page
    assert at.sidebar.selectbox(key="dataset").value == "phantom"
    assert at.query_params["dataset"] == "phantom"


def test_alzheimers_card_says_what_its_test_accuracy_measures():
    at = open_app()
    notes = {m.proto.help for m in at.markdown if m.value.startswith(":green[models:")}
    assert any("outer slices of the very scans" in n for n in notes), notes
    assert "" in notes  # the other datasets' cards carry no note


def test_home_runs_without_importing_torch():
    # A fresh process: this one imported torch long ago. torch and torchvision are most of the cold start's
    # time and memory; Home and the sidebar read files and metadata only (its background import turned off here).
    script = ("import sys; from streamlit.testing.v1 import AppTest; at = AppTest.from_file('explorer/Home.py', "
              "default_timeout=60).run(); assert not at.exception, at.exception; "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'pandas')))")
    env = {**os.environ, "KD_APP_PRELOAD": "0"}
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]", "Home imported: " + run.stdout[-300:]


def test_with_preload_home_imports_the_model_code_in_the_background_once_it_has_drawn():
    script = ("import sys; from streamlit.testing.v1 import AppTest; at = AppTest.from_file('explorer/Home.py', "
              "default_timeout=60).run(); assert not at.exception, at.exception; "
              "from explorer import runtime; thread = runtime.preload_model_code(); "
              "assert thread is runtime.preload_model_code(), 'a second thread was started'; "
              "thread.join(120); import torch; "
              "print('explorer.loaders' in sys.modules, torch.get_num_threads(), runtime.preload_seconds > 0)")
    env = {**{k: v for k, v in os.environ.items() if k != "KD_APP_THREADS"}, "KD_APP_PRELOAD": "1"}
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=180,
                         env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "True 1 True", run.stdout[-300:]


def _fake_torch(tmp_path, *libraries):
    package = tmp_path / "site" / "torch"
    (package / "lib").mkdir(parents=True)
    for name in libraries:
        (package / "lib" / name).write_bytes(b"")
    return package


def test_preload_is_on_by_default_with_a_cpu_build_of_torch_and_off_with_a_gpu_build(tmp_path, monkeypatch):
    from explorer import runtime

    monkeypatch.delenv("KD_APP_PRELOAD", raising=False)
    cpu = _fake_torch(tmp_path / "cpu", "libtorch_cpu.so", "libc10.so")
    assert runtime.preload_wanted(cpu)
    assert runtime.installed_torch_dir() is not None and (runtime.installed_torch_dir() / "__init__.py").is_file()
    for gpu_library in ("libtorch_cuda.so", "libtorch_hip.so", "torch_cuda.dll"):
        gpu = _fake_torch(tmp_path / gpu_library, "libtorch_cpu.so", gpu_library)
        assert not runtime.preload_wanted(gpu), gpu_library
        monkeypatch.setenv("KD_APP_PRELOAD", "1")
        assert runtime.preload_wanted(gpu), "KD_APP_PRELOAD=1 turns it on whatever the build"
        monkeypatch.delenv("KD_APP_PRELOAD")
    monkeypatch.setenv("KD_APP_PRELOAD", "0")
    assert not runtime.preload_wanted(cpu), "KD_APP_PRELOAD=0 turns it off whatever the build"
    # no torch installed: nothing to import in the background
    monkeypatch.delenv("KD_APP_PRELOAD")
    assert not runtime.preload_wanted(None)


def test_a_malformed_preload_setting_names_the_values_it_takes(monkeypatch):
    from explorer import runtime

    monkeypatch.setenv("KD_APP_PRELOAD", "yes please")
    try:
        runtime.preload_wanted(None)
    except ValueError as e:
        assert "KD_APP_PRELOAD" in str(e) and "'yes please'" in str(e) and "auto" in str(e)
    else:
        raise AssertionError("a malformed KD_APP_PRELOAD was taken")


def test_the_apps_torch_threads_default_to_one_and_a_malformed_setting_is_named(monkeypatch):
    import pytest

    from explorer import runtime

    monkeypatch.delenv("KD_APP_THREADS", raising=False)
    assert runtime.app_threads() == 1
    monkeypatch.setenv("KD_APP_THREADS", "3")
    assert runtime.app_threads() == 3
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv("KD_APP_THREADS", bad)
        with pytest.raises(ValueError, match=f"KD_APP_THREADS must be a whole number of at least 1, got '{bad}'"):
            runtime.app_threads()


def test_explore_button_switches_the_shared_dataset(tmp_path, monkeypatch):
    # Neither real data nor real-dataset checkpoints: their buttons are disabled.
    (tmp_path / "data").mkdir()
    (tmp_path / "ckpt" / "phantom").mkdir(parents=True)
    for f in (ROOT / "checkpoints" / "phantom").glob("*.*"):
        (tmp_path / "ckpt" / "phantom" / f.name).symlink_to(f)
    monkeypatch.setenv("KD_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path / "ckpt"))
    at = open_app()
    assert at.button(key="home_open_brain_tumor").disabled
    assert not at.button(key="home_open_phantom").disabled
    at.sidebar.selectbox(key="dataset").select("alzheimer").run()
    assert at.query_params["dataset"] == "alzheimer"
    at.button(key="home_open_phantom").click().run()
    assert_ok(at)
    assert at.sidebar.selectbox(key="dataset").value == "phantom"
    assert at.query_params["dataset"] == "phantom"
    assert any(t.value.startswith("Dataset") for t in at.title), "Explore opens the dataset's first page"


def test_missing_images_and_checkpoints_explain_what_to_do(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "ckpt").mkdir()
    monkeypatch.setenv("KD_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path / "ckpt"))
    at = open_page("dataset", {"dataset": "brain_tumor"})
    assert_ok(at)
    assert at.sidebar.selectbox(key="dataset").value == "brain_tumor"
    page = as_read(texts(at))  # the reason quotes the data root, shown as text
    assert "are not here" in page and "KD_DATA_ROOT" in page and "python -m core.fetch brain_tumor" in page
    for page_name in ("compare", "feature_maps", "explanations", "timing"):
        at.switch_page(page_list.page(page_name).link).run()
        assert_ok(at)
        assert "python -m core.train --dataset brain_tumor" in texts(at), page_name
    at.switch_page(page_list.page("train").link).run()
    assert_ok(at)
    assert "are not here" in texts(at)


def test_a_stale_deep_link_falls_back_to_defaults():
    at = open_page("feature_maps", {"dataset": "no_such_dataset", "image": "99999", "layer": "banana"})
    assert_ok(at)
    assert at.sidebar.selectbox(key="dataset").value == "phantom"
    assert at.number_input(key="image").value == 0
    assert at.slider(key="layer").value == 1


def test_a_broken_checkpoint_is_reported_on_its_card_and_other_datasets_keep_working(tmp_path, monkeypatch):
    import json
    import shutil

    from tests.apptest_support import link_shipped

    link_shipped(tmp_path)
    broken = tmp_path / "brain_tumor"
    broken.mkdir()
    shutil.copyfile(ROOT / "checkpoints" / "phantom" / "teacher.pt", broken / "teacher.pt")
    meta = json.loads((ROOT / "checkpoints" / "phantom" / "teacher.json").read_text())
    meta["std"] = ["a", "b", "c"]
    (broken / "teacher.json").write_text(json.dumps(meta))
    monkeypatch.setenv("KD_CHECKPOINTS", str(tmp_path))
    at = open_app()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "Teacher checkpoint cannot be used" in errors[0] and "'std'" in errors[0]
    at = open_page("compare")  # phantom still works
    assert_ok(at)


def test_home_links_every_page_but_itself_and_the_glossary():
    links = {link.proto.page: link.proto.label for link in open_app().get("page_link")}
    assert links == {"lesson": "Run the lesson for a class", "dataset": "Browse the dataset",
                     "compare": "Teacher vs student",
                     "feature_maps": "Step through feature maps", "explanations": "Compare explanations",
                     "faithfulness": "Faithfulness over the test set", "timing": "Time the explainers",
                     "train": "Train and distil"}


def test_the_page_list_names_every_page_file_once_and_refuses_others():
    names = [p.name for p in page_list.PAGES]
    assert sorted(names) == sorted(p.stem for p in (ROOT / "pages").glob("*.py")) and len(set(names)) == len(names)
    assert [(p.name, p.url_path) for p in page_list.PAGES if p.default] == [("home", "")]
    # Home above the sections, the Lesson first of the Explorer's (a lecturer finds it first)
    assert list(page_list.groups()) == ["", "Explorer", "Experiments", "Help"]
    assert page_list.groups()["Explorer"][0].name == "lesson"
    assert page_list.page("feature_maps").link == "../pages/feature_maps.py"
    with pytest.raises(KeyError, match="no page 'featuremaps'"):
        page_list.page("featuremaps")


def test_the_dataset_picker_says_what_each_dataset_has_in_words():
    at = open_app()
    assert_ok(at)
    picker = at.sidebar.selectbox(key="dataset")
    assert "phantom (images here, models shipped)" in picker.options
    assert "images are on this machine" in picker.help
