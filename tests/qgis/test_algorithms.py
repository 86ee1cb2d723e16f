"""geodiff:rasterize and geodiff:synthesize through processing.run, against the fake CLI (fake_geodiff.py)."""

import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("qgis.core", reason="needs python3-qgis (run tests/qgis/run.sh with Debian's python)")

from qgis.core import (  # noqa: E402
    QgsFeature,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsVectorLayer,
)
from qgis_helpers import check_raster, set_executable  # noqa: E402

pytestmark = pytest.mark.qgis

EXTENT_4326 = (24.90, 60.15, 24.91, 60.16)  # W, S, E, N
EXTENT_3857 = (2771000.0, 8437000.0, 2772000.0, 8438000.0)


def extent_param(bbox, crs):
    w, s, e, n = bbox
    return f"{w},{e},{s},{n} [{crs}]"  # QGIS order: xmin,xmax,ymin,ymax


def run(alg_id, params, feedback=None):
    import processing

    feedback = feedback or QgsProcessingFeedback()
    return processing.run(alg_id, params, feedback=feedback), feedback


def run_error(alg_id, params, feedback=None):
    """Run expecting failure; returns the exception text plus the log (processing.run may wrap the message)."""
    import processing

    feedback = feedback or QgsProcessingFeedback()
    with pytest.raises(QgsProcessingException) as info:
        processing.run(alg_id, params, feedback=feedback)
    return f"{info.value}\n{feedback.textLog()}"


def cli_args(fake):
    return json.loads(fake.args_file.read_text())


def arg_value(args, name):
    for i, a in enumerate(args):
        if a == name:
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def classes_layer():
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=kind:string", "classes", "memory")
    feature = QgsFeature(layer.fields())
    feature.setAttribute("kind", "building")
    feature.setGeometry(
        QgsGeometry.fromWkt("POLYGON((24.901 60.151, 24.902 60.151, 24.902 60.152, 24.901 60.151))")
    )
    layer.dataProvider().addFeatures([feature])
    return layer


def test_provider_lists_the_algorithms(qgis_app):
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition

    provider = QgsApplication.processingRegistry().providerById("geodiff")
    assert provider is not None and provider.isActive()
    assert {a.id() for a in provider.algorithms()} == {
        "geodiff:rasterize",
        "geodiff:synthesize",
        "geodiff:augment",
    }
    for alg in provider.algorithms():
        assert not alg.icon().isNull() and alg.svgIconPath().endswith(".svg")
        assert alg.helpUrl().startswith("file:")
    synth = QgsApplication.processingRegistry().algorithmById("geodiff:synthesize")
    names = {p.name() for p in synth.parameterDefinitions()}
    assert {
        "EXTENT",
        "FILE",
        "VECTOR",
        "CLASS_FIELD",
        "RESOLUTION",
        "MODEL",
        "MODEL_FOLDER",
        "SEED",
        "STEPS",
        "DEVICE",
        "OUTPUT_CRS",
        "OUTPUT",
        "MASK_OUTPUT",
    } <= names
    flagged = {
        p.name()
        for p in synth.parameterDefinitions()
        if p.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    }
    assert {"SEED", "STEPS", "DEVICE", "MODEL", "MODEL_FOLDER", "RESOLUTION", "OUTPUT_CRS"} <= flagged
    help_text = synth.shortHelpString()
    assert "s of CPU time per 256 px window" in help_text and "minutes per tile" not in help_text
    assert (
        "1 m/px" in QgsApplication.processingRegistry().algorithmById("geodiff:rasterize").shortHelpString()
    )
    assert "*.osm.gz" in synth.parameterDefinition("FILE").fileFilter()


class RecordingFeedback(QgsProcessingFeedback):
    """Records progress texts: the dialog logs each one, so each must come once per stage."""

    def __init__(self):
        super().__init__()
        self.texts = []

    def setProgressText(self, text):  # noqa: N802
        self.texts.append(text)
        super().setProgressText(text)


