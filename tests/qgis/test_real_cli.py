"""End to end through processing.run with the real geodiff CLI on samples/tiny_town.osm.

The CLI is $GEODIFF_EXECUTABLE, else .venv/bin/geodiff, else `which geodiff`; synth needs $GEODIFF_TEST_MODEL
(a tiny model folder). Each test skips, saying why, when its command, the sample or the model is missing.
"""

import os
from pathlib import Path

import pytest

pytest.importorskip("qgis.core", reason="needs python3-qgis (run tests/qgis/run.sh with Debian's python)")

from qgis_helpers import check_raster, osm_bounds, real_geodiff_command, set_executable  # noqa: E402

pytestmark = pytest.mark.qgis


@pytest.fixture
def real_cli(qgis_app, request):
    exe = real_geodiff_command(request.param)
    set_executable(exe)
    yield exe
    set_executable(None)


def extent(bbox):
    w, s, e, n = bbox
    return f"{w},{e},{s},{n} [EPSG:4326]"


def class_range(path):
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(str(path), "map")  # kept alive: the provider dies with its layer
    stats = layer.dataProvider().bandStatistics(1)
    return stats.minimumValue, stats.maximumValue


@pytest.mark.parametrize("real_cli", ["rasterize"], indirect=True)
def test_real_rasterize(real_cli, sample_osm, tmp_path):
    import processing

    bbox, out = osm_bounds(sample_osm), tmp_path / "map.tif"
    processing.run("geodiff:rasterize", {"EXTENT": extent(bbox), "FILE": str(sample_osm), "OUTPUT": str(out)})
    layer = check_raster(out, bbox, "EPSG:4326", bands=1)
    assert layer.crs().mapUnits() == 0  # metres (QgsUnitTypes.DistanceMeters): a projected grid
    low, high = class_range(out)
    assert low >= 0 and 1 <= high <= 255, "a town should paint at least one non-background class"


@pytest.mark.parametrize("real_cli", ["synth"], indirect=True)
def test_real_synthesize(real_cli, sample_osm, tmp_path):
    import processing

    model = os.environ.get("GEODIFF_TEST_MODEL")
    if not model or not Path(model).is_dir():
        pytest.skip("set GEODIFF_TEST_MODEL to a tiny model folder to run synth end to end")
    bbox, out, mask = osm_bounds(sample_osm), tmp_path / "area.tif", tmp_path / "area.mask.tif"
    processing.run(
        "geodiff:synthesize",
        {
            "EXTENT": extent(bbox),
            "FILE": str(sample_osm),
            "MODEL_FOLDER": model,
            "SEED": 1,
            "STEPS": 2,
            "DEVICE": 1,
            "OUTPUT": str(out),
            "MASK_OUTPUT": str(mask),
        },
    )
    check_raster(out, bbox, "EPSG:4326", bands=3)
    check_raster(mask, bbox, "EPSG:4326", bands=1)


@pytest.mark.parametrize("real_cli", ["synth"], indirect=True)
def test_real_synthesize_logs_its_cost_once(real_cli, sample_osm, tmp_path):
    import processing
    from qgis.core import QgsProcessingFeedback

    model = tiny_model_or_skip()
    feedback = QgsProcessingFeedback()
    processing.run(
        "geodiff:synthesize",
        {"EXTENT": extent(osm_bounds(sample_osm)), "FILE": str(sample_osm), "MODEL_FOLDER": model, "STEPS": 1,
         "DEVICE": 1, "THREADS": 1, "OUTPUT": str(tmp_path / "a.tif"), "MASK_OUTPUT": None},
        feedback=feedback,
    )  # fmt: skip
    log = feedback.textLog()
    assert len([line for line in log.splitlines() if "windows of the model" in line]) == 1, log
    assert "geodiff QGIS plugin" in log and "--threads 1" in log


def tiny_model_or_skip():
    model = os.environ.get("GEODIFF_TEST_MODEL")
    if not model or not Path(model).is_dir():
        pytest.skip("set GEODIFF_TEST_MODEL to a tiny model folder to run synth end to end")
    return model


@pytest.mark.parametrize("real_cli", ["rasterize"], indirect=True)
def test_web_mercator_extent_gives_the_grid_of_the_same_area_in_lonlat(real_cli, sample_osm, tmp_path):
    """A canvas in EPSG:3857 (the usual CRS over OSM basemaps) only describes the area: same UTM grid."""
    import processing
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject, QgsRectangle

    w, s, e, n = osm_bounds(sample_osm)
    to_merc = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem("EPSG:4326"),
        QgsCoordinateReferenceSystem("EPSG:3857"),
        QgsProject.instance(),
    )
    merc = to_merc.transform(QgsRectangle(w, s, e, n))
    grids = {}
    for name, ext in (
        ("lonlat", extent((w, s, e, n))),
        ("mercator", f"{merc.xMinimum()},{merc.xMaximum()},{merc.yMinimum()},{merc.yMaximum()} [EPSG:3857]"),
    ):
        out = tmp_path / f"{name}.tif"
        processing.run("geodiff:rasterize", {"EXTENT": ext, "FILE": str(sample_osm), "OUTPUT": str(out)})
        from qgis.core import QgsRasterLayer

        layer = QgsRasterLayer(str(out), name)
        grids[name] = (
            layer.crs().authid(),
            layer.width(),
            layer.height(),
            round(layer.rasterUnitsPerPixelX(), 6),
        )
    assert grids["mercator"][0] == grids["lonlat"][0] and grids["lonlat"][0].startswith("EPSG:326")
    assert grids["mercator"][3] == grids["lonlat"][3] == 1.0  # the model's metres, not Mercator's
    assert (
        abs(grids["mercator"][1] - grids["lonlat"][1]) <= 1
        and abs(grids["mercator"][2] - grids["lonlat"][2]) <= 1
    )


