"""geodiff:synthesize: OpenStreetMap area -> synthetic aerial RGB GeoTIFF (plus the semantic map it used)."""

import os

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from ..cli import installed_models
from .base import (
    CPU_SECONDS_PER_WINDOW,
    CPU_SECONDS_PER_WINDOW_FAST,
    OSM_ATTRIBUTION,
    RUNTIMES,
    GeodiffAlgorithm,
    advanced,
)


class SamplingParameters:
    """Model, seed, steps and device: the same Advanced parameters in every algorithm that samples."""

    MODEL = "MODEL"
    MODEL_FOLDER = "MODEL_FOLDER"
    SEED = "SEED"
    STEPS = "STEPS"
    DEVICE = "DEVICE"
    # appended only: saved models and scripts keep their index
    DEVICES = ["auto", "cpu", "cuda"] + [f"cuda:{i}" for i in range(8)]
    GUIDANCE = "GUIDANCE"
    THREADS = "THREADS"
    QUALITY = "QUALITY"
    QUALITIES = ["full", "fast"]  # geodiff's --quality values, chosen by name
    RUNTIME = "RUNTIME"
    RUNTIMES = RUNTIMES  # base.RUNTIMES, as a class attribute like the other option lists

    def add_sampling_parameters(self):
        self.models = installed_models(self.executable_or_none())
        model = QgsProcessingParameterEnum(
            self.MODEL,
            self.tr("Model (installed models; see `geodiff models`)"),
            options=self.models,
            defaultValue=self.models[0],
        )
        # chosen by name, not by position: saved models, scripts and qgis_process calls keep meaning the same
        # model when models are installed or removed
        model.setUsesStaticStrings(True)
        self.addParameter(advanced(model))
        quality = QgsProcessingParameterEnum(
            self.QUALITY,
            self.tr("Quality (full: best; fast: the model's distilled sampler, about 8x faster on a CPU)"),
            options=self.QUALITIES,
            defaultValue="full",
        )
        quality.setUsesStaticStrings(True)
        self.addParameter(quality)
        self.addParameter(
            advanced(
                QgsProcessingParameterFile(
                    self.MODEL_FOLDER,
                    self.tr("Model folder (instead of an installed model)"),
                    behavior=QgsProcessingParameterFile.Folder,
                    optional=True,
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    self.SEED,
                    self.tr("Random seed (same seed, same image)"),
                    QgsProcessingParameterNumber.Integer,
                    defaultValue=0,
                    minValue=0,
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    self.STEPS,
                    self.tr("Denoising steps (empty: 20, or the fast sampler's own, e.g. 4)"),
                    QgsProcessingParameterNumber.Integer,
                    optional=True,
                    minValue=1,
                    maxValue=1000,
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    self.GUIDANCE,
                    self.tr(
                        "Guidance scale (1 = off, higher follows the map more closely; empty: the model's)"
                    ),
                    QgsProcessingParameterNumber.Double,
                    optional=True,
                    minValue=1.0,
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterEnum(
                    self.DEVICE,
                    self.tr("Device (cuda:N: the N-th GPU)"),
                    options=self.DEVICES,
                    defaultValue=0,
                )
            )
        )
        runtime = QgsProcessingParameterEnum(
            self.RUNTIME,
            self.tr(
                "Runtime (onnx: ONNX Runtime, about 1.4x faster on a CPU; needs 'Install geodiff' with ONNX Runtime)"
            ),
            options=self.RUNTIMES,
            defaultValue="torch",
        )
        runtime.setUsesStaticStrings(True)
        self.addParameter(advanced(runtime))
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    self.THREADS,
                    self.tr("CPU threads (empty: all cores but one, which QGIS keeps)"),
                    QgsProcessingParameterNumber.Integer,
                    optional=True,
                    minValue=1,
                )
            )
        )

    def sampling_arguments(self, parameters, context):
        folder = self.parameterAsFile(parameters, self.MODEL_FOLDER, context)
        if folder:
            args = ["--model", folder]
        else:
            name = self.parameterAsEnumString(parameters, self.MODEL, context)
            args = ["--model", name] if name else []
        args += ["--quality", self.quality(parameters, context)]
        args += ["--seed", str(self.parameterAsInt(parameters, self.SEED, context))]
        if parameters.get(self.STEPS) not in (None, ""):
            args += ["--steps", str(self.parameterAsInt(parameters, self.STEPS, context))]
        if parameters.get(self.GUIDANCE) not in (None, ""):
            args += ["--guidance-scale", repr(self.parameterAsDouble(parameters, self.GUIDANCE, context))]
        args += ["--device", self.DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]]
        if self.runtime(parameters, context) == "onnx":  # only then: older geodiff installs know no --runtime
            args += ["--runtime", "onnx"]
        if parameters.get(self.THREADS) not in (None, ""):
            threads = self.parameterAsInt(parameters, self.THREADS, context)
        else:
            threads = max(1, (os.cpu_count() or 2) - 1)
        args += ["--threads", str(threads)]
        return args

    def quality(self, parameters, context):
        return self.parameterAsEnumString(parameters, self.QUALITY, context) or "full"

    def runtime(self, parameters, context):
        return self.parameterAsEnumString(parameters, self.RUNTIME, context) or "torch"

    def executable_or_none(self):
        try:
            return self.executable()
        except QgsProcessingException:
            return None