def test_rasterize_streams_progress_and_writes_raster(fake_geodiff, tmp_path):
    out = tmp_path / "map.tif"
    progress = []
    feedback = RecordingFeedback()
    feedback.progressChanged.connect(progress.append)
    results, feedback = run(
        "geodiff:rasterize",
        {"EXTENT": extent_param(EXTENT_3857, "EPSG:3857"), "RESOLUTION": 2.5, "OUTPUT": str(out)},
        feedback,
    )
    assert results["OUTPUT"] == str(out)
    args = cli_args(fake_geodiff)
    assert args[0] == "rasterize"
    assert [float(v) for v in arg_value(args, "--bbox").split(",")] == list(EXTENT_3857)
    assert arg_value(args, "--bbox-crs") == "EPSG:3857"
    assert arg_value(args, "--resolution") == "2.5"
    assert arg_value(args, "--progress") == "json" and "--overwrite" in args
    assert "--osm" not in args and "--vector" not in args
    assert 80 in [round(p) for p in progress] and progress[-1] == 100
    log = feedback.textLog()
    assert "some plain output on stdout" in log
    # one line per stage, once: not also as a message, and without "(about 0 s left)"
    assert feedback.texts.count("step 1/4") == 1 and "step 2/4" not in feedback.texts
    assert "step 1/4" not in log and "s left" not in log + "".join(feedback.texts)
    check_raster(out, EXTENT_3857, "EPSG:3857", bands=1)


def test_synthesize_passes_options_and_reports_device(fake_geodiff, tmp_path):
    out, mask, model = tmp_path / "area.tif", tmp_path / "area.mask.tif", tmp_path / "model"
    model.mkdir()
    osm = tmp_path / "town.osm"
    osm.write_text("<osm/>")
    results, feedback = run(
        "geodiff:synthesize",
        {
            "EXTENT": extent_param(EXTENT_4326, "EPSG:4326"),
            "FILE": str(osm),
            "MODEL_FOLDER": str(model),
            "SEED": 7,
            "STEPS": 3,
            "DEVICE": 1,
            "OUTPUT": str(out),
            "MASK_OUTPUT": str(mask),
        },
    )
    assert results["OUTPUT"] == str(out) and results["MASK_OUTPUT"] == str(mask)
    args = cli_args(fake_geodiff)
    assert args[0] == "synth"
    assert arg_value(args, "--osm") == str(osm) and arg_value(args, "--model") == str(model)
    assert (arg_value(args, "--seed"), arg_value(args, "--steps"), arg_value(args, "--device")) == (
        "7",
        "3",
        "cpu",
    )
    assert arg_value(args, "--mask-out") == str(mask)
    assert "--resolution" not in args  # empty resolution: the model's own
    assert "device: cpu" in feedback.textLog()
    check_raster(out, EXTENT_4326, "EPSG:4326", bands=3)
    check_raster(mask, EXTENT_4326, "EPSG:4326", bands=1)


def test_synthesize_defaults_with_temporary_outputs(fake_geodiff):
    results, _ = run(
        "geodiff:synthesize",
        {
            "EXTENT": extent_param(EXTENT_4326, "EPSG:4326"),
            "OUTPUT": "TEMPORARY_OUTPUT",
            "MASK_OUTPUT": "TEMPORARY_OUTPUT",
        },
    )
    args = cli_args(fake_geodiff)
    assert (arg_value(args, "--seed"), arg_value(args, "--device")) == ("0", "auto")
    assert "--steps" not in args and arg_value(args, "--model") == "geodiff-default"
    for key in ("OUTPUT", "MASK_OUTPUT"):
        assert results[key].endswith(".tif")  # the provider's only raster format
        check_raster(results[key], EXTENT_4326, "EPSG:4326")


def test_vector_layer_is_exported_to_geopackage(fake_geodiff, tmp_path):
    run(
        "geodiff:rasterize",
        {
            "EXTENT": extent_param(EXTENT_4326, "EPSG:4326"),
            "VECTOR": classes_layer(),
            "CLASS_FIELD": "kind",
            "OUTPUT": str(tmp_path / "map.tif"),
        },
    )
    args = cli_args(fake_geodiff)
    vector = arg_value(args, "--vector")
    assert vector.endswith(".gpkg") and "|" not in vector
    assert arg_value(args, "--class-field") == "kind"
    exported = QgsVectorLayer(vector, "exported", "ogr")
    assert exported.isValid() and exported.featureCount() == 1


