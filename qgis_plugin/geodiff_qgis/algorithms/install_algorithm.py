"""geodiff:install: a dedicated Python environment under the QGIS profile with geodiff pip-installed into it, set as
the provider's geodiff executable. From the package index, a wheel file, or (offline) a folder of wheels."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
)

from ..cli import (
    _MODELS_CACHE,
    _VERSION_CACHE,
    BIN_DIR,
    EXE_NAME,
    EXECUTABLE_SETTING,
    geodiff_version,
    run_geodiff,
)
from .base import GeodiffAlgorithm, advanced

MIN_PYTHON = (3, 11)


def default_environment():
    """``<QGIS profile>/geodiff/venv``: per profile, removed with it, never the user's own environments."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "geodiff" / "venv"


class InstallAlgorithm(GeodiffAlgorithm):
    WHEEL = "WHEEL"
    FIND_LINKS = "FIND_LINKS"
    PYTHON = "PYTHON"
    EXECUTABLE = "EXECUTABLE"
    WITH_ONNX = "WITH_ONNX"
    ICON = "synthesize.svg"

    def name(self):
        return "install"

    def displayName(self):  # noqa: N802
        return self.tr("Install geodiff (a Python environment for this plugin)")

    def shortHelpString(self):  # noqa: N802
        return self.tr(
            "Creates a Python environment under the QGIS profile ({}) and installs the geodiff program into it with "
            "pip: from the package index, from a geodiff wheel file you pick, or, on a machine without internet, "
            "from a folder of wheels (geodiff and its dependencies). Then sets Processing > Options > Providers > "
            "geodiff > 'geodiff executable' to it. Needs Python >= 3.11 (python3 on PATH, or the one you pick). "
            "Running it again upgrades geodiff in the same environment. Reopen the geodiff dialogs afterwards to see "
            "the installed models."
        ).format(default_environment())

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(
            QgsProcessingParameterFile(
                self.WHEEL,
                self.tr("geodiff wheel file (empty: geodiff from the package index)"),
                optional=True,
                fileFilter=self.tr("Python wheels (*.whl)"),
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.FIND_LINKS,
                self.tr("Folder of wheels, for a machine without internet (pip --no-index --find-links)"),
                behavior=QgsProcessingParameterFile.Folder,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.WITH_ONNX,
                self.tr(
                    "Also install ONNX Runtime (the 'Runtime' = onnx option: about 1.4x faster on a CPU)"
                ),
                defaultValue=False,
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterFile(
                    self.PYTHON, self.tr("Python >= 3.11 to create the environment with (empty: python3 on PATH)"),
                    optional=True,
                )
            )
        )  # fmt: skip
        self.addOutput(QgsProcessingOutputFile(self.EXECUTABLE, self.tr("geodiff executable")))

    def _python(self, parameters, context):
        python = self.parameterAsFile(parameters, self.PYTHON, context)
        if not python:
            names = ("python3", "python") if sys.platform != "win32" else ("python", "py")
            python = next((found for found in map(shutil.which, names) if found), None)
        if not python:
            raise QgsProcessingException(
                self.tr("No Python found on PATH: install Python >= 3.11 or pick it under Advanced.")
            )
        try:
            version = subprocess.run(
                [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True,
                timeout=60, env=_clean_env(), creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
            ).stdout.split()  # fmt: skip
            version = tuple(int(v) for v in version)
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            raise QgsProcessingException(
                self.tr("Could not run the Python {}: {}").format(python, exc)
            ) from exc
        if version < MIN_PYTHON:
            raise QgsProcessingException(
                self.tr("geodiff needs Python >= 3.11; {} is {}: pick another one under Advanced.").format(
                    python, ".".join(map(str, version))
                )
            )
        return python

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from processing.core.ProcessingConfig import ProcessingConfig

        wheel = self.parameterAsFile(parameters, self.WHEEL, context)
        find_links = self.parameterAsFile(parameters, self.FIND_LINKS, context)
        if wheel and not Path(wheel).is_file():
            raise QgsProcessingException(self.tr("Wheel file not found: {}").format(wheel))
        if find_links and not Path(find_links).is_dir():
            raise QgsProcessingException(self.tr("Folder of wheels not found: {}").format(find_links))
        env_dir = default_environment()
        venv_python = env_dir / BIN_DIR / ("python.exe" if sys.platform == "win32" else "python")
        if not venv_python.is_file():
            python = self._python(parameters, context)
            feedback.setProgressText(self.tr("Creating the Python environment {}").format(env_dir))
            run_geodiff(python, ["-m", "venv", str(env_dir)], feedback, name="python -m venv")
        feedback.setProgress(10)
        if feedback.isCanceled():
            raise QgsProcessingException(self.tr("Installing geodiff was canceled"))

        pip = [str(venv_python), "-m", "pip", "install", "--upgrade", "--progress-bar", "off"]
        pip += ["--no-index", "--find-links", find_links] if find_links else []
        # the extra: ONNX Runtime for the 'Runtime' = onnx parameter (pip reads extras after a wheel path too)
        with_onnx = self.parameterAsBool(parameters, self.WITH_ONNX, context)
        pip.append((wheel or "geodiff") + ("[onnx]" if with_onnx else ""))
        feedback.setProgressText(self.tr("Installing {} with pip (torch alone is a large download)").format(
            Path(wheel).name if wheel else "geodiff"))  # fmt: skip
        run_geodiff(pip[0], pip[1:], feedback, name="pip install", on_line=PipProgress(feedback, 10, 90))
        feedback.setProgress(90)

        executable = env_dir / BIN_DIR / EXE_NAME
        if not executable.is_file():
            raise QgsProcessingException(self.tr("pip installed no geodiff program at {}").format(executable))
        _VERSION_CACHE.pop(str(executable), None)
        _MODELS_CACHE.pop(str(executable), None)
        version = geodiff_version(str(executable))
        if version == "?":
            raise QgsProcessingException(
                self.tr("geodiff was installed at {} but does not run ('geodiff --version' failed).").format(
                    executable
                )
            )
        ProcessingConfig.setSettingValue(EXECUTABLE_SETTING, str(executable))
        feedback.pushInfo(
            self.tr("geodiff {} installed; Processing > Options > Providers > geodiff > 'geodiff executable' is now {}")
            .format(version, executable)
        )  # fmt: skip
        return {self.EXECUTABLE: str(executable)}


class PipProgress:
    """The progress bar from pip's own lines (pip has no machine-readable progress): each package it collects
    moves the bar a step towards ``stop`` (steps shrink, the number of packages is unknown up front), then
    'Installing collected packages' and 'Successfully installed' take it to the end of the range."""

    def __init__(self, feedback, start, stop):
        self.feedback, self.start, self.stop, self.collected = feedback, start, stop, 0

    def __call__(self, line):
        span = self.stop - self.start
        text = line.strip()
        if text.startswith("Collecting ") or text.startswith("Processing "):
            self.collected += 1
            # 1 - 1/(1 + n/8): 11 % of the collecting share after one package, 50 % after eight, 80 % after 32
            self._set(self.start + 0.7 * span * (1 - 1 / (1 + self.collected / 8)))
            self.feedback.setProgressText(text)
        elif text.startswith("Installing collected packages"):
            self._set(self.start + 0.8 * span)
            self.feedback.setProgressText("Installing the collected packages")
        elif text.startswith("Successfully installed"):
            self._set(self.stop)

    def _set(self, value):
        self.feedback.setProgress(max(self.feedback.progress(), value))


def _clean_env():
    """QGIS's own Python paths must not leak into another Python."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
