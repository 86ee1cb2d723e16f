"""geodiff:synthesize: OpenStreetMap area -> synthetic aerial RGB GeoTIFF (plus the semantic map it used)."""

from qgis.core import (
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from .base import OSM_ATTRIBUTION, GeodiffAlgorithm


class SynthesizeAlgorithm(GeodiffAlgorithm):
    MODEL = "MODEL"
    SEED = "SEED"
    STEPS = "STEPS"
    DEVICE = "DEVICE"
    MASK_OUTPUT = "MASK_OUTPUT"
    DEVICES = ["auto", "cpu", "cuda"]

    def name(self):
        return "synthesize"

    def displayName(self):  # noqa: N802
        return self.tr("Synthesize aerial imagery from OpenStreetMap")

    def shortHelpString(self):  # noqa: N802
        return self.tr(
            "Generates a synthetic, georeferenced aerial image of an area with a map-conditioned diffusion model: "
            "the area's OpenStreetMap features (or a vector layer with a class attribute) are rasterized into a "
            "semantic map, which the model turns into RGB imagery, tile by tile.\n"
            "The image is synthetic: it is not a photograph of the place.\n"
            "Runs the geodiff command-line tool, which must be installed separately (see Processing > Options > "
            "Providers > geodiff). Without a GPU, expect minutes per tile; fewer steps are faster.\n"
            + OSM_ATTRIBUTION
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_source_parameters()
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                self.tr("Model folder (empty: geodiff's default model)"),
                behavior=QgsProcessingParameterFile.Folder,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.SEED,
                self.tr("Random seed (same seed, same image)"),
                QgsProcessingParameterNumber.Integer,
                defaultValue=0,
                minValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.STEPS,
                self.tr("Denoising steps (empty: the model's default)"),
                QgsProcessingParameterNumber.Integer,
                optional=True,
                minValue=1,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), options=self.DEVICES, defaultValue=0)
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Synthetic aerial image"))
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.MASK_OUTPUT, self.tr("Semantic map used"), optional=True, createByDefault=True
            )
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        args = self.source_arguments(parameters, context, feedback)
        out = self.output_path(parameters, self.OUTPUT, context)
        mask = self.output_path(parameters, self.MASK_OUTPUT, context)
        args += ["--out", out]
        if mask:
            args += ["--mask-out", mask]
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if model:
            args += ["--model", model]
        args += ["--seed", str(self.parameterAsInt(parameters, self.SEED, context))]
        if parameters.get(self.STEPS) not in (None, ""):
            args += ["--steps", str(self.parameterAsInt(parameters, self.STEPS, context))]
        args += ["--device", self.DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]]
        self.run_cli(["synth", *args], feedback)
        return {self.OUTPUT: out, self.MASK_OUTPUT: mask or None}
