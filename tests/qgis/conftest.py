"""Fixtures for the QGIS plugin tests: a headless QgsApplication with Processing and the geodiff provider.

These run under Debian's system Python with python3-qgis (see tests/qgis/run.sh). Nothing here imports qgis at
module level, so the main venv's test run collects the folder cleanly (each test module importorskips qgis).
"""

import os
import sys
import types

import pytest
from qgis_helpers import FAKE_CLI, PLUGIN_DIR, SAMPLE_OSM, set_executable

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def qgis_profile(tmp_path_factory):
    """A throw-away QGIS settings folder: tests never touch the user's real profile."""
    path = tmp_path_factory.mktemp("qgis_profile")
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(path)
    return path


@pytest.fixture(scope="session")
def qgis_app(qgis_profile):
    from qgis.core import QgsApplication

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))  # 'processing'
    from processing.core.Processing import Processing

    Processing.initialize()
    sys.path.insert(0, str(PLUGIN_DIR))
    import geodiff_qgis

    plugin = geodiff_qgis.classFactory(None)  # the same path QGIS takes
    plugin.initProcessing()
    yield app
    plugin.unload()
    # No app.exitQgis(): it can crash at interpreter exit with Processing still loaded, failing a green run.


@pytest.fixture
def fake_geodiff(qgis_app, tmp_path, monkeypatch):
    """The fake CLI behind an executable wrapper, set as the provider's 'geodiff executable'."""
    exe = tmp_path / "bin" / "geodiff"
    exe.parent.mkdir()
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_CLI}" "$@"\n')
    exe.chmod(0o755)
    fake = types.SimpleNamespace(exe=exe, args_file=tmp_path / "args.json", pid_file=tmp_path / "pid")
    monkeypatch.setenv("FAKE_GEODIFF_ARGS", str(fake.args_file))
    monkeypatch.setenv("FAKE_GEODIFF_PID", str(fake.pid_file))
    monkeypatch.setenv("FAKE_GEODIFF_MODE", "ok")
    monkeypatch.delenv("GEODIFF_EXECUTABLE", raising=False)
    set_executable(exe)
    yield fake
    set_executable(None)


@pytest.fixture
def sample_osm():
    if not SAMPLE_OSM.is_file():
        pytest.skip(f"sample {SAMPLE_OSM} not authored yet")
    return SAMPLE_OSM