@pytest.mark.parametrize(
    "params, message",
    [
        ({"EXTENT": "24.9,24.9,60.1,60.1 [EPSG:4326]"}, "area is empty"),
        ({"EXTENT": "24.9,24.91,60.15,60.16"}, "has no CRS"),  # no project CRS to fall back on here
        ({"RESOLUTION": 0}, "greater than 0"),
        ({"RESOLUTION": -2}, "greater than 0"),
        ({"FILE": "BOTH"}, "not both"),
        ({"FILE": "/nonexistent/town.osm"}, "not found"),
        ({"VECTOR": "LAYER", "CLASS_FIELD": "class"}, "no attribute 'class'"),
        ({"OUTPUT": "OUT.png"}, "GeoTIFF"),
    ],
    ids=[
        "empty-extent",
        "extent-without-crs",
        "zero-resolution",
        "negative-resolution",
        "osm-and-vector",
        "missing-osm",
        "missing-class-field",
        "not-geotiff",
    ],
)
def test_bad_parameters_fail_before_running_geodiff(fake_geodiff, tmp_path, params, message):
    osm = tmp_path / "town.osm"
    osm.write_text("<osm/>")
    full = {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "OUTPUT": str(tmp_path / "map.tif"), **params}
    if full.get("FILE") == "BOTH":
        full.update(FILE=str(osm), VECTOR=classes_layer())
    if full.get("VECTOR") == "LAYER":
        full["VECTOR"] = classes_layer()
    if full["OUTPUT"] == "OUT.png":
        full["OUTPUT"] = str(tmp_path / "map.png")
    assert message in run_error("geodiff:rasterize", full)
    assert not fake_geodiff.args_file.exists(), "geodiff must not run with bad parameters"


