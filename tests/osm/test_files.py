"""OSM files (.osm/.osm.bz2/.osm.gz/.osm.pbf) and vector layers -> FeatureSet."""

from __future__ import annotations

import bz2
import gzip
import re
import shutil
from collections import Counter
from pathlib import Path

import geopandas as gpd
import numpy as np
import osmium
import pytest
import shapely
from shapely.geometry import LineString, Point, Polygon

from geodiff.classes import BUILDING, ROAD, ROAD_WIDTHS_M, VEGETATION, WATER
from geodiff.errors import (
    CorruptFileError,
    DataError,
    EmptyAreaError,
    InputNotFoundError,
    InvalidParameterError,
    UnsupportedFileError,
)
from geodiff.grid import BBox, parse_crs
from geodiff.osm import classify_elements, load_features
from geodiff.osm.files import read_elements
from geodiff.osm.vector import DEFAULT_LINE_WIDTH_M, read_vector_features

from town import TOWN, TOWN_BBOX, TOWN_COUNTS

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def counts(features: gpd.GeoDataFrame) -> dict[tuple[int, str], int]:
    return dict(Counter(zip(features["class_id"].tolist(), features["kind"].tolist(), strict=True)))


def check_feature_set(features: gpd.GeoDataFrame) -> None:
    assert list(features.columns) == ["class_id", "width_m", "kind", "geometry"]
    assert features.crs.to_epsg() == 4326
    assert features["class_id"].dtype.kind == "i"
    assert features["width_m"].dtype.kind == "f"
    assert set(features["kind"]) <= {"area", "line", "point", "coastline"}
    assert (features.loc[features["kind"] == "area", "width_m"] == 0).all()
    assert (features.loc[features["kind"].isin(["line", "point"]), "width_m"] > 0).all()
    assert (features.loc[features["kind"] == "coastline", "class_id"] == WATER).all()
    assert features.geometry.is_valid.all() and not features.geometry.is_empty.any()


