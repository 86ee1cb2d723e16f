"""geodiff:rasterize: OpenStreetMap (or a classed vector layer) -> semantic class map GeoTIFF."""

from qgis.core import QgsProcessingParameterBoolean, QgsProcessingParameterRasterDestination

from .base import OSM_ATTRIBUTION, GeodiffAlgorithm


class RasterizeAlgorithm(GeodiffAlgorithm):
    ALLOW_EMPTY = "ALLOW_EMPTY"
    ICON = "rasterize.svg"

    def name(self):
        return "rasterize"

    def displayName(self):  # noqa: N802
        return self.tr("Rasterize OpenStreetMap to semantic map")

    def shortHelpString(self):  # noqa: N802
        return (
            self.tr(
                "Paints OpenStreetMap features (or a vector layer with a class attribute) of an area into a class "
                "raster: 0 background, 1 building, 2 road, 3 water, 4 vegetation. The layer opens with the five "
                "classes named and coloured (a .qml style beside the GeoTIFF).\n"
                "The grid is metric: the local UTM zone whatever CRS the extent is in (or the Output CRS), at 1 m/px "
                "(the default model's resolution) unless Resolution says otherwise.\n"
                "Runs the geodiff command-line tool, which must be installed separately (see Processing > Options > "
                "Providers > geodiff).\n"
            )
            + OSM_ATTRIBUTION
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_source_parameters()
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.ALLOW_EMPTY,
                self.tr("Allow an all-background map (an area without mapped features)"),
                defaultValue=False,
            )
        )
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Semantic map")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        args = self.source_arguments(parameters, context, feedback)
        out = self.output_path(parameters, self.OUTPUT, context)
        if self.parameterAsBool(parameters, self.ALLOW_EMPTY, context):
            args.append("--allow-empty")
        self.run_cli(["rasterize", *args, "--out", out], feedback)
        self.style_on_load(context, out, self.layer_name(self.tr("Semantic map"), parameters, context))
        return {self.OUTPUT: out}
