"""geodiff:change: a geodiff image + an edited vector layer -> the after image and the styled change mask."""

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .base import OSM_ATTRIBUTION, RUNTIMES, GeodiffAlgorithm, advanced


class ChangeAlgorithm(GeodiffAlgorithm):
    BEFORE = "BEFORE"
    LAYER_HOLDS = "LAYER_HOLDS"
    MARGIN = "MARGIN"
    MASK_OUTPUT = "MASK_OUTPUT"
    CHANGE_OUTPUT = "CHANGE_OUTPUT"
    DEVICE = "DEVICE"
    DEVICES = ["auto", "cpu", "cuda"]
    RUNTIME = "RUNTIME"
    SAME_RUNTIME = "as the before image was made"
    # chosen by name; the first passes no --runtime (geodiff reads BEFORE's tag)
    RUNTIMES = [SAME_RUNTIME, *RUNTIMES]
    # appended only: saved models and scripts keep their index
    HOLDS = ["only the edits (painted over the before image's map)", "the whole edited map"]
    ICON = "synthesize.svg"

    def name(self):
        return "change"

    def displayName(self):  # noqa: N802
        return self.tr("Synthesize a map change")

    def shortHelpString(self):  # noqa: N802
        return (
            self.tr(
                "Shows a place with and without a map edit: takes an image made by 'Synthesize aerial imagery' (the "
                "before image; its semantic map must lie beside it, as geodiff wrote it) and a vector layer with a "
                "class attribute, e.g. buildings or roads you just drew, and writes the after image. The after image "
                "equals the before image pixel for pixel except where the class changed and within the margin "
                "around it, where it is re-synthesized in context with the same model, seed and steps; only the "
                "model windows touching the change are computed.\n"
                "The change mask is 0 where nothing changed and names every change (building -> road, ...); it "
                "opens styled, unchanged pixels transparent.\n"
                "The layer holds only the edits (default: its features are painted over the before image's map; a "
                "background feature removes what was there) or the whole edited map.\n"
                "Runs the geodiff command-line tool, which must be installed separately (see Processing > Options > "
                "Providers > geodiff).\n"
            )
            + OSM_ATTRIBUTION
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(
            QgsProcessingParameterRasterLayer(self.BEFORE, self.tr("Before image (a geodiff output)"))
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.VECTOR,
                self.tr("Edited vector layer with classes"),
                [QgsProcessing.TypeVectorAnyGeometry],
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
            QgsProcessingParameterEnum(
                self.LAYER_HOLDS, self.tr("The layer holds"), options=self.HOLDS, defaultValue=0
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    self.MARGIN,
                    self.tr("Margin in metres around the change that may change too"),
                    QgsProcessingParameterNumber.Double,
                    defaultValue=8.0,
                    minValue=0.0,
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterEnum(
                    self.DEVICE, self.tr("Device"), options=self.DEVICES, defaultValue=0
                )
            )
        )
        runtime = QgsProcessingParameterEnum(
            self.RUNTIME,
            self.tr(
                "Runtime (default: the one that made the before image; onnx needs ONNX Runtime installed)"
            ),
            options=self.RUNTIMES,
            defaultValue=self.SAME_RUNTIME,
        )
        runtime.setUsesStaticStrings(True)
        self.addParameter(advanced(runtime))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("After image")))
        self.addParameter(QgsProcessingParameterRasterDestination(self.CHANGE_OUTPUT, self.tr("Change mask")))
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.MASK_OUTPUT, self.tr("After semantic map"), createByDefault=True
            )
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        before = self.parameterAsRasterLayer(parameters, self.BEFORE, context)
        if before is None or not before.source():
            raise QgsProcessingException(self.invalidRasterError(parameters, self.BEFORE))
        self.notes = []
        args = ["--before", before.source()]
        vector = self._vector_arguments(parameters, context, feedback)  # --vector PATH --class-field F
        if self.parameterAsEnum(parameters, self.LAYER_HOLDS, context) == 0:
            vector[0] = "--edits"
        args += vector
        out = self.output_path(parameters, self.OUTPUT, context)
        change = self.output_path(parameters, self.CHANGE_OUTPUT, context)
        mask = self.output_path(parameters, self.MASK_OUTPUT, context)
        args += ["--out", out, "--change-out", change, "--mask-out", mask]
        args += ["--margin", repr(self.parameterAsDouble(parameters, self.MARGIN, context))]
        args += ["--device", self.DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]]
        runtime = self.parameterAsEnumString(parameters, self.RUNTIME, context) or self.SAME_RUNTIME
        if runtime != self.SAME_RUNTIME:  # only when named: older geodiff installs know no --runtime
            args += ["--runtime", runtime]
        self.run_cli(["change", *args], feedback)
        for path, label in (
            (out, self.tr("After image")),
            (change, self.tr("Change mask")),
            (mask, self.tr("After semantic map")),
        ):
            self.style_on_load(context, path, f"{label} · {before.name()}")
        return {self.OUTPUT: out, self.CHANGE_OUTPUT: change, self.MASK_OUTPUT: mask}