@pytest.mark.parametrize("real_cli", ["rasterize"], indirect=True)
def test_semantic_map_opens_with_five_named_classes(real_cli, sample_osm, tmp_path):
    """As the dialog opens it: Processing loads the output itself (not Add Raster Layer), then post-processes it."""
    import processing
    from qgis.core import QgsProcessingFeedback, QgsProject

    out = tmp_path / "map.tif"
    project = QgsProject.instance()
    project.removeAllMapLayers()
    processing.runAndLoadResults(
        "geodiff:rasterize",
        {"EXTENT": extent(osm_bounds(sample_osm)), "FILE": str(sample_osm), "OUTPUT": str(out)},
        feedback=QgsProcessingFeedback(),
    )
    (layer,) = project.mapLayers().values()
    assert layer.source() == str(out) and layer.name().startswith("Semantic map · ")
    renderer = layer.renderer()
    assert renderer.type() == "paletted"
    assert [c.label for c in renderer.classes()] == ["background", "building", "road", "water", "vegetation"]
    project.removeAllMapLayers()


@pytest.mark.parametrize("real_cli", ["synth"], indirect=True)
def test_unset_mask_output_writes_no_mask_and_rgb_opens_unstretched(real_cli, sample_osm, tmp_path):
    import processing
    from qgis.core import QgsContrastEnhancement, QgsRasterLayer

    model = tiny_model_or_skip()
    (tmp_path / "area.mask.tif").write_bytes(b"not geodiff's to replace")
    processing.run(
        "geodiff:synthesize",
        {"EXTENT": extent(osm_bounds(sample_osm)), "FILE": str(sample_osm), "MODEL_FOLDER": model, "STEPS": 2,
         "DEVICE": 1, "OUTPUT": str(tmp_path / "area.tif"), "MASK_OUTPUT": None},
    )  # fmt: skip
    assert (tmp_path / "area.mask.tif").read_bytes() == b"not geodiff's to replace"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["area.mask.tif", "area.qml", "area.tif"]
    layer = QgsRasterLayer(str(tmp_path / "area.tif"), "rgb")
    layer.loadDefaultStyle()
    red = layer.renderer().redContrastEnhancement()
    assert red is None or red.contrastEnhancementAlgorithm() == QgsContrastEnhancement.NoEnhancement


@pytest.mark.parametrize("real_cli", ["synth"], indirect=True)
def test_cancel_leaves_no_file_at_all(real_cli, sample_osm, tmp_path):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    model = tiny_model_or_skip()

    class CancelWhenDenoising(QgsProcessingFeedback):
        def setProgress(self, progress):  # noqa: N802
            super().setProgress(progress)
            if progress > 2:  # well inside the run: geodiff's temporary files exist
                self.cancel()

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(QgsProcessingException, match="canceled"):
        processing.run(
            "geodiff:synthesize",
            {"EXTENT": extent(osm_bounds(sample_osm)), "FILE": str(sample_osm), "MODEL_FOLDER": model,
             "STEPS": 1000, "DEVICE": 1, "OUTPUT": str(out_dir / "area.tif"),
             "MASK_OUTPUT": str(out_dir / "area.mask.tif")},
            feedback=CancelWhenDenoising(),
        )  # fmt: skip
    assert list(out_dir.iterdir()) == []  # not even hidden .partial files


@pytest.mark.parametrize("real_cli", ["augment"], indirect=True)
def test_real_augment_loads_styled_mosaics(real_cli, sample_osm, tmp_path):
    import json

    import processing
    from qgis.core import QgsProcessingFeedback, QgsProject

    model = tiny_model_or_skip()
    project = QgsProject.instance()
    project.removeAllMapLayers()
    feedback = QgsProcessingFeedback()
    results = processing.runAndLoadResults(
        "geodiff:augment",
        {"EXTENT": extent(osm_bounds(sample_osm)), "FILE": str(sample_osm), "MODEL_FOLDER": model,
         "STEPS": 1, "DEVICE": 1, "N_TILES": 2, "FORMAT": 0, "OUTPUT_FOLDER": str(tmp_path / "aug")},
        feedback=feedback,
    )  # fmt: skip
    manifest = json.loads(Path(results["MANIFEST"]).read_text())
    assert manifest["n_samples"] == 2
    assert len(list((tmp_path / "aug" / "images").iterdir())) == 2
    assert "2 tiles x 1 samples: 2 windows of the model" in feedback.textLog()
    layers = {layer.name().split(" · ")[0]: layer for layer in project.mapLayers().values()}
    assert sorted(layers) == ["Image tiles", "Mask tiles"]
    masks = layers["Mask tiles"]
    assert masks.renderer().type() == "paletted"
    assert [c.label for c in masks.renderer().classes()][:5] == [c["name"] for c in manifest["classes"]]
    check_raster(masks.source(), osm_bounds(sample_osm), "EPSG:4326", bands=1)
    assert layers["Image tiles"].bandCount() == 3
    project.removeAllMapLayers()