@pytest.fixture(scope="module")
def town_variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tiny_town as .osm, .osm.bz2, .osm.gz and .osm.pbf (made at test time, not committed)."""
    folder = tmp_path_factory.mktemp("town")
    data = TOWN.read_bytes()
    variants = {
        ".osm": folder / "town.osm",
        ".osm.bz2": folder / "town.osm.bz2",
        ".osm.gz": folder / "town.osm.gz",
    }
    variants[".osm"].write_bytes(data)
    variants[".osm.bz2"].write_bytes(bz2.compress(data))
    variants[".osm.gz"].write_bytes(gzip.compress(data))
    pbf = folder / "town.osm.pbf"
    with osmium.SimpleWriter(str(pbf)) as writer:
        for obj in osmium.FileProcessor(str(TOWN)):
            writer.add(obj)
    variants[".osm.pbf"] = pbf
    return variants


@pytest.mark.parametrize("suffix", [".osm", ".osm.bz2", ".osm.gz", ".osm.pbf"])
def test_tiny_town_every_format(town_variants: dict[str, Path], suffix: str) -> None:
    features = load_features(TOWN_BBOX, osm_path=town_variants[suffix])
    check_feature_set(features)
    assert counts(features) == TOWN_COUNTS


def test_tiny_town_details() -> None:
    features = load_features(TOWN_BBOX, osm_path=TOWN)
    buildings = features[features["class_id"] == BUILDING]
    # the multipolygon relation keeps its courtyard
    assert sorted(len(g.interiors) for g in buildings.geometry) == [0, 0, 0, 0, 0, 0, 1]
    roads = features[(features["class_id"] == ROAD) & (features["kind"] == "line")]
    widths = sorted(roads["width_m"].round(3))
    # footway 2, service 4.5, residential lanes=2 -> 7, roundabout residential 7, secondary width=10, primary 14
    assert widths == [2.0, 4.5, 7.0, 7.0, 10.0, ROAD_WIDTHS_M["primary"]]
    # the closed roundabout stays a line; the area=yes plaza is a road area
    assert sum(g.is_closed for g in roads.geometry if isinstance(g, LineString)) == 1
    plaza = features[(features["class_id"] == ROAD) & (features["kind"] == "area")]
    assert isinstance(plaza.geometry.iloc[0], Polygon)
    # coastline keeps its drawn direction (west -> east: land north on the left, sea south on the right)
    coast = features[features["kind"] == "coastline"].geometry.iloc[0]
    assert isinstance(coast, LineString)
    assert coast.coords[0][0] < coast.coords[-1][0]
    trees = features[features["kind"] == "point"]
    assert all(isinstance(g, Point) for g in trees.geometry)


def test_raw_elements_and_dropped_tags() -> None:
    elements = read_elements(TOWN, TOWN_BBOX)
    assert elements.index.names == ["element", "id"]
    # the tunnel, the unmapped landuse and the cafe are read but not classified
    assert (elements["tunnel"] == "yes").sum() == 1
    assert (elements["landuse"] == "residential").sum() == 1
    assert (elements["amenity"] == "cafe").sum() == 1
    features = classify_elements(elements)
    assert len(features) == sum(TOWN_COUNTS.values())
    # a closed building way is one area, not also a line; coastline is never an area
    assert not elements.index.has_duplicates
    assert counts(features)[(BUILDING, "area")] == 7


def test_bbox_filtering() -> None:
    everything = classify_elements(read_elements(TOWN))
    assert counts(everything)[(BUILDING, "area")] == 8  # the outlier east of the town
    # the south-west corner: coastline, primary road, plaza, the building next to the river, ...
    w, s, e, n = TOWN_BBOX
    corner = load_features((w, s, w + (e - w) * 0.2, s + (n - s) * 0.3), osm_path=TOWN)
    assert 0 < len(corner) < len(everything)
    assert (WATER, "coastline") in counts(corner)
    assert (VEGETATION, "point") not in counts(corner)
    # a bbox in a projected CRS selects the same as its lon/lat twin
    utm = parse_crs("EPSG:32632")
    from pyproj import Transformer

    t = Transformer.from_crs("EPSG:4326", utm, always_xy=True)
    x0, y0 = t.transform(w + 0.0001, s + 0.0001)
    x1, y1 = t.transform(e - 0.0001, n - 0.0001)
    projected = load_features(BBox(x0, y0, x1, y1, crs=utm), osm_path=TOWN)
    assert counts(projected) == TOWN_COUNTS


def test_empty_bbox() -> None:
    far = (7.50, 43.80, 7.51, 43.81)
    with pytest.raises(EmptyAreaError, match="check the bbox"):
        load_features(far, osm_path=TOWN)
    empty = load_features(far, osm_path=TOWN, allow_empty=True)
    assert len(empty) == 0 and list(empty.columns) == ["class_id", "width_m", "kind", "geometry"]


def test_clipped_extract_with_missing_nodes(tmp_path: Path) -> None:
    """Ways and multipolygons whose nodes are missing (clipped extracts) are skipped or cut, not fatal."""
    text = TOWN.read_text()
    relation = re.search(r'<member type="way" ref="(\d+)" role="inner"/>', text)
    assert relation is not None
    inner = re.search(rf'<way id="{relation.group(1)}".*?</way>', text, re.S)
    refs = re.findall(r'<nd ref="(\d+)"/>', inner.group(0))
    river = re.search(r'<way id="\d+" version="1">((?:(?!</way>).)*?)<tag k="waterway"', text, re.S)
    river_refs = re.findall(r'<nd ref="(\d+)"/>', river.group(1))
    drop = set(refs[:2]) | {river_refs[2]}
    kept = "\n".join(line for line in text.splitlines() if not any(f'<node id="{r}" ' in line for r in drop))
    clipped = tmp_path / "clipped.osm"
    clipped.write_text(kept)
    features = load_features(TOWN_BBOX, osm_path=clipped)
    check_feature_set(features)
    got = counts(features)
    assert got[(BUILDING, "area")] == 6  # the courtyard relation cannot be assembled
    river = features[(features["class_id"] == WATER) & (features["kind"] == "line")]
    assert len(river) == 1 and river.geometry.iloc[0].geom_type == "MultiLineString"


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"):
        read_elements(tmp_path / "nope.osm.pbf")
    with pytest.raises(FileNotFoundError):  # also the builtin
        load_features(TOWN_BBOX, osm_path=tmp_path / "nope.osm")
    wrong = tmp_path / "town.txt"
    shutil.copy(TOWN, wrong)
    with pytest.raises(UnsupportedFileError, match=r"\.osm\.pbf"):
        read_elements(wrong)
    with pytest.raises(InvalidParameterError, match="not both"):
        load_features(TOWN_BBOX, osm_path=TOWN, vector_path=tmp_path / "x.geojson")


def test_corrupt_files(tmp_path: Path, town_variants: dict[str, Path]) -> None:
    pbf = town_variants[".osm.pbf"].read_bytes()
    bad_pbf = tmp_path / "cut.osm.pbf"
    bad_pbf.write_bytes(pbf[: len(pbf) // 2])
    bad_bz2 = tmp_path / "cut.osm.bz2"
    data = town_variants[".osm.bz2"].read_bytes()
    bad_bz2.write_bytes(data[: len(data) // 2])
    bad_xml = tmp_path / "html.osm"
    bad_xml.write_text("<html><body>Rate limited, try again</body></html><<<")
    not_bz2 = tmp_path / "plain.osm.bz2"
    shutil.copy(TOWN, not_bz2)
    for path in (bad_pbf, bad_bz2, bad_xml, not_bz2):
        with pytest.raises(CorruptFileError, match="download it again"):
            read_elements(path, TOWN_BBOX)


# --------------------------------------------------------------------------------------------------------
# vector layers
# --------------------------------------------------------------------------------------------------------

UTM = "EPSG:32632"


def _vector_layer(class_values: list[object]) -> gpd.GeoDataFrame:
    """Four features around the tiny town in UTM 32N: a polygon, two lines and a point."""
    ll = gpd.GeoSeries(
        [
            shapely.box(7.4205, 43.7305, 7.4210, 43.7309),
            LineString([(7.4201, 43.7310), (7.4235, 43.7310)]),
            LineString([(7.4201, 43.7320), (7.4235, 43.7321)]),
            Point(7.4220, 43.7315),
        ],
        crs="EPSG:4326",
    )
    return gpd.GeoDataFrame(
        {"class": class_values, "width": [np.nan, 9.0, np.nan, np.nan], "name": ["a", "b", "c", "d"]},
        geometry=ll.to_crs(UTM),
        crs=UTM,
    )


@pytest.mark.parametrize("driver_suffix", [".geojson", ".gpkg"])
@pytest.mark.parametrize("values", [["building", "Road", "water", "vegetation"], [1, 2, 3, 4]])
def test_vector_layer(tmp_path: Path, driver_suffix: str, values: list[object]) -> None:
    path = tmp_path / f"layer{driver_suffix}"
    _vector_layer(values).to_file(path)
    features = read_vector_features(path, TOWN_BBOX)
    check_feature_set(features)
    assert features["class_id"].tolist() == [BUILDING, ROAD, WATER, VEGETATION]
    assert features["kind"].tolist() == ["area", "line", "line", "point"]
    assert features["width_m"].tolist() == [0.0, 9.0, DEFAULT_LINE_WIDTH_M[WATER], 5.0]
    x, y = features.geometry.iloc[3].coords[0]
    assert x == pytest.approx(7.4220, abs=1e-6) and y == pytest.approx(43.7315, abs=1e-6)
    # through the dispatcher, with a bbox that only holds the polygon
    only = load_features((7.4204, 43.7304, 7.4211, 43.7308), vector_path=path)
    assert only["class_id"].tolist() == [BUILDING]


def test_vector_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.gpkg"
    _vector_layer(["building", "forest", "water", 9]).to_file(path)
    with pytest.raises(DataError) as info:
        read_vector_features(path, TOWN_BBOX)
    message = str(info.value)
    assert "'forest'" in message and "9" in message and "building" in message and "vegetation" in message
    with pytest.raises(DataError, match="available fields: class, width, name"):
        read_vector_features(path, TOWN_BBOX, class_field="kind")
    with pytest.raises(InputNotFoundError):
        read_vector_features(tmp_path / "missing.geojson")
    with pytest.raises(UnsupportedFileError):
        read_vector_features(TOWN)
    broken = tmp_path / "broken.geojson"
    broken.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(CorruptFileError):
        read_vector_features(broken)


# --------------------------------------------------------------------------------------------------------
# shared extracts
# --------------------------------------------------------------------------------------------------------

_COASTAL = {"monaco-2021-12-03.osm.pbf", "monaco-2021-12-03.osm.bz2", "helsinki_center_2019.osm.pbf"}


@pytest.mark.shared_data
def test_shared_extracts(osm_extracts: Path) -> None:
    files = sorted(p for p in osm_extracts.iterdir() if p.name.endswith((".osm", ".osm.bz2", ".osm.pbf")))
    assert files
    for path in files:
        features = classify_elements(read_elements(path))
        check_feature_set(features)
        got = counts(features)
        assert got.get((BUILDING, "area"), 0) > 10, path.name
        assert got.get((ROAD, "line"), 0) > 10, path.name
        if path.name in _COASTAL:
            assert got.get((WATER, "coastline"), 0) > 0, path.name
    # how long reading takes is a benchmark's figure (bench/results/cpu.md), not a test's: a loaded machine


@pytest.mark.shared_data
def test_monaco_pbf_and_xml_agree(osm_extracts: Path) -> None:
    pbf = osm_extracts / "monaco-2021-12-03.osm.pbf"
    xml = osm_extracts / "monaco-2021-12-03.osm.bz2"
    if not (pbf.exists() and xml.exists()):
        pytest.skip("Monaco extracts not present")
    bbox = (7.4180, 43.7320, 7.4220, 43.7350)
    a = counts(load_features(bbox, osm_path=pbf))
    b = counts(load_features(bbox, osm_path=xml))
    assert a == b
    assert a[(BUILDING, "area")] > 100
