"""`geodiff rasterize` end to end: outputs, exit codes and messages for bad input (no tracebacks)."""

from __future__ import annotations

import bz2

import numpy as np
import pytest

from geodiff.classes import BUILDING, ROAD, VEGETATION, WATER
from geodiff.cli import main
from geodiff.io import read_raster

from town import TOWN, TOWN_BBOX

BBOX = ",".join(map(str, TOWN_BBOX))


def run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_rasterize_town_with_preview(tmp_path, capsys):
    out, png = tmp_path / "map.tif", tmp_path / "map.png"
    code, err = run(
        [
            "rasterize",
            "--bbox",
            BBOX,
            "--osm",
            str(TOWN),
            "--resolution",
            "1",
            "--out",
            str(out),
            "--preview",
            str(png),
            "--progress",
            "none",
        ],
        capsys,
    )
    assert code == 0, err
    arr, grid, tags = read_raster(out)
    assert grid.crs.to_epsg() == 32632 and grid.resolution == 1.0
    present = set(np.unique(arr).tolist())
    assert {BUILDING, ROAD, WATER, VEGETATION} <= present
    assert png.exists() and "OpenStreetMap" in tags["ATTRIBUTION"]


def test_default_resolution_comes_from_settings(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GEODIFF_DEFAULT_RESOLUTION_M", "2.5")
    out = tmp_path / "map.tif"
    assert (
        run(
            ["rasterize", "--bbox", BBOX, "--osm", str(TOWN), "--out", str(out), "--progress", "none"], capsys
        )[0]
        == 0
    )
    assert read_raster(out)[1].resolution == 2.5


@pytest.mark.parametrize(
    ("bbox", "fragment"),
    [
        ("7.4237,43.7300,7.4200,43.7327", "inverted"),
        ("7.42,43.73,7.42,43.7327", "degenerate"),
        ("7.42,91,7.43,92", "outside [-90, 90]"),
        ("1,2,3", "four numbers"),
    ],
)
def test_bad_bbox(tmp_path, capsys, bbox, fragment):
    code, err = run(
        ["rasterize", f"--bbox={bbox}", "--osm", str(TOWN), "--out", str(tmp_path / "m.tif")], capsys
    )
    assert code == 2 and fragment in err and err.startswith("Error:")
    assert list(tmp_path.iterdir()) == []


def test_too_large_says_how_many_pixels(tmp_path, capsys):
    code, err = run(
        [
            "rasterize",
            "--bbox",
            "7,43,8,44",
            "--osm",
            str(TOWN),
            "--resolution",
            "0.5",
            "--out",
            str(tmp_path / "m.tif"),
        ],
        capsys,
    )
    assert code == 2 and "pixels" in err and "coarser resolution" in err


def test_unknown_file_type(tmp_path, capsys):
    bad = tmp_path / "data.shp.zip"
    bad.write_bytes(b"x")
    code, err = run(
        ["rasterize", "--bbox", BBOX, "--osm", str(bad), "--out", str(tmp_path / "m.tif")], capsys
    )
    assert code == 2 and ".osm.pbf" in err
    assert not (tmp_path / "m.tif").exists()


def test_corrupt_file(tmp_path, capsys):
    bad = tmp_path / "broken.osm.bz2"
    bad.write_bytes(bz2.compress(TOWN.read_bytes())[:300])
    code, err = run(
        ["rasterize", "--bbox", BBOX, "--osm", str(bad), "--out", str(tmp_path / "m.tif")], capsys
    )
    assert code == 3 and "broken.osm.bz2" in err
    assert not (tmp_path / "m.tif").exists()


def test_missing_file(tmp_path, capsys):
    code, err = run(
        ["rasterize", "--bbox", BBOX, "--osm", str(tmp_path / "none.osm"), "--out", str(tmp_path / "m.tif")],
        capsys,
    )
    assert code == 3 and "none.osm" in err


def test_empty_area_is_an_error_unless_allowed(tmp_path, capsys):
    far = "7.4300,43.7400,7.4310,43.7410"
    out = tmp_path / "m.tif"
    code, err = run(["rasterize", "--bbox", far, "--osm", str(TOWN), "--out", str(out)], capsys)
    assert code == 4 and "--allow-empty" in err and not out.exists()
    code, _ = run(
        [
            "rasterize",
            "--bbox",
            far,
            "--osm",
            str(TOWN),
            "--out",
            str(out),
            "--allow-empty",
            "--progress",
            "none",
        ],
        capsys,
    )
    assert code == 0 and not read_raster(out)[0].any()


def test_bbox_tag_says_its_crs(tmp_path, capsys):
    """A Web Mercator extent (what QGIS passes from a 3857 canvas) is tagged with its CRS, not as bare numbers."""
    from pyproj import Transformer

    to_merc = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    w, s = to_merc.transform(TOWN_BBOX[0], TOWN_BBOX[1])
    e, n = to_merc.transform(TOWN_BBOX[2], TOWN_BBOX[3])
    out = tmp_path / "m.tif"
    code, _ = run(["rasterize", "--bbox", f"{w},{s},{e},{n}", "--bbox-crs", "EPSG:3857", "--osm", str(TOWN),
                   "--out", str(out)], capsys)  # fmt: skip
    assert code == 0
    tags = read_raster(out)[2]
    assert tags["BBOX_CRS"] == "EPSG:3857" and float(tags["BBOX"].split(",")[0]) == pytest.approx(w)
    code, _ = run(["rasterize", "--bbox", BBOX, "--osm", str(TOWN), "--out", str(tmp_path / "l.tif")], capsys)
    assert read_raster(tmp_path / "l.tif")[2]["BBOX_CRS"] == "EPSG:4326"


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "m.tif"
    out.write_bytes(b"keep me")
    code, err = run(["rasterize", "--bbox", BBOX, "--osm", str(TOWN), "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in err and out.read_bytes() == b"keep me"


def test_osm_and_vector_together_is_an_error(tmp_path, capsys):
    code, err = run(
        [
            "rasterize",
            "--bbox",
            BBOX,
            "--osm",
            str(TOWN),
            "--vector",
            str(TOWN),
            "--out",
            str(tmp_path / "m.tif"),
        ],
        capsys,
    )
    assert code == 2


def test_help_speaks_gis():
    import click.testing

    from geodiff.cli import cli

    text = click.testing.CliRunner().invoke(cli, ["rasterize", "--help"]).output
    for word in ("W,S,E,N", "metres per pixel", ".osm.pbf", "UTM", "GeoPackage"):
        assert word in text


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("name", "bbox", "expect"),
    [
        (
            "monaco-2021-12-03.osm.pbf",
            "7.40921,43.72335,7.44864,43.75169",
            {BUILDING, ROAD, WATER, VEGETATION},
        ),
        (
            "helsinki_center_2019.osm.pbf",
            "24.93518,60.16416,24.95341,60.17911",
            {BUILDING, ROAD, WATER, VEGETATION},
        ),
        ("kotka_karhula_2019.osm.pbf", "26.93,60.52,26.97,60.54", {BUILDING, ROAD}),
        ("bavaria_village_10.068_48.135_10.071_48.137.osm", "10.068,48.135,10.071,48.137", {BUILDING, ROAD}),
    ],
)
def test_real_extracts(osm_extracts, tmp_path, capsys, name, bbox, expect):
    out = tmp_path / "m.tif"
    code, err = run(
        [
            "rasterize",
            "--bbox",
            bbox,
            "--osm",
            str(osm_extracts / name),
            "--resolution",
            "2",
            "--out",
            str(out),
            "--progress",
            "none",
        ],
        capsys,
    )
    assert code == 0, err
    arr = read_raster(out)[0][0]
    assert expect <= set(np.unique(arr).tolist())
    if WATER in expect and name.startswith(("monaco", "helsinki")):
        # the sea comes from coastline only: a fair share of the box, but not all of it
        assert 0.05 < (arr == WATER).mean() < 0.8
