"""Parameters and checks shared by the geodiff algorithms: area, map source, resolution, GeoTIFF outputs."""

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
)
from qgis.PyQt.QtCore import QCoreApplication

from ..cli import EXECUTABLE_SETTING, find_executable, run_geodiff

OSM_ATTRIBUTION = "Map data (c) OpenStreetMap contributors, ODbL (https://www.openstreetmap.org/copyright)"


class GeodiffAlgorithm(QgsProcessingAlgorithm):
    EXTENT = "EXTENT"
    FILE = "FILE"
    VECTOR = "VECTOR"
    CLASS_FIELD = "CLASS_FIELD"
    RESOLUTION = "RESOLUTION"
    OUTPUT = "OUTPUT"

    def tr(self, text):
        return QCoreApplication.translate(type(self).__name__, text)

    def createInstance(self):  # noqa: N802
        return type(self)()

    def add_source_parameters(self):
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, self.tr("Area (extent and its CRS)")))
        self.addParameter(
            QgsProcessingParameterFile(
                self.FILE,
                self.tr("OpenStreetMap file (empty: download the area from Overpass)"),
                optional=True,
                fileFilter=self.tr("OpenStreetMap files (*.osm *.pbf *.bz2);;All files (*.*)"),
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
        self.addParameter(
            QgsProcessingParameterNumber(
                self.RESOLUTION,
                self.tr("Resolution in metres per pixel (empty: the model's or geodiff's default)"),
                QgsProcessingParameterNumber.Double,
                optional=True,
            )
        )

    def source_arguments(self, parameters, context, feedback):
        """CLI arguments for area, source and resolution; raises QgsProcessingException on bad input."""
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
        # W,S,E,N in the extent's own CRS; geodiff reprojects. Custom CRSs have no authid: pass their WKT.
        bbox = ",".join(
            repr(v) for v in (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
        )
        args = [f"--bbox={bbox}", "--bbox-crs", crs.authid() or crs.toWkt()]

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
            feedback.pushInfo(
                self.tr("No OSM file or vector layer given: geodiff downloads the area from Overpass.")
            )

        if parameters.get(self.RESOLUTION) not in (None, ""):
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

    def run_cli(self, args, feedback):
        from processing.core.ProcessingConfig import ProcessingConfig

        executable = find_executable(ProcessingConfig.getSetting(EXECUTABLE_SETTING))
        run_geodiff(executable, [*args, "--progress", "json", "--overwrite"], feedback)
