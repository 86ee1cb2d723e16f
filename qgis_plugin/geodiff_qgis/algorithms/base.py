"""Parameters and checks shared by the geodiff algorithms: area, map source, resolution, GeoTIFF outputs."""

from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsUnitTypes,
)
from qgis.PyQt.QtCore import QCoreApplication, QUrl
from qgis.PyQt.QtGui import QIcon

from ..cli import (
    EXECUTABLE_SETTING,
    MAX_WINDOWS_SETTING,
    find_executable,
    geodiff_version,
    plugin_version,
    run_geodiff,
)
from ..styles import style_on_load

OSM_ATTRIBUTION = "Map data (c) OpenStreetMap contributors, ODbL (https://www.openstreetmap.org/copyright)"
PLUGIN_DIR = Path(__file__).resolve().parent.parent
HELP_PAGE = PLUGIN_DIR / "help" / "index.html"
# Measured, not guessed: bench/results/cpu.md and the model card (2 CPU threads, 20 DPM-Solver++ steps).
CPU_SECONDS_PER_WINDOW = 5
# Quality 'fast' (the distilled student, 4 one-pass steps instead of 20 two-pass ones): 8.5x less in the same
# run (bench/results/distill_pilot/README.md).
CPU_SECONDS_PER_WINDOW_FAST = 0.6
# Runtime 'onnx' (the U-Net and decoder on ONNX Runtime): seconds per tile divided by these on 2 CPU threads
# (bench/results/runtime_cpu/README.md).
CPU_ONNX_SPEEDUP = {"full": 1.47, "fast": 1.36}
RUNTIMES = ["torch", "onnx"]  # geodiff's --runtime values, chosen by name in the dialogs
MIN_RESOLUTION = 0.05  # metres per pixel: finer than any aerial model; keeps the dialog's spin box above 0

# The CLI's option names in its messages, said in terms of this dialog's parameters.
CLI_TERMS = {
    "--allow-empty": "'Allow an all-background map'",
    "--model DIR": "the 'Model folder' parameter",
    "--model": "the 'Model' parameter",
    "--resolution": "'Resolution'",
    "--osm FILE": "'OpenStreetMap file'",
    "--osm": "'OpenStreetMap file'",
    "--vector": "'Vector layer with classes'",
    "--crs": "'Output CRS'",
    "--steps": "'Denoising steps'",
    "--quality": "'Quality'",
    "--runtime": "'Runtime'",
    "pip install 'geodiff[onnx]'": "'Install geodiff' with 'Also install ONNX Runtime' ticked",
    "--sampler": "the sampler",
    "--seed": "'Random seed'",
    "--device cpu": "'Device' = cpu",
    "--guidance-scale": "'Guidance scale'",
    "--threads": "'CPU threads'",
    "--seeds-per-window": "'Samples per tile'",
    "--windows": "'Polygon layer'",
    "--area": "'Area for random tiles'",
    "--format": "'Tile format'",
    "--device": "'Device'",
    "--bbox": "'Area'",
    "--n-windows": "'Number of tiles'",
    "--min-labeled": "'Minimum mapped fraction'",
    "GEODIFF_MAX_PIXELS": "GEODIFF_MAX_PIXELS (an environment variable of the geodiff program)",
}


def in_dialog_terms(text):
    """Replace CLI option names in a geodiff message by the names of the dialog's parameters."""
    for cli_name in sorted(CLI_TERMS, key=len, reverse=True):  # longest first: '--model DIR' before '--model'
        text = text.replace(cli_name, CLI_TERMS[cli_name])
    return text


def advanced(param):
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return param