class SynthesizeAlgorithm(SamplingParameters, GeodiffAlgorithm):
    MASK_OUTPUT = "MASK_OUTPUT"
    ICON = "synthesize.svg"

    def name(self):
        return "synthesize"

    def displayName(self):  # noqa: N802
        return self.tr("Synthesize aerial imagery from OpenStreetMap")

    def shortHelpString(self):  # noqa: N802
        return (
            self.tr(
                "Generates a synthetic, georeferenced aerial image of an area with a map-conditioned diffusion model: "
                "the area's OpenStreetMap features (or a vector layer with a class attribute) are rasterized into a "
                "semantic map, which the model turns into RGB imagery in overlapping 256 px windows.\n"
                "The image is synthetic: it is not a photograph of the place. The grid is always metric (the local "
                "UTM zone, whatever CRS the extent is in), at the model's resolution (1 m/px for the default model).\n"
                "Cost: about {} s of CPU time per 256 px window at 20 steps, {} s with Quality = fast (measured "
                "on 2 cores; a GPU is far faster). The log's first line gives the grid size, the number of windows and the estimated time; runs "
                "above the window limit set in Processing > Options > Providers > geodiff are refused.\n"
                "Runs the geodiff command-line tool, which must be installed separately (see Processing > Options > "
                "Providers > geodiff).\n"
            ).format(CPU_SECONDS_PER_WINDOW, CPU_SECONDS_PER_WINDOW_FAST)
            + OSM_ATTRIBUTION
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_source_parameters()
        self.add_sampling_parameters()
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
        # an unset map output is not written: never a file (or a replaced file) the user did not name
        args += ["--mask-out", mask] if mask else ["--no-mask"]
        args += self.sampling_arguments(parameters, context)
        # One process: geodiff's first event is its plan (grid, windows, timed estimate), logged once; a run above
        # the window limit is stopped right there, before anything is written.
        self.run_cli(
            ["synth", *args],
            feedback,
            on_plan=lambda plan: self.check_cost(plan.get("windows", 0), plan.get("seconds_estimate")),
        )
        seed = self.parameterAsInt(parameters, self.SEED, context)
        for path, label in ((out, self.tr("Synthetic aerial image")), (mask, self.tr("Semantic map"))):
            self.style_on_load(context, path, self.layer_name(label, parameters, context, seed))
        return {self.OUTPUT: out, self.MASK_OUTPUT: mask or None}
