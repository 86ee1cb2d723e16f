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
            "MODEL": model,
            "SEED": 1,
            "STEPS": 2,
            "DEVICE": 1,
            "OUTPUT": str(out),
            "MASK_OUTPUT": str(mask),
        },
    )
    check_raster(out, bbox, "EPSG:4326", bands=3)
    check_raster(mask, bbox, "EPSG:4326", bands=1)
