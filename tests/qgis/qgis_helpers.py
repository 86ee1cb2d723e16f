"""Helpers shared by the QGIS tests (no fixtures; importable as a plain module)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "qgis_plugin"
FAKE_CLI = Path(__file__).with_name("fake_geodiff.py")
SAMPLE_OSM = REPO / "samples" / "tiny_town.osm"
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"


def set_executable(path):
    from geodiff_qgis.cli import EXECUTABLE_SETTING
    from processing.core.ProcessingConfig import ProcessingConfig

    ProcessingConfig.setSettingValue(EXECUTABLE_SETTING, str(path) if path else "")


def _real_executable():
    env = os.environ.get("GEODIFF_EXECUTABLE")
    if env:
        return Path(env)
    default = REPO / ".venv" / "bin" / "geodiff"
    found = shutil.which("geodiff")
    return default if default.exists() or not found else Path(found)


def real_geodiff_command(command):
    """Path of the real geodiff CLI if it exists and has `command`, else skip with the reason."""
    exe = _real_executable()
    if not exe.is_file():
        pytest.skip(f"real geodiff CLI not found at {exe} (set GEODIFF_EXECUTABLE)")
    probe = subprocess.run([str(exe), command, "--help"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(
            f"'{exe} {command}' is not available yet: {(probe.stderr or probe.stdout).strip()[-200:]}"
        )
    return exe


def osm_bounds(path):
    """(W, S, E, N) of an OSM XML file: its <bounds> element, else the extent of its nodes."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    b = root.find("bounds")
    if b is not None:
        return tuple(float(b.get(k)) for k in ("minlon", "minlat", "maxlon", "maxlat"))
    lons = [float(n.get("lon")) for n in root.iter("node")]
    lats = [float(n.get("lat")) for n in root.iter("node")]
    return min(lons), min(lats), max(lons), max(lats)


def check_raster(path, extent, crs_authid, bands=None):
    """Assert `path` is a valid georeferenced raster overlapping `extent` (W, S, E, N in crs_authid)."""
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransform,
        QgsProject,
        QgsRasterLayer,
        QgsRectangle,
    )

    layer = QgsRasterLayer(str(path), "out")
    assert layer.isValid(), f"{path} is not a valid raster"
    assert layer.crs().isValid(), f"{path} has no CRS"
    if bands is not None:
        assert layer.bandCount() == bands
    requested = QgsRectangle(*extent)
    to_request = QgsCoordinateTransform(
        layer.crs(), QgsCoordinateReferenceSystem(crs_authid), QgsProject.instance()
    )
    got = to_request.transformBoundingBox(layer.extent())
    assert got.intersects(requested), f"raster extent {got.toString()} misses {requested.toString()}"
    return layer