class GeodiffAlgorithm(QgsProcessingAlgorithm):
    EXTENT = "EXTENT"
    FILE = "FILE"
    VECTOR = "VECTOR"
    CLASS_FIELD = "CLASS_FIELD"
    RESOLUTION = "RESOLUTION"
    OUTPUT_CRS = "OUTPUT_CRS"
    OUTPUT = "OUTPUT"
    ICON = "icon.svg"

    def tr(self, text):
        return QCoreApplication.translate(type(self).__name__, text)

    def createInstance(self):  # noqa: N802
        return type(self)()

    def icon(self):
        return QIcon(str(PLUGIN_DIR / "icons" / self.ICON))

    def svgIconPath(self):  # noqa: N802
        return str(PLUGIN_DIR / "icons" / self.ICON)

    def helpUrl(self):  # noqa: N802
        # no public homepage yet: the help page shipped inside the plugin (and its zip), at this algorithm
        url = QUrl.fromLocalFile(str(HELP_PAGE))
        url.setFragment(self.name())
        return url.toString()

    def add_source_parameters(
        self, resolution=True, area_label="Area (extent and its CRS)", area_optional=False
    ):
        self.addParameter(
            QgsProcessingParameterExtent(self.EXTENT, self.tr(area_label), optional=area_optional)
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.FILE,
                self.tr("OpenStreetMap file (empty: download the area from Overpass)"),
                optional=True,
                fileFilter=self.tr(
                    "OpenStreetMap files (*.osm *.osm.pbf *.pbf *.osm.bz2 *.bz2 *.osm.gz *.gz);;All files (*.*)"
                ),
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.VECTOR,
                self.tr("Vector layer with classes (instead of OpenStreetMap)"),
                [QgsProcessing.TypeVectorAnyGeometry],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.CLASS_FIELD,
                self.tr("Class attribute of the vector layer (name or id)"),
                defaultValue="class",
                parentLayerParameterName=self.VECTOR,
                optional=True,
            )
        )
        if resolution:
            self.addParameter(
                advanced(
                    QgsProcessingParameterNumber(
                        self.RESOLUTION,
                        self.tr(self.RESOLUTION_LABEL),
                        QgsProcessingParameterNumber.Double,
                        optional=True,
                        minValue=MIN_RESOLUTION,
                    )
                )
            )
        self.addParameter(
            advanced(
                QgsProcessingParameterCrs(
                    self.OUTPUT_CRS,
                    self.tr("Output CRS, projected in metres (empty: the UTM zone of the area)"),
                    optional=True,
                )
            )
        )

    RESOLUTION_LABEL = "Resolution in metres per pixel (empty: 1 m/px, the default model's)"

    def source_arguments(self, parameters, context, feedback, resolution=True):
        """CLI arguments for area (``--bbox``), map source, output CRS and resolution; raises
        QgsProcessingException on bad input."""
        bbox, crs = self.area_arguments(parameters, context)
        return [
            f"--bbox={bbox}",
            "--bbox-crs",
            crs,
            *self.map_arguments(parameters, context, feedback, resolution),
        ]

    def area_arguments(self, parameters, context):
        """``(W,S,E,N text, CRS text)`` of the Area extent."""
        extent = self.parameterAsExtent(parameters, self.EXTENT, context)
        crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        if extent.isNull() or extent.isEmpty() or extent.width() <= 0 or extent.height() <= 0:
            raise QgsProcessingException(
                self.tr("The area is empty: choose an extent with a non-zero width and height.")
            )
        if not crs.isValid():
            raise QgsProcessingException(
                self.tr(
                    "The extent has no CRS: give it as "
                    "'xmin,xmax,ymin,ymax [EPSG:4326]' or pick it on the map."
                )
            )
        # W,S,E,N in the extent's own CRS, which only describes the area: geodiff builds its grid in the local
        # UTM zone (or the metric Output CRS), so a Web Mercator canvas gets the model's true ground scale.
        # Custom CRSs have no authid: pass their WKT.
        bbox = ",".join(
            repr(v) for v in (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
        )
        return bbox, crs.authid() or crs.toWkt()

    def map_arguments(self, parameters, context, feedback, resolution=True):
        """CLI arguments for the map source, the output CRS and (``resolution``) the resolution.

        Notes for the log are kept in ``self.notes`` and logged when geodiff starts (after the cost line)."""
        args = []
        self.notes = []
        osm = self.parameterAsFile(parameters, self.FILE, context)
        has_vector = parameters.get(self.VECTOR) not in (None, "")
        if osm and has_vector:
            raise QgsProcessingException(
                self.tr("Give either an OpenStreetMap file or a vector layer, not both.")
            )
        if osm:
            if not Path(osm).is_file():
                raise QgsProcessingException(self.tr("OpenStreetMap file not found: {}").format(osm))
            args += ["--osm", osm]
        elif has_vector:
            args += self._vector_arguments(parameters, context, feedback)
        else:
            self.notes.append(
                self.tr("No OSM file or vector layer given: geodiff downloads the area from Overpass.")
            )

        out_crs = self.parameterAsCrs(parameters, self.OUTPUT_CRS, context)
        if parameters.get(self.OUTPUT_CRS) not in (None, "") and out_crs.isValid():
            if out_crs.mapUnits() != QgsUnitTypes.DistanceMeters or out_crs.isGeographic():
                raise QgsProcessingException(
                    self.tr(
                        "The Output CRS {} is not in metres: the model's scale is metres per pixel; choose a "
                        "projected metric CRS or leave it empty (the local UTM zone)."
                    ).format(out_crs.authid())
                )
            if out_crs.authid() in ("EPSG:3857", "EPSG:900913", "EPSG:3395"):
                raise QgsProcessingException(
                    self.tr(
                        "The Output CRS {} (Web Mercator) is metric only at the equator: the model would see the "
                        "wrong ground scale. Leave it empty (the local UTM zone) or choose an equal-scale CRS."
                    ).format(out_crs.authid())
                )
            args += ["--crs", out_crs.authid() or out_crs.toWkt()]

        if resolution and parameters.get(self.RESOLUTION) not in (None, ""):
            resolution = self.parameterAsDouble(parameters, self.RESOLUTION, context)
            if not resolution > 0:
                raise QgsProcessingException(
                    self.tr(
                        "Resolution must be greater than 0 metres per pixel (got {})."
                        " Leave it empty to use the default."
                    ).format(resolution)
                )
            args += ["--resolution", repr(resolution)]
        return args

    def _vector_arguments(self, parameters, context, feedback):
        source = self.parameterAsSource(parameters, self.VECTOR, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.VECTOR))
        field = self.parameterAsString(parameters, self.CLASS_FIELD, context) or "class"
        if source.fields().indexOf(field) < 0:
            names = ", ".join(source.fields().names()) or "none"
            raise QgsProcessingException(
                self.tr(
                    "The vector layer has no attribute '{}' (attributes: {}): choose the class attribute."
                ).format(field, names)
            )
        # No compatible formats: always write a plain single-layer temporary GeoPackage, so geodiff never gets a
        # 'file.gpkg|layername=...' URI, a subset or a selection it cannot see.
        path = self.parameterAsCompatibleSourceLayerPath(
            parameters, self.VECTOR, context, [], "gpkg", feedback
        )
        if not path:
            raise QgsProcessingException(self.tr("Could not export the vector layer to a GeoPackage."))
        return ["--vector", path, "--class-field", field]

    def output_path(self, parameters, name, context):
        path = self.parameterAsOutputLayer(parameters, name, context)
        if path and Path(path).suffix.lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(
                self.tr("geodiff writes GeoTIFF: name the output '*.tif' (got {}).").format(path)
            )
        return path

    def executable(self):
        from processing.core.ProcessingConfig import ProcessingConfig

        return find_executable(ProcessingConfig.getSetting(EXECUTABLE_SETTING))

    def run_cli(self, args, feedback, overwrite=True, on_plan=None):
        """Run geodiff; outputs named in the dialog may be replaced (QGIS's convention), nothing else.

        ``on_plan(plan)`` sees the cost geodiff announces before it starts working (see ``check_cost``)."""
        executable = self.executable()
        feedback.pushInfo(
            self.tr("geodiff QGIS plugin {}, geodiff {} ({})").format(
                plugin_version(), geodiff_version(executable), executable
            )
        )
        for note in getattr(self, "notes", []):
            feedback.pushInfo(note)
        extra = ["--progress", "json"] + (["--overwrite"] if overwrite else [])
        run_geodiff(executable, [*args, *extra], feedback, translate=in_dialog_terms, on_plan=on_plan)

    def check_cost(self, windows, seconds=None):
        """Refuse a run above the window limit of Processing > Options > Providers > geodiff."""
        from processing.core.ProcessingConfig import ProcessingConfig

        limit = int(ProcessingConfig.getSetting(MAX_WINDOWS_SETTING) or 0)
        if limit and windows > limit:
            raise QgsProcessingException(
                self.tr(
                    "This run needs {} windows of the model (estimated {:.0f} min), above the limit of {} set in "
                    "Processing > Options > Providers > geodiff: choose a smaller area or raise the limit."
                ).format(windows, (seconds or 0) / 60, limit)
            )

    def style_on_load(self, context, path, name, qml=None):
        """When Processing loads ``path`` (dialog, runAndLoadResults), give it ``name`` and geodiff's style."""
        style_on_load(context, path, name, qml=qml)

    def layer_name(self, label, parameters, context, seed=None):
        """``label``, where (the Area's centre in degrees) and the seed: runs side by side stay apart."""
        where = self.area_centre(parameters, context)
        parts = (
            [label]
            + ([where] if where else [])
            + ([self.tr("seed {}").format(seed)] if seed is not None else [])
        )
        return " · ".join(parts)

    def area_centre(self, parameters, context):
        """The Area's centre as '60.1550°N 24.9050°E', or None without an Area."""
        if parameters.get(self.EXTENT) in (None, ""):
            return None
        extent = self.parameterAsExtent(
            parameters, self.EXTENT, context, QgsCoordinateReferenceSystem("EPSG:4326")
        )
        if extent.isNull() or extent.isEmpty():
            return None
        lat, lon = extent.center().y(), extent.center().x()
        return f"{abs(lat):.4f}°{'N' if lat >= 0 else 'S'} {abs(lon):.4f}°{'E' if lon >= 0 else 'W'}"
