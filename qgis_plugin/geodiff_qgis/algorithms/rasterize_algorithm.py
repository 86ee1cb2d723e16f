"""geodiff:rasterize: OpenStreetMap (or a classed vector layer) -> semantic class map GeoTIFF."""

from qgis.core import QgsProcessingParameterRasterDestination

from .base import OSM_ATTRIBUTION, GeodiffAlgorithm


class RasterizeAlgorithm(GeodiffAlgorithm):
    def name(self):
        return "rasterize"

    def displayName(self):  # noqa: N802
        return self.tr("Rasterize OpenStreetMap to semantic map")

    def shortHelpString(self):  # noqa: N802
        return self.tr(
            "Paints OpenStreetMap features (or a vector layer with a class attribute) of an area into a class "
            "raster: 0 background, 1 building, 2 road, 3 water, 4 vegetation.\n"
            "Runs the geodiff command-line tool, which must be installed separately (see Processing > Options > "
            "Providers > geodiff).\n" + OSM_ATTRIBUTION
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_source_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Semantic map")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        args = self.source_arguments(parameters, context, feedback)
        out = self.output_path(parameters, self.OUTPUT, context)
        self.run_cli(["rasterize", *args, "--out", out], feedback)
        return {self.OUTPUT: out}
