"""The share link's files: the app's own dependency file and the Streamlit config it starts with."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from streamlit import config as st_config

from core.images import MAX_BYTES

ROOT = Path(__file__).resolve().parent.parent
APP_REQUIREMENTS = ROOT / "explorer" / "requirements.txt"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def read_requirements(path: Path) -> tuple[dict[str, Requirement], list[str]]:
    """Requirements by normalised name, and the option lines (``--extra-index-url ...``)."""
    packages, options = {}, []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            options.append(line)
            continue
        req = Requirement(line)
        name = req.name.lower().replace("_", "-")
        assert name not in packages, f"{path.name} names {name} twice"
        packages[name] = req
    return packages, options


def test_app_dependency_file_names_the_same_packages_as_the_root_one():
    root, _ = read_requirements(ROOT / "requirements.txt")
    app, _ = read_requirements(APP_REQUIREMENTS)
    assert set(app) == set(root)
    for name, req in root.items():
        assert str(app[name].specifier) == str(req.specifier), f"{name}: {app[name]} vs {req}"


def test_app_dependency_file_takes_torch_from_the_cpu_index():
    app, options = read_requirements(APP_REQUIREMENTS)
    assert {"torch", "torchvision"} <= set(app)
    # An extra index, not a replacement: streamlit, plotly and captum are only on PyPI.
    assert f"--extra-index-url {CPU_INDEX}" in options
    assert not any(opt.startswith(("--index-url", "-i ")) for opt in options)


def test_root_files_stay_the_local_ones():
    _, options = read_requirements(ROOT / "requirements.txt")
    assert options == []  # local installs and the tests keep PyPI's default wheels


def test_streamlit_config_uses_only_known_options():
    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    known = set(st_config._config_options_template)
    for section, values in settings.items():
        for key in values:
            assert f"{section}.{key}" in known, f"unknown Streamlit option {section}.{key}"


def test_streamlit_config_upload_limit_matches_the_image_reader():
    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["maxUploadSize"] * 2**20 == MAX_BYTES
    assert settings["client"]["toolbarMode"] == "viewer"
    assert settings["browser"]["gatherUsageStats"] is False