def test_cli_error_message_is_raised(fake_geodiff, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_GEODIFF_MODE", "error")
    text = run_error(
        "geodiff:rasterize",
        {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "OUTPUT": str(tmp_path / "map.tif")},
    )
    assert "exit code 2" in text and "the bbox lies outside the OSM file's bounds" in text


def test_crash_without_error_line_reports_last_output(fake_geodiff, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_GEODIFF_MODE", "crash")
    text = run_error(
        "geodiff:rasterize",
        {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "OUTPUT": str(tmp_path / "map.tif")},
    )
    assert "exit code 1" in text and "RuntimeError: something broke" in text


class CancelOnFirstProgress(QgsProcessingFeedback):
    def setProgress(self, progress):  # noqa: N802
        super().setProgress(progress)
        if progress > 0:
            self.cancel()


def assert_gone(pid, within_s=10):
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"geodiff process {pid} still running after cancel")


def test_cancel_terminates_geodiff(fake_geodiff, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_GEODIFF_MODE", "sleep")
    start = time.monotonic()
    text = run_error(
        "geodiff:synthesize",
        {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "OUTPUT": str(tmp_path / "a.tif")},
        CancelOnFirstProgress(),
    )
    assert "canceled" in text
    assert time.monotonic() - start < 30  # the fake sleeps 120 s
    assert_gone(int(fake_geodiff.pid_file.read_text()))
    assert not (tmp_path / "a.tif").exists()


def test_cancel_kills_geodiff_that_ignores_terminate(fake_geodiff, monkeypatch):
    from geodiff_qgis import cli

    monkeypatch.setenv("FAKE_GEODIFF_MODE", "stubborn")
    monkeypatch.setattr(cli, "TERMINATE_GRACE_S", 0.5)
    with pytest.raises(QgsProcessingException, match="canceled"):
        cli.run_geodiff(str(fake_geodiff.exe), ["synth", "--bbox", "0,0,1,1"], CancelOnFirstProgress())
    assert_gone(int(fake_geodiff.pid_file.read_text()))


def test_missing_executable_says_how_to_install(fake_geodiff, monkeypatch, tmp_path):
    set_executable(None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no geodiff on PATH
    monkeypatch.setenv("HOME", str(tmp_path))  # and no venv in the usual places
    text = run_error(
        "geodiff:rasterize",
        {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "OUTPUT": str(tmp_path / "map.tif")},
    )
    assert (
        "not found" in text and "pip install" in text and "Processing > Options > Providers > geodiff" in text
    )


def test_executable_from_environment_and_bad_setting(fake_geodiff, monkeypatch, tmp_path):
    from geodiff_qgis.cli import find_executable

    set_executable(None)
    monkeypatch.setenv("GEODIFF_EXECUTABLE", str(fake_geodiff.exe))
    run(
        "geodiff:rasterize",
        {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "OUTPUT": str(tmp_path / "m.tif")},
    )
    assert fake_geodiff.args_file.exists()
    with pytest.raises(QgsProcessingException, match="not an executable file"):
        find_executable(str(tmp_path / "nope" / "geodiff"))


def test_cost_is_logged_first_and_large_runs_are_refused(fake_geodiff, monkeypatch, tmp_path):
    from geodiff_qgis.cli import MAX_WINDOWS_SETTING
    from processing.core.ProcessingConfig import ProcessingConfig

    params = {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "OUTPUT": str(tmp_path / "a.tif")}
    _, feedback = run("geodiff:synthesize", params)
    first = feedback.textLog().splitlines()[0]
    assert "157 x 159 px" in first and "4 windows" in first and "estimated 20 s" in first
    monkeypatch.setenv("FAKE_GEODIFF_WINDOWS", "5000")
    (tmp_path / "a.tif").unlink()
    fake_geodiff.args_file.unlink()
    ProcessingConfig.setSettingValue(MAX_WINDOWS_SETTING, 1000)
    try:
        text = run_error("geodiff:synthesize", params)
    finally:
        ProcessingConfig.setSettingValue(MAX_WINDOWS_SETTING, 2000)
    assert "5000 windows" in text and "Providers > geodiff" in text
    assert not fake_geodiff.args_file.exists() and not (tmp_path / "a.tif").exists()  # only the dry run ran


def test_unset_mask_output_writes_no_mask(fake_geodiff, tmp_path):
    results, _ = run(
        "geodiff:synthesize",
        {
            "EXTENT": extent_param(EXTENT_4326, "EPSG:4326"),
            "OUTPUT": str(tmp_path / "a.tif"),
            "MASK_OUTPUT": None,
        },
    )
    args = cli_args(fake_geodiff)
    assert "--no-mask" in args and "--mask-out" not in args
    assert results["MASK_OUTPUT"] is None
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tif") == ["a.tif"]


@pytest.mark.parametrize(("crs", "message"), [("EPSG:3857", "Web Mercator"), ("EPSG:2227", "not in metres")])
def test_output_crs_must_be_metric(fake_geodiff, tmp_path, crs, message):
    params = {
        "EXTENT": extent_param(EXTENT_4326, "EPSG:4326"),
        "OUTPUT_CRS": crs,
        "OUTPUT": str(tmp_path / "m.tif"),
    }
    assert message in run_error("geodiff:rasterize", params)
    assert not fake_geodiff.args_file.exists()


def test_metric_output_crs_is_passed(fake_geodiff, tmp_path):
    run("geodiff:rasterize", {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "OUTPUT_CRS": "EPSG:3067",
                              "OUTPUT": str(tmp_path / "m.tif")})  # fmt: skip
    assert arg_value(cli_args(fake_geodiff), "--crs") == "EPSG:3067"


def test_errors_name_the_dialog_parameters(fake_geodiff, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_GEODIFF_MODE", "empty")
    text = run_error("geodiff:rasterize", {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"),
                                           "OUTPUT": str(tmp_path / "m.tif")})  # fmt: skip
    assert "'Allow an all-background map'" in text and "--allow-empty" not in text
    monkeypatch.setenv("FAKE_GEODIFF_MODE", "ok")
    run("geodiff:rasterize", {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "ALLOW_EMPTY": True,
                              "OUTPUT": str(tmp_path / "m2.tif")})  # fmt: skip
    assert "--allow-empty" in cli_args(fake_geodiff)


def test_model_parameter_lists_installed_models(fake_geodiff, tmp_path):
    from geodiff_qgis import cli
    from qgis.core import QgsApplication

    cli._MODELS_CACHE.clear()
    alg = QgsApplication.processingRegistry().createAlgorithmById("geodiff:synthesize")
    assert alg.parameterDefinition("MODEL").options() == ["geodiff-default", "my-region"]
    import processing

    processing.run(alg, {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "MODEL": 1,
                         "OUTPUT": str(tmp_path / "a.tif")})  # fmt: skip
    assert arg_value(cli_args(fake_geodiff), "--model") == "my-region"


def test_augment_over_an_extent_and_over_polygons(fake_geodiff, tmp_path):
    results, _ = run(
        "geodiff:augment",
        {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "N_TILES": 3, "SEEDS_PER_TILE": 2, "FORMAT": 1,
         "OUTPUT_FOLDER": str(tmp_path / "aug")},
    )  # fmt: skip
    args = cli_args(fake_geodiff)
    assert args[0] == "augment" and arg_value(args, "--n-windows") == "3"
    assert arg_value(args, "--seeds-per-window") == "2" and arg_value(args, "--format") == "png"
    assert [float(v) for v in arg_value(args, "--area").split(",")] == list(EXTENT_4326)
    assert (
        results["MANIFEST"] == str(tmp_path / "aug" / "manifest.json") and Path(results["MANIFEST"]).is_file()
    )

    run("geodiff:augment", {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "AREAS": classes_layer(),
                            "OUTPUT_FOLDER": str(tmp_path / "aug2")})  # fmt: skip
    args = cli_args(fake_geodiff)
    assert "--windows" in args and "--area" not in args
    assert not Path(arg_value(args, "--windows")).exists()  # the temporary polygon file is cleaned up
