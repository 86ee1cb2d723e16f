"""geodiff:rasterize and geodiff:synthesize through processing.run, against the fake CLI (fake_geodiff.py)."""

import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("qgis.core", reason="needs python3-qgis (run tests/qgis/run.sh with Debian's python)")

from qgis.core import (  # noqa: E402
    QgsApplication,
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
        "geodiff:change",
        "geodiff:install",
    }
    for alg in provider.algorithms():
        assert not alg.icon().isNull() and alg.svgIconPath().endswith(".svg")
        assert alg.helpUrl().startswith("file:") and "index.html#" in alg.helpUrl()
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
        ({"RESOLUTION": 0}, "RESOLUTION"),  # below the parameter's minimum: Processing refuses it
        ({"RESOLUTION": -2}, "RESOLUTION"),
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
    # nor where 'Install geodiff' puts one (tests/qgis/test_install.py may have, earlier in this session)
    monkeypatch.setattr(QgsApplication, "qgisSettingsDirPath", staticmethod(lambda: str(tmp_path)))
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


def test_cost_is_logged_once_from_one_geodiff_run_and_large_runs_are_refused(
    fake_geodiff, monkeypatch, tmp_path
):
    from geodiff_qgis.cli import MAX_WINDOWS_SETTING
    from processing.core.ProcessingConfig import ProcessingConfig

    params = {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "OUTPUT": str(tmp_path / "a.tif")}
    feedback = RecordingFeedback()
    run("geodiff:synthesize", params, feedback)
    log = feedback.textLog()
    cost = [line for line in log.splitlines() if "windows of the model" in line]
    assert len(cost) == 1, log  # printed once
    assert "157 x 159 px" in cost[0] and "4 windows" in cost[0] and "estimated 20 s" in cost[0]
    assert log.index(cost[0]) < log.index("some plain output")  # before geodiff works
    assert not Path(f"{fake_geodiff.args_file}.dry").exists()  # one process: no separate dry run
    monkeypatch.setenv("FAKE_GEODIFF_WINDOWS", "5000")
    (tmp_path / "a.tif").unlink()
    ProcessingConfig.setSettingValue(MAX_WINDOWS_SETTING, 1000)
    try:
        text = run_error("geodiff:synthesize", params)
    finally:
        ProcessingConfig.setSettingValue(MAX_WINDOWS_SETTING, 2000)
    assert "5000 windows" in text and "Providers > geodiff" in text
    assert text.count("5000 windows of the model, 20 steps") == 1  # the cost line, once
    assert not (tmp_path / "a.tif").exists()  # stopped at its plan, before writing


def test_geodiff_gets_a_stdin_pipe_that_ends_it_with_qgis(fake_geodiff, tmp_path):
    # QGIS's death closes the pipe on every OS; geodiff (GEODIFF_EXIT_WITH_STDIN=1) then stops as on a cancel
    run(
        "geodiff:rasterize",
        {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "OUTPUT": str(tmp_path / "m.tif")},
    )
    seen = json.loads(Path(f"{fake_geodiff.args_file}.stdin").read_text())
    assert seen == {"env": "1", "pipe": True}


def test_log_names_plugin_and_geodiff_versions(fake_geodiff, tmp_path):
    _, feedback = run("geodiff:rasterize", {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"),
                                            "OUTPUT": str(tmp_path / "m.tif")})  # fmt: skip
    from geodiff_qgis.cli import plugin_version

    assert f"geodiff QGIS plugin {plugin_version()}, geodiff 9.8.7" in feedback.textLog()
    assert plugin_version()[0].isdigit()


