"""The plugin as qgis_process sees it: found on QGIS_PLUGINPATH, enabled in a throw-away profile."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("qgis.core", reason="needs python3-qgis (run tests/qgis/run.sh with Debian's python)")

from qgis_helpers import (  # noqa: E402
    FAKE_CLI,
    PLUGIN_DIR,
    QGIS_PROCESS,
    check_raster,
    osm_bounds,
    real_geodiff_command,
)

pytestmark = pytest.mark.qgis

if not os.path.exists(QGIS_PROCESS):
    pytest.skip(f"{QGIS_PROCESS} not installed (scripts/install_qgis.sh)", allow_module_level=True)


def qgis_process(*args, env):
    # qgis_process.bin directly: Debian's qgis_process wrapper adds a flag that 3.22 rejects.
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def qgis_env(tmp_path):
    """Environment with a fresh profile in which the geodiff_qgis plugin is enabled."""
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profiles"),
        QGIS_PLUGINPATH=str(PLUGIN_DIR),
    )
    # qgis_process only loads enabled plugins; 3.22 has 'plugins enable' (it writes
    # [PythonPlugins] geodiff_qgis=true into the profile's QGIS3.ini).
    done = qgis_process("plugins", "enable", "geodiff_qgis", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return env


def run_rasterize(env, bbox, out, *extra):
    w, s, e, n = bbox
    return qgis_process(
        "--json",
        "run",
        "geodiff:rasterize",
        "--",
        f"EXTENT={w},{e},{s},{n} [EPSG:4326]",
        *extra,
        f"OUTPUT={out}",
        env=env,
    )


@pytest.fixture
def fake_exe(tmp_path):
    exe = tmp_path / "geodiff"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_CLI}" "$@"\n')
    exe.chmod(0o755)
    return exe


def test_qgis_process_lists_the_provider(qgis_env):
    done = qgis_process("list", env=qgis_env)
    assert "geodiff:rasterize" in done.stdout and "geodiff:synthesize" in done.stdout


def test_qgis_process_rasterize_with_fake_cli(qgis_env, fake_exe, tmp_path):
    bbox, out = (24.90, 60.15, 24.91, 60.16), tmp_path / "map.tif"
    done = run_rasterize(dict(qgis_env, GEODIFF_EXECUTABLE=str(fake_exe)), bbox, out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["results"]["OUTPUT"] == str(out)
    check_raster(out, bbox, "EPSG:4326", bands=1)


def test_qgis_process_reports_cli_error(qgis_env, fake_exe, tmp_path):
    env = dict(qgis_env, GEODIFF_EXECUTABLE=str(fake_exe), FAKE_GEODIFF_MODE="error")
    done = run_rasterize(env, (24.90, 60.15, 24.91, 60.16), tmp_path / "map.tif")
    assert done.returncode != 0
    assert "the bbox lies outside the OSM file's bounds" in done.stdout + done.stderr


def test_qgis_process_rasterize_with_real_cli(qgis_env, sample_osm, tmp_path):
    exe = real_geodiff_command("rasterize")
    bbox, out = osm_bounds(sample_osm), tmp_path / "map.tif"
    done = run_rasterize(dict(qgis_env, GEODIFF_EXECUTABLE=str(exe)), bbox, out, f"FILE={sample_osm}")
    assert done.returncode == 0, done.stdout + done.stderr
    check_raster(out, bbox, "EPSG:4326", bands=1)


def running(pid):
    """Alive and not a zombie (an orphan's zombie lingers until whatever adopted it reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_geodiff_dies_with_qgis(qgis_env, fake_exe, tmp_path, how):
    """QGIS terminated, killed or crashed during a run: geodiff must stop too, not run on for minutes. (qgis_process
    turns SIGTERM into a cancel; SIGKILL, like a crash, leaves nothing to clean up but the kernel's parent-death
    signal.)"""
    import signal
    import time

    pid_file = tmp_path / "pid"
    env = dict(
        qgis_env, GEODIFF_EXECUTABLE=str(fake_exe), FAKE_GEODIFF_MODE="sleep", FAKE_GEODIFF_PID=str(pid_file)
    )
    w, s, e, n = 24.90, 60.15, 24.91, 60.16
    qgis = subprocess.Popen(
        [QGIS_PROCESS, "run", "geodiff:rasterize", "--", f"EXTENT={w},{e},{s},{n} [EPSG:4326]",
         f"OUTPUT={tmp_path / 'map.tif'}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline and qgis.poll() is None:
            time.sleep(0.1)
        assert pid_file.exists(), "geodiff did not start"
        time.sleep(0.3)  # the pid is written before the fake sleeps
        child = int(pid_file.read_text())
        qgis.send_signal(getattr(signal, how))
        qgis.wait(timeout=30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not running(child):
                return
            time.sleep(0.1)
        os.kill(child, signal.SIGKILL)
        raise AssertionError(f"geodiff still running 5 s after QGIS got {how}")
    finally:
        if qgis.poll() is None:
            qgis.kill()
