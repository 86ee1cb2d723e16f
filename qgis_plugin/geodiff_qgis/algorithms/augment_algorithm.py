"""geodiff:augment: paired (synthetic image, semantic mask) training tiles over an extent or polygons."""

import json
import math
from collections import Counter
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingUtils,
    QgsProject,
)

from ..styles import class_map_qml, rgb_qml, sidecar
from .base import (
    CPU_ONNX_SPEEDUP,
    CPU_SECONDS_PER_WINDOW,
    CPU_SECONDS_PER_WINDOW_FAST,
    OSM_ATTRIBUTION,
    GeodiffAlgorithm,
)
from .synthesize_algorithm import SamplingParameters

TILE_PX = 256  # the model's window
DEFAULT_STEPS = {"full": 20, "fast": 4}
SECONDS_PER_WINDOW = {"full": CPU_SECONDS_PER_WINDOW, "fast": CPU_SECONDS_PER_WINDOW_FAST}


class AugmentAlgorithm(SamplingParameters, GeodiffAlgorithm):
    AREAS = "AREAS"
    N_TILES = "N_TILES"
    SEEDS_PER_TILE = "SEEDS_PER_TILE"
    MIN_LABELED = "MIN_LABELED"
    CHANGES = "CHANGES"
    FORMAT = "FORMAT"
    FORMATS = ["tif", "png"]
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    MANIFEST = "MANIFEST"
    IMAGES = "IMAGES"
    MASKS = "MASKS"
    ICON = "augment.svg"

    def name(self):
        return "augment"

    def displayName(self):  # noqa: N802
        return self.tr("Generate paired training tiles")

    def shortHelpString(self):  # noqa: N802
        return (
            self.tr(
                "Generates a segmentation training set of synthetic aerial images paired with the semantic masks "
                "they were made from, as `geodiff augment` writes it: images/, masks/ (class ids 0-4, 255 = ignore) "
                "and manifest.json / manifest.csv, loadable as a folder dataset (torchgeo, "
                "segmentation_models_pytorch).\n"
                "Tiles are drawn at random inside the Area (Number of tiles), or taken from the features of the "
                "Polygon layer (one tile per feature, its bounds; then no Area is needed), each with Samples per "
                "tile seeds. Choose a Dataset folder: a temporary one would be deleted when QGIS exits. When the run "
                "ends, a mosaic (VRT) of the image tiles and one of the mask tiles are loaded.\n"
                "Cost: about {} s of CPU time per 256 px tile at 20 steps, {} s with Quality = fast (measured on 2 "
                "cores). The log's first "
                "line gives the number of model windows and the estimated time; runs above the window limit set in "
                "Processing > Options > Providers > geodiff are refused.\n"
            ).format(CPU_SECONDS_PER_WINDOW, CPU_SECONDS_PER_WINDOW_FAST)
            + OSM_ATTRIBUTION
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        # tiles are sampled at the model's resolution: no Resolution
        self.add_source_parameters(
            resolution=False,
            area_label="Area for random tiles (extent and its CRS; not needed with a Polygon layer)",
            area_optional=True,
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.AREAS,
                self.tr("Polygon layer: one tile per feature (instead of random tiles in the Area)"),
                [QgsProcessing.TypeVectorPolygon],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.N_TILES, self.tr("Number of tiles (random, inside the Area)"),
                QgsProcessingParameterNumber.Integer, defaultValue=16, minValue=1,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterNumber(
                self.SEEDS_PER_TILE, self.tr("Samples per tile (different seeds)"),
                QgsProcessingParameterNumber.Integer, defaultValue=1, minValue=1,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_LABELED, self.tr("Minimum mapped fraction of a random tile (0-1)"),
                QgsProcessingParameterNumber.Double, defaultValue=0.0, minValue=0.0, maxValue=1.0,
            )
        )  # fmt: skip
        self.addParameter(
            QgsProcessingParameterEnum(
                self.FORMAT, self.tr("Tile format"), options=self.FORMATS, defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.CHANGES,
                self.tr(
                    "Change-detection sets: also a random map edit per tile (remove/add a building, add a road "
                    "or a pond) with its after image, after mask and change mask"
                ),
                defaultValue=False,
            )
        )
        self.add_sampling_parameters()
        self.addParameter(
            QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Dataset folder"))
        )
        self.addOutput(QgsProcessingOutputFile(self.MANIFEST, self.tr("Manifest (manifest.json)")))
        self.addOutput(QgsProcessingOutputRasterLayer(self.IMAGES, self.tr("Image tiles (mosaic)")))
        self.addOutput(QgsProcessingOutputRasterLayer(self.MASKS, self.tr("Mask tiles (mosaic)")))

    def _polygons(self, parameters, context):
        """The polygon layer's features in lon/lat (geodiff uses their bounds)."""
        source = self.parameterAsSource(parameters, self.AREAS, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.AREAS))
        to_lonlat = QgsCoordinateTransform(
            source.sourceCrs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance()
        )
        polygons = []
        for feature in source.getFeatures():
            geom = feature.geometry()
            if geom.isEmpty():
                continue
            geom.transform(to_lonlat)
            polygons.append(geom)
        if not polygons:
            raise QgsProcessingException(self.tr("The polygon layer has no features with a geometry."))
        return polygons

    @staticmethod
    def _tile_windows(geom):
        """Model windows for one polygon's bounds at 1 m/px (the default model's), at least one."""
        box = geom.boundingBox()
        metres_per_degree = 111_320.0
        width = box.width() * metres_per_degree * math.cos(math.radians(box.center().y()))
        height = box.height() * metres_per_degree
        return max(1, math.ceil(width / TILE_PX)) * max(1, math.ceil(height / TILE_PX))

    def _windows_file(self, polygons, folder):
        features = [
            {"type": "Feature", "properties": {}, "geometry": json.loads(g.asJson())} for g in polygons
        ]
        path = Path(folder).parent / f".{Path(folder).name}.windows.geojson"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        return path

    def _folder(self, parameters, context):
        folder = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        temporary = Path(QgsProcessingUtils.tempFolder()).resolve()
        if not folder or temporary in Path(folder).resolve().parents:
            raise QgsProcessingException(
                self.tr("Choose a Dataset folder: tiles in a temporary folder are deleted when QGIS exits.")
            )
        return folder

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        folder = self._folder(parameters, context)
        has_polygons = parameters.get(self.AREAS) not in (None, "")
        if not has_polygons and parameters.get(self.EXTENT) in (None, ""):
            raise QgsProcessingException(
                self.tr("Give an Area for random tiles, or a Polygon layer (one tile per feature).")
            )
        # augment samples at the model's resolution: no Resolution argument
        source = self.map_arguments(parameters, context, feedback, resolution=False)
        seeds = self.parameterAsInt(parameters, self.SEEDS_PER_TILE, context)
        windows = None
        if has_polygons:
            polygons = self._polygons(parameters, context)
            tiles = len(polygons)
            cost = sum(self._tile_windows(g) for g in polygons) * seeds
        else:
            bbox, crs = self.area_arguments(parameters, context)
            tiles = self.parameterAsInt(parameters, self.N_TILES, context)
            cost = tiles * seeds
        args = [*source, "--seeds-per-window", str(seeds)]
        args += ["--format", self.FORMATS[self.parameterAsEnum(parameters, self.FORMAT, context)]]
        args += self.sampling_arguments(parameters, context)
        args += ["--out", folder]
        if self.parameterAsBool(parameters, self.CHANGES, context):
            args.append("--changes")

        steps = self.parameterAsInt(parameters, self.STEPS, context) if parameters.get(self.STEPS) else None
        quality = self.quality(parameters, context)
        default = DEFAULT_STEPS[quality]
        seconds = cost * SECONDS_PER_WINDOW[quality] * (steps or default) / default
        if self.runtime(parameters, context) == "onnx":
            seconds /= CPU_ONNX_SPEEDUP[quality]
        feedback.pushInfo(
            self.tr(
                "{} tiles x {} samples: {} windows of the model ({} quality), estimated {} on CPU (a GPU is far "
                "faster)"
            ).format(
                tiles,
                seeds,
                cost,
                quality,
                f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min",
            )
        )
        self.check_cost(cost, seconds)

        if has_polygons:
            windows = self._windows_file(polygons, folder)
            args = ["--windows", str(windows), *args]
        else:
            min_labeled = self.parameterAsDouble(parameters, self.MIN_LABELED, context)
            args = ["--area", bbox, "--bbox-crs", crs, "--n-windows", str(tiles), "--min-labeled",
                    repr(min_labeled), *args]  # fmt: skip
        try:
            # a folder named in the dialog may be replaced only if geodiff wrote it (geodiff checks its manifest)
            self.run_cli(["augment", *args], feedback)
        finally:
            if windows is not None and windows.exists():
                windows.unlink()
        manifest = Path(folder) / "manifest.json"
        results = {
            self.OUTPUT_FOLDER: folder,
            self.MANIFEST: str(manifest),
            self.IMAGES: None,
            self.MASKS: None,
        }
        results.update(self._mosaics(manifest, parameters, context, feedback))
        return results

    def _mosaics(self, manifest_path, parameters, context, feedback):
        """VRT mosaics of the image and of the mask tiles beside the dataset, styled, loaded when the run ends."""
        from osgeo import gdal

        manifest = json.loads(manifest_path.read_text())
        samples = [s for s in manifest.get("samples", []) if str(s.get("image", "")).endswith(".tif")]
        if not samples:
            if manifest.get("samples"):
                feedback.pushInfo(self.tr("PNG tiles carry no georeference: no mosaic is loaded."))
            return {}
        crs_counts = Counter(s.get("crs") for s in samples)
        crs, _ = crs_counts.most_common(1)[0]
        if len(crs_counts) > 1:
            feedback.pushInfo(
                self.tr("The tiles lie in {} CRSs: the mosaics show the {} tiles in {}.").format(
                    len(crs_counts), crs_counts[crs], crs
                )
            )
        samples = [s for s in samples if s.get("crs") == crs]
        root = manifest_path.parent
        seed = self.parameterAsInt(parameters, self.SEED, context)
        out = {}
        for key, field, label, qml in (
            (self.IMAGES, "image", self.tr("Image tiles"), rgb_qml()),
            (self.MASKS, "mask", self.tr("Mask tiles"), class_map_qml(manifest.get("classes", []))),
        ):
            vrt = root / f"{field}s_mosaic.vrt"
            ds = gdal.BuildVRT(str(vrt), [str(root / s[field]) for s in samples])
            if ds is None:
                feedback.reportError(self.tr("Could not build the mosaic {}").format(vrt))
                continue
            ds = None
            sidecar(vrt).write_text(qml)  # also what Add Raster Layer applies later
            name = f"{label} · {Path(root).name} · " + self.tr("seed {}").format(seed)
            if context.project() is not None:  # loaded by the dialog and runAndLoadResults, as outputs are
                context.addLayerToLoadOnCompletion(
                    str(vrt), QgsProcessingContext.LayerDetails(name, context.project(), key)
                )
                self.style_on_load(context, str(vrt), name)
            out[key] = str(vrt)
        return out
