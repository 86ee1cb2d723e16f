"""scripts/build_plugin_zip.py makes a zip the plugin manager accepts, and QGIS loads the plugin from it."""

import configparser
import os
import re
import subprocess
import sys
import zipfile

import pytest

pytest.importorskip("qgis.core", reason="needs python3-qgis (run tests/qgis/run.sh with Debian's python)")

from qgis_helpers import QGIS_PROCESS, REPO  # noqa: E402

pytestmark = pytest.mark.qgis

REQUIRED = ("name", "qgisMinimumVersion", "description", "about", "version", "author")
LINKS = ("email", "homepage", "tracker", "repository")  # real addresses or left out: never placeholder text


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "geodiff_qgis.zip"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_plugin_zip.py"), "--out", str(out)], check=True
    )
    return out


def test_zip_layout_and_metadata(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as zf:
        names = zf.namelist()
        metadata = configparser.ConfigParser(interpolation=None)
        metadata.read_string(zf.read("geodiff_qgis/metadata.txt").decode("utf-8"))
    assert all(n.startswith("geodiff_qgis/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    for needed in (
        "__init__.py",
        "metadata.txt",
        "LICENSE",
        "icon.svg",
        "provider.py",
        "algorithms/rasterize_algorithm.py",
        "algorithms/synthesize_algorithm.py",
        "algorithms/augment_algorithm.py",
        "help/index.html",  # what every Help button opens
    ):
        assert f"geodiff_qgis/{needed}" in names
    general = metadata["general"]
    for key in REQUIRED:
        assert general.get(key, "").strip(), f"metadata.txt lacks {key}"
    for key in LINKS:
        value = general.get(key)
        assert value is None or (
            value.startswith("https://") if key != "email" else re.fullmatch(r"[^@\s]+@[^@\s]+\.\w+", value)
        ), f"metadata.txt {key}={value!r} is neither a real address nor left out"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes" and general["category"] == "Analysis"
    assert general["license"] == "MIT" and general["author"] == "geodiff developers"
    assert "ODbL" in general["about"] and "Python package separately" in general["about"]
    assert f"geodiff_qgis/{general['icon']}" in names


@pytest.mark.skipif(not os.path.exists(QGIS_PROCESS), reason="qgis_process not installed")
def test_qgis_loads_plugin_from_zip(plugin_zip, tmp_path):
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(plugin_zip) as zf:
        zf.extractall(plugins)
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profiles"),
        QGIS_PLUGINPATH=str(plugins),
    )
    enable = subprocess.run(
        [QGIS_PROCESS, "plugins", "enable", "geodiff_qgis"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert enable.returncode == 0, enable.stdout + enable.stderr
    listed = subprocess.run([QGIS_PROCESS, "list"], env=env, capture_output=True, text=True, timeout=300)
    assert "geodiff:synthesize" in listed.stdout