def test_estimate_errors_are_in_dialog_terms(fake_geodiff, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_GEODIFF_MODE", "planerror")
    text = run_error("geodiff:synthesize", {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"),
                                            "OUTPUT": str(tmp_path / "a.tif")})  # fmt: skip
    assert "leave 'Resolution' out" in text and "--resolution" not in text


def test_cancel_during_the_estimate_stops_geodiff_at_once(fake_geodiff, monkeypatch, tmp_path):
    """geodiff times the model before its plan: a cancel then must not wait for it, nor end as a success."""
    import threading

    monkeypatch.setenv("FAKE_GEODIFF_MODE", "slowplan")
    feedback = QgsProcessingFeedback()

    def cancel_when_started():
        deadline = time.monotonic() + 30
        while not fake_geodiff.pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        feedback.cancel()

    canceller = threading.Thread(target=cancel_when_started)
    canceller.start()
    start = time.monotonic()
    text = run_error("geodiff:synthesize", {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"),
                                            "OUTPUT": str(tmp_path / "a.tif")}, feedback)  # fmt: skip
    canceller.join()
    assert "canceled" in text
    assert time.monotonic() - start < 15
    assert_gone(int(fake_geodiff.pid_file.read_text()), within_s=2)


def test_sampling_options_threads_guidance_and_gpu(fake_geodiff, tmp_path):
    from geodiff_qgis.algorithms.synthesize_algorithm import SamplingParameters

    params = {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "OUTPUT": str(tmp_path / "a.tif")}
    run("geodiff:synthesize", params)
    args = cli_args(fake_geodiff)
    assert arg_value(args, "--threads") == str(max(1, os.cpu_count() - 1)) and "--guidance-scale" not in args
    assert arg_value(args, "--quality") == "full"
    (tmp_path / "a.tif").unlink()
    run("geodiff:synthesize", {**params, "QUALITY": "fast"})  # by name, as saved models and scripts give it
    assert arg_value(cli_args(fake_geodiff), "--quality") == "fast"
    assert "--runtime" not in cli_args(fake_geodiff)  # torch, geodiff's default, is not spelled out
    (tmp_path / "a.tif").unlink()
    run("geodiff:synthesize", {**params, "RUNTIME": "onnx"})
    assert arg_value(cli_args(fake_geodiff), "--runtime") == "onnx"
    (tmp_path / "a.tif").unlink()
    cuda1 = SamplingParameters.DEVICES.index("cuda:1")
    assert SamplingParameters.DEVICES[:3] == ["auto", "cpu", "cuda"]  # saved indices keep their meaning
    run("geodiff:synthesize", {**params, "THREADS": 3, "GUIDANCE": 2.5, "DEVICE": cuda1})
    args = cli_args(fake_geodiff)
    assert (
        arg_value(args, "--threads"),
        arg_value(args, "--guidance-scale"),
        arg_value(args, "--device"),
    ) == (
        "3",
        "2.5",
        "cuda:1",
    )


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

    assert alg.parameterDefinition("MODEL").defaultValue() == "geodiff-default"
    processing.run(alg, {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "MODEL": "my-region",
                         "OUTPUT": str(tmp_path / "a.tif")})  # fmt: skip
    assert arg_value(cli_args(fake_geodiff), "--model") == "my-region"  # by name: no index that shifts
    text = run_error(alg, {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "MODEL": "removed-model",
                           "OUTPUT": str(tmp_path / "b.tif")})  # fmt: skip
    assert "MODEL" in text


def test_augment_over_an_extent_and_over_polygons(fake_geodiff, tmp_path):
    results, feedback = run(
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
    assert "3 tiles x 2 samples: 6 windows of the model (full quality), estimated 30 s" in feedback.textLog()
    assert results["IMAGES"] is None and "PNG tiles carry no georeference" in feedback.textLog()

    # polygons: no Area needed
    run("geodiff:augment", {"AREAS": classes_layer(), "OUTPUT_FOLDER": str(tmp_path / "aug2")})
    args = cli_args(fake_geodiff)
    assert "--windows" in args and "--area" not in args
    assert not Path(arg_value(args, "--windows")).exists()  # the temporary polygon file is cleaned up


def test_augment_needs_an_area_or_polygons_and_a_real_folder(fake_geodiff, tmp_path):
    text = run_error("geodiff:augment", {"OUTPUT_FOLDER": str(tmp_path / "aug")})
    assert "Give an Area for random tiles, or a Polygon layer" in text
    text = run_error("geodiff:augment", {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"),
                                         "OUTPUT_FOLDER": "TEMPORARY_OUTPUT"})  # fmt: skip
    assert "Choose a Dataset folder" in text
    assert not fake_geodiff.args_file.exists()


def test_augment_cost_line_follows_the_quality(fake_geodiff, tmp_path):
    from geodiff_qgis.algorithms.base import (
        CPU_ONNX_SPEEDUP,
        CPU_SECONDS_PER_WINDOW,
        CPU_SECONDS_PER_WINDOW_FAST,
    )

    lines = {}
    for quality in ("full", "fast"):
        feedback = RecordingFeedback()
        params = {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "N_TILES": 10, "QUALITY": quality,
                  "OUTPUT_FOLDER": str(tmp_path / quality)}  # fmt: skip
        run("geodiff:augment", params, feedback)
        lines[quality] = next(m for m in feedback.textLog().splitlines() if "windows of the model" in m)
        assert f"({quality} quality)" in lines[quality]
        assert arg_value(cli_args(fake_geodiff), "--quality") == quality
    assert f"estimated {10 * CPU_SECONDS_PER_WINDOW:.0f} s" in lines["full"]
    assert f"estimated {10 * CPU_SECONDS_PER_WINDOW_FAST:.0f} s" in lines["fast"]
    feedback = RecordingFeedback()
    params = {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "N_TILES": 10, "RUNTIME": "onnx",
              "OUTPUT_FOLDER": str(tmp_path / "onnx")}  # fmt: skip
    run("geodiff:augment", params, feedback)
    assert f"estimated {10 * CPU_SECONDS_PER_WINDOW / CPU_ONNX_SPEEDUP['full']:.0f} s" in feedback.textLog()
    assert arg_value(cli_args(fake_geodiff), "--runtime") == "onnx"


def test_augment_above_the_limit_is_refused_before_geodiff_runs(fake_geodiff, tmp_path):
    text = run_error("geodiff:augment", {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "N_TILES": 100000,
                                         "OUTPUT_FOLDER": str(tmp_path / "aug")})  # fmt: skip
    assert "100000 windows" in text and "Providers > geodiff" in text
    assert not fake_geodiff.args_file.exists() and not (tmp_path / "aug").exists()


def loaded_layers(alg_id, params):
    """Run as the dialog does (outputs loaded into the project when the run ends): {layer name: layer}."""
    import processing
    from qgis.core import QgsProject

    project = QgsProject.instance()
    project.removeAllMapLayers()
    processing.runAndLoadResults(alg_id, params, feedback=QgsProcessingFeedback())
    return {layer.name(): layer for layer in project.mapLayers().values()}


def palette_labels(layer):
    renderer = layer.renderer()
    assert renderer.type() == "paletted", renderer.type()
    return [c.label for c in renderer.classes()]


CLASS_NAMES = ["background", "building", "road", "water", "vegetation"]


def test_loaded_outputs_are_styled_and_named(fake_geodiff, tmp_path):
    from qgis.core import QgsContrastEnhancement

    layers = loaded_layers("geodiff:synthesize", {
        "EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "SEED": 7,
        "OUTPUT": str(tmp_path / "a.tif"), "MASK_OUTPUT": str(tmp_path / "a.mask.tif")})  # fmt: skip
    names = sorted(layers)
    assert names == [
        "Semantic map · 60.1550°N 24.9050°E · seed 7",
        "Synthetic aerial image · 60.1550°N 24.9050°E · seed 7",
    ], names
    assert palette_labels(layers[names[0]]) == CLASS_NAMES  # not 256 unnamed entries
    layers = loaded_layers("geodiff:rasterize", {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"),
                                                 "OUTPUT": "TEMPORARY_OUTPUT"})  # fmt: skip
    assert palette_labels(layers["Semantic map · 60.1550°N 24.9050°E"]) == CLASS_NAMES
    layers = loaded_layers("geodiff:augment", {"EXTENT": extent_param(EXTENT_4326, "EPSG:4326"), "N_TILES": 3,
                                               "OUTPUT_FOLDER": str(tmp_path / "aug")})  # fmt: skip
    assert sorted(layers) == ["Image tiles · aug · seed 0", "Mask tiles · aug · seed 0"]
    masks, images = layers["Mask tiles · aug · seed 0"], layers["Image tiles · aug · seed 0"]
    assert masks.source().endswith(".vrt") and masks.bandCount() == 1 and images.bandCount() == 3
    assert palette_labels(masks) == CLASS_NAMES + ["ignore"]
    check_raster(masks.source(), EXTENT_4326, "EPSG:4326")
    assert masks.width() == 3 * 16  # the three tiles side by side, one mosaic
    red = images.renderer().redContrastEnhancement()
    assert red.contrastEnhancementAlgorithm() == QgsContrastEnhancement.NoEnhancement


def test_help_page_ships_inside_the_plugin(qgis_app):
    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QUrl

    for alg in QgsApplication.processingRegistry().providerById("geodiff").algorithms():
        url = QUrl(alg.helpUrl())
        page = Path(url.toLocalFile())
        assert page.is_file(), page
        assert f'id="{url.fragment()}"' in page.read_text(encoding="utf-8")


def test_time_left_is_shown_per_stage_and_every_tenth(qgis_app):
    from geodiff_qgis.cli import OutputHandler

    feedback = RecordingFeedback()
    handler = OutputHandler(feedback)
    for i in range(1, 21):  # one stage, 20 steps, 10 min left at the start
        handler.line(
            json.dumps({"progress": i / 20, "message": f"denoising step {i}/20", "eta_s": 600 - 30 * i})
        )
    assert feedback.texts[0] == "denoising step 1/20 (about 10 min left)"
    assert 5 <= len(feedback.texts) <= 11  # not one log line per step
    assert all("left" in t for t in feedback.texts)  # and below 30 s left nothing more is logged
    assert feedback.texts[-1] == "denoising step 18/20 (about 60 s left)"
