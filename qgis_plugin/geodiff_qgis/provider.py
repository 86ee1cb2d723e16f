"""The "geodiff" Processing provider: three algorithms and its settings (the CLI's path, the size limit)."""

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .cli import DEFAULT_MAX_WINDOWS, EXECUTABLE_SETTING, MAX_WINDOWS_SETTING

ICON = str(Path(__file__).with_name("icon.svg"))


class GeodiffProvider(QgsProcessingProvider):
    def load(self):
        # ProcessingConfig is the Processing > Options > Providers page (imported here: needs Processing loaded).
        from processing.core.ProcessingConfig import ProcessingConfig, Setting

        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(
            Setting(
                self.name(),
                EXECUTABLE_SETTING,
                self.tr(
                    "geodiff executable (empty: $GEODIFF_EXECUTABLE, PATH, then common virtual environments)"
                ),
                "",
                valuetype=Setting.FILE,
            )
        )
        ProcessingConfig.addSetting(
            Setting(
                self.name(),
                MAX_WINDOWS_SETTING,
                self.tr("Largest synthesis run without asking, in model windows (0 = no limit)"),
                DEFAULT_MAX_WINDOWS,
                valuetype=Setting.INT,
            )
        )
        ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self):
        from processing.core.ProcessingConfig import ProcessingConfig

        ProcessingConfig.removeSetting(EXECUTABLE_SETTING)
        ProcessingConfig.removeSetting(MAX_WINDOWS_SETTING)

    def loadAlgorithms(self):  # noqa: N802
        from .algorithms.augment_algorithm import AugmentAlgorithm
        from .algorithms.change_algorithm import ChangeAlgorithm
        from .algorithms.install_algorithm import InstallAlgorithm
        from .algorithms.rasterize_algorithm import RasterizeAlgorithm
        from .algorithms.synthesize_algorithm import SynthesizeAlgorithm

        self.addAlgorithm(SynthesizeAlgorithm())
        self.addAlgorithm(RasterizeAlgorithm())
        self.addAlgorithm(AugmentAlgorithm())
        self.addAlgorithm(ChangeAlgorithm())
        self.addAlgorithm(InstallAlgorithm())

    def id(self):
        return "geodiff"

    def name(self):
        return "geodiff"

    def longName(self):  # noqa: N802
        return "geodiff: synthetic aerial imagery from OpenStreetMap"

    def icon(self):
        return QIcon(ICON)

    def svgIconPath(self):  # noqa: N802
        return ICON

    # geodiff writes GeoTIFF only: offer no other raster format for outputs.
    def supportedOutputRasterLayerExtensions(self):  # noqa: N802
        return ["tif"]

    def defaultRasterFileExtension(self):  # noqa: N802
        return "tif"
