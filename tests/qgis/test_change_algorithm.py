"""geodiff:change ("Synthesize a map change") through processing, against the fake CLI and the real one."""

import json
import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("qgis.core", reason="needs python3-qgis (run tests/qgis/run.sh with Debian's python)")

from qgis.core import QgsFeature, QgsGeometry, QgsProcessingFeedback, QgsVectorLayer  # noqa: E402
from qgis_helpers import check_raster, osm_bounds, real_geodiff_command, set_executable  # noqa: E402

pytestmark = pytest.mark.qgis

EXTENT_4326 = (24.90, 60.15, 24.91, 60.16)


def drawn_layer(bbox, cls="building"):
    """A memory layer with one feature 'just drawn' in the middle of ``bbox``, with a class attribute."""
    w, s, e, n = bbox
    x0, y0 = w + 0.45 * (e - w), s + 0.45 * (n - s)
    x1, y1 = w + 0.55 * (e - w), s + 0.52 * (n - s)
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=class:string", "drawn", "memory")
    feature = QgsFeature(layer.fields())
    feature.setAttribute("class", cls)
    feature.setGeometry(
        QgsGeometry.fromWkt(f"POLYGON(({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))")
    )
    layer.dataProvider().addFeatures([feature])
    return layer


def fake_before(path):
    from osgeo import gdal, osr

    gdal.UseExceptions()
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32635)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 16, 16, 3, gdal.GDT_Byte)
    ds.SetGeoTransform((382000, 1, 0, 6672000, 0, -1))
    ds.SetProjection(srs.ExportToWkt())
    ds = None
    return path


def test_change_passes_the_edits_and_loads_styled_outputs(fake_geodiff, tmp_path):
    import processing
    from qgis.core import QgsProject

    before = fake_before(tmp_path / "before.tif")
    layer = drawn_layer(EXTENT_4326)
    params = {"BEFORE": str(before), "VECTOR": layer, "CLASS_FIELD": "class", "MARGIN": 4,
              "OUTPUT": str(tmp_path / "after.tif"), "CHANGE_OUTPUT": str(tmp_path / "change.tif"),
              "MASK_OUTPUT": str(tmp_path / "after.mask.tif")}  # fmt: skip
    project = QgsProject.instance()
    project.removeAllMapLayers()
    processing.runAndLoadResults("geodiff:change", params, feedback=QgsProcessingFeedback())
    args = json.loads(fake_geodiff.args_file.read_text())
    assert args[0] == "change" and args[args.index("--before") + 1] == str(before)
    edits = args[args.index("--edits") + 1]
    assert edits.endswith(".gpkg") and args[args.index("--class-field") + 1] == "class"
    assert args[args.index("--change-out") + 1] == str(tmp_path / "change.tif")
    assert args[args.index("--margin") + 1] == "4.0" and "--overwrite" in args
    assert "--runtime" not in args  # default: geodiff redoes BEFORE on the runtime its tag names
    layers = {lyr.name(): lyr for lyr in project.mapLayers().values()}
    change = layers["Change mask · before"]
    assert change.renderer().type() == "paletted"
    assert [c.label for c in change.renderer().classes()] == ["unchanged", "background -> building"]
    assert "After image · before" in layers and "After semantic map · before" in layers
    # the whole edited map instead: --vector
    params["LAYER_HOLDS"] = 1
    processing.run("geodiff:change", params, feedback=QgsProcessingFeedback())
    args = json.loads(fake_geodiff.args_file.read_text())
    assert "--vector" in args and "--edits" not in args
    processing.run("geodiff:change", {**params, "RUNTIME": "onnx"}, feedback=QgsProcessingFeedback())
    args = json.loads(fake_geodiff.args_file.read_text())
    assert args[args.index("--runtime") + 1] == "onnx"


def test_real_change_of_a_real_synthesis(qgis_app, sample_osm, tmp_path):
    """The real CLI: synth a before image of the tiny town, draw a building, run the algorithm."""
    import processing

    exe = real_geodiff_command("change")
    model = os.environ.get("GEODIFF_TEST_MODEL")
    if not model or not Path(model).is_dir():
        pytest.skip("set GEODIFF_TEST_MODEL to a tiny model folder to run change end to end")
    bbox = osm_bounds(sample_osm)
    before = tmp_path / "before.tif"
    subprocess.run(
        [str(exe), "synth", "--bbox", ",".join(map(str, bbox)), "--osm", str(sample_osm), "--model", model,
         "--steps", "2", "--device", "cpu", "--out", str(before), "--progress", "none"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    set_executable(exe)
    try:
        out, change = tmp_path / "after.tif", tmp_path / "after.change.tif"
        processing.run("geodiff:change", {
            "BEFORE": str(before), "VECTOR": drawn_layer(bbox), "DEVICE": 1,
            "OUTPUT": str(out), "CHANGE_OUTPUT": str(change), "MASK_OUTPUT": str(tmp_path / "after.mask.tif")})  # fmt: skip
    finally:
        set_executable(None)
    check_raster(out, bbox, "EPSG:4326", bands=3)
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(str(change), "change")
    assert layer.dataProvider().bandStatistics(1).maximumValue > 0  # the drawn building changed some pixels
    assert change.with_suffix(".qml").is_file()


def test_augment_passes_changes(fake_geodiff, tmp_path):
    import processing

    params = {
        "EXTENT": "24.90,24.91,60.15,60.16 [EPSG:4326]",
        "N_TILES": 2,
        "OUTPUT_FOLDER": str(tmp_path / "aug"),
    }
    processing.run("geodiff:augment", params, feedback=QgsProcessingFeedback())
    assert "--changes" not in json.loads(fake_geodiff.args_file.read_text())
    processing.run("geodiff:augment", {**params, "CHANGES": True, "OUTPUT_FOLDER": str(tmp_path / "aug2")},
                   feedback=QgsProcessingFeedback())  # fmt: skip
    assert "--changes" in json.loads(fake_geodiff.args_file.read_text())
