"""geodiff:install: a Python environment under the QGIS profile, geodiff pip-installed offline from a wheel."""

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("qgis.core", reason="needs python3-qgis (run tests/qgis/run.sh with Debian's python)")

from qgis.core import QgsProcessingException, QgsProcessingFeedback  # noqa: E402
from qgis_helpers import set_executable  # noqa: E402

pytestmark = pytest.mark.qgis

VERSION = "0.0.1+test"


def build_wheel(folder, name="geodiff", onnx_extra=None):
    """A minimal wheel of a 'geodiff' distribution whose console script answers --version, written by hand:
    the test needs no build tools, no index and no network. ``onnx_extra``: the one package its extra 'onnx'
    requires (another such wheel); ``name`` other than geodiff: a bare package of that name."""
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {VERSION}\n"
    if onnx_extra:
        meta += f"Provides-Extra: onnx\nRequires-Dist: {onnx_extra} ; extra == 'onnx'\n"
    files = {
        f"{name}-{VERSION}.dist-info/METADATA": meta,
        f"{name}-{VERSION}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    if name == "geodiff":
        files["geodiff_stub/__init__.py"] = (
            "import sys\n\ndef main():\n"
            f"    print('geodiff, version {VERSION}') if sys.argv[1:] == ['--version'] else sys.exit(2)\n"
        )
        files[f"geodiff-{VERSION}.dist-info/entry_points.txt"] = (
            "[console_scripts]\ngeodiff = geodiff_stub:main\n"
        )
    else:
        files[f"{name}/__init__.py"] = ""
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}-{VERSION}.dist-info/RECORD,,")
    files[f"{name}-{VERSION}.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = Path(folder) / f"{name}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return wheel


def test_install_from_a_wheel_offline_sets_the_executable(qgis_app, tmp_path):
    import processing
    from geodiff_qgis.algorithms.install_algorithm import default_environment
    from geodiff_qgis.cli import EXECUTABLE_SETTING
    from processing.core.ProcessingConfig import ProcessingConfig

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = build_wheel(wheels)
    set_executable(None)

    class Recorder(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.values = []
            self.progressChanged.connect(self.values.append)

    feedback = Recorder()
    try:
        results = processing.run(
            "geodiff:install", {"WHEEL": str(wheel), "FIND_LINKS": str(wheels)}, feedback=feedback
        )
        # pip's lines move the bar between the environment (10) and the end: never backwards
        between = [v for v in feedback.values if 10 < v < 90]
        assert between and between == sorted(between), feedback.values
        exe = Path(results["EXECUTABLE"])
        assert exe.is_file() and default_environment() in exe.parents  # under the QGIS profile
        assert ProcessingConfig.getSetting(EXECUTABLE_SETTING) == str(exe)  # the provider now uses it
        log = feedback.textLog()
        assert f"geodiff {VERSION} installed" in log and "--no-index" in log  # offline: no index asked
        # the provider's own check finds it, and the version shows in every run's log
        from geodiff_qgis.cli import find_executable, geodiff_version

        assert find_executable(ProcessingConfig.getSetting(EXECUTABLE_SETTING)) == str(exe)
        assert geodiff_version(str(exe)) == VERSION
    finally:
        set_executable(None)


def test_install_with_onnx_runtime_installs_the_onnx_extra(qgis_app, tmp_path):
    import subprocess

    import processing
    from geodiff_qgis.algorithms.install_algorithm import default_environment
    from geodiff_qgis.cli import BIN_DIR

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = build_wheel(wheels, onnx_extra="onnxprobe")
    build_wheel(wheels, name="onnxprobe")  # stands for onnxruntime: only the extra brings it
    set_executable(None)
    python = default_environment() / BIN_DIR / "python"
    try:
        params = {"WHEEL": str(wheel), "FIND_LINKS": str(wheels)}
        processing.run("geodiff:install", params, feedback=QgsProcessingFeedback())
        # the environment outlives a test: an earlier run of this one left the probe there
        subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "onnxprobe"], capture_output=True)
        probe = [str(python), "-c", "import onnxprobe"]
        assert subprocess.run(probe, capture_output=True).returncode != 0  # not without the box ticked
        processing.run("geodiff:install", {**params, "WITH_ONNX": True}, feedback=QgsProcessingFeedback())
        assert subprocess.run(probe, capture_output=True).returncode == 0
    finally:
        set_executable(None)


def test_install_reports_a_missing_wheel(qgis_app, tmp_path):
    import processing

    with pytest.raises(QgsProcessingException) as info:
        processing.run(
            "geodiff:install", {"WHEEL": str(tmp_path / "nope.whl")}, feedback=QgsProcessingFeedback()
        )
    assert "nope.whl" in str(info.value)
