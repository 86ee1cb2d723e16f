"""Tag rules and the class table in geodiff.classes."""

from __future__ import annotations

import numpy as np
import pytest

from geodiff import classes
from geodiff.classes import (
    BACKGROUND,
    BUILDING,
    LANE_WIDTH_M,
    PAINT_ORDER,
    ROAD,
    ROAD_WIDTHS_M,
    RULE_TAG_KEYS,
    VEGETATION,
    WATER,
    WATERWAY_WIDTHS_M,
    area_class,
    class_id,
    is_coastline,
    line_class_and_width,
    overpass_tag_filter,
    point_class_and_width,
)


@pytest.mark.parametrize(("highway", "width"), sorted(ROAD_WIDTHS_M.items()))
def test_road_width_by_type(highway: str, width: float) -> None:
    assert line_class_and_width({"highway": highway}) == (ROAD, width)


def test_major_roads_are_wider_than_paths() -> None:
    w = ROAD_WIDTHS_M
    assert w["motorway"] > w["primary"] > w["residential"] > w["service"] > w["footway"] > w["path"]


@pytest.mark.parametrize(
    ("tags", "width"),
    [
        ({"highway": "residential", "width": "12"}, 12.0),
        ({"highway": "residential", "width": "7.5 m"}, 7.5),
        ({"highway": "residential", "width": "4,5"}, 4.5),
        ({"highway": "residential", "width": "3;4"}, 3.0),
        ({"highway": "residential", "lanes": "4"}, 4 * LANE_WIDTH_M),
        ({"highway": "primary", "lanes": "1"}, LANE_WIDTH_M),
        # width wins over lanes; unusable values fall back to lanes, then to the type default
        ({"highway": "primary", "width": "9", "lanes": "4"}, 9.0),
        ({"highway": "primary", "width": "wide", "lanes": "2"}, 2 * LANE_WIDTH_M),
        ({"highway": "primary", "width": "500", "lanes": "99"}, ROAD_WIDTHS_M["primary"]),
        ({"highway": "primary", "lanes": "many"}, ROAD_WIDTHS_M["primary"]),
        ({"highway": "primary", "width": np.nan}, ROAD_WIDTHS_M["primary"]),
    ],
)
def test_width_and_lanes_override(tags: dict, width: float) -> None:
    assert line_class_and_width(tags) == (ROAD, pytest.approx(width))


def test_waterways_and_tree_rows() -> None:
    for waterway, width in WATERWAY_WIDTHS_M.items():
        assert line_class_and_width({"waterway": waterway}) == (WATER, width)
    assert line_class_and_width({"waterway": "river", "width": "40"}) == (WATER, 40.0)
    assert line_class_and_width({"natural": "tree_row"}) == (VEGETATION, classes.TREE_ROW_WIDTH_M)
    assert line_class_and_width({"waterway": "riverbank"}) is None  # an area tag, not a line


@pytest.mark.parametrize(
    "tags",
    [
        {"highway": "primary", "tunnel": "yes"},
        {"highway": "residential", "tunnel": "building_passage"},
        {"waterway": "stream", "tunnel": "culvert"},
        {"highway": "service", "layer": "-1"},
        {"highway": "proposed"},
        {"highway": "construction"},
        {"highway": "bus_stop"},
        {"railway": "rail"},
    ],
)
def test_hidden_and_non_road_lines_are_dropped(tags: dict) -> None:
    assert line_class_and_width(tags) is None


def test_bridges_and_positive_layers_are_kept() -> None:
    assert line_class_and_width({"highway": "primary", "layer": "-1", "bridge": "yes"}) is not None
    assert line_class_and_width({"highway": "primary", "layer": "1", "bridge": "yes"}) is not None
    assert line_class_and_width({"highway": "primary", "tunnel": "no"}) is not None


def test_area_rules() -> None:
    assert area_class({"building": "yes"}) == BUILDING
    assert area_class({"building": "no"}) is None
    assert area_class({"building": "yes", "location": "underground"}) is None
    assert area_class({"building": "yes", "layer": "-2"}) is None
    assert area_class({"amenity": "parking"}) == ROAD
    assert area_class({"area:highway": "footway"}) == ROAD
    assert area_class({"natural": "water"}) == WATER
    assert area_class({"leisure": "swimming_pool"}) == WATER
    assert area_class({"landuse": "forest"}) == VEGETATION
    assert area_class({"leisure": "park"}) == VEGETATION
    assert area_class({"landuse": "residential"}) is None
    assert area_class({"amenity": "cafe"}) is None


def test_highway_areas() -> None:
    # A pedestrian square mapped as a closed way with area=yes is pavement; without area=yes it is a line.
    assert area_class({"highway": "pedestrian", "area": "yes"}) == ROAD
    assert area_class({"highway": "pedestrian"}) is None
    assert area_class({"highway": "residential", "junction": "roundabout"}) is None
    assert area_class({"highway": "proposed", "area": "yes"}) is None
    assert area_class({"highway": "pedestrian", "area": "yes", "tunnel": "yes"}) is None


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"building": "yes", "leisure": "park"}, BUILDING),
        ({"building": "yes", "amenity": "parking"}, BUILDING),
        ({"amenity": "parking", "landuse": "grass"}, ROAD),
        ({"area:highway": "primary", "natural": "water"}, ROAD),
        ({"natural": "water", "landuse": "grass"}, WATER),
        ({"leisure": "swimming_pool", "leisure:2": "park", "landuse": "grass"}, WATER),
    ],
)
def test_paint_order_precedence(tags: dict, expected: int) -> None:
    assert area_class(tags) == expected


def test_paint_order_paints_buildings_last() -> None:
    assert PAINT_ORDER == (VEGETATION, WATER, ROAD, BUILDING)
    assert BACKGROUND not in PAINT_ORDER


def test_points_and_coastline() -> None:
    assert point_class_and_width({"natural": "tree"}) == (VEGETATION, classes.TREE_DIAMETER_M)
    assert point_class_and_width({"amenity": "bench"}) is None
    assert is_coastline({"natural": "coastline"})
    assert not is_coastline({"natural": "water"})
    assert not is_coastline({"natural": np.nan})


def test_overpass_filter_covers_every_rule_key() -> None:
    flt = overpass_tag_filter()
    assert flt["highway"] is True and flt["building"] is True

    def fetched(key: str, value: str) -> bool:
        wanted = flt.get(key)
        return wanted is True or (isinstance(wanted, list) and value in wanted)

    for rules in classes.AREA_RULES.values():
        for key, values in rules:
            if values is None:
                assert flt.get(key) is True, key
            else:
                assert all(fetched(key, v) for v in values), key
    assert all(fetched("waterway", w) for w in WATERWAY_WIDTHS_M)
    for natural in ("tree", "tree_row", "coastline"):
        assert fetched("natural", natural)
    # osmnx needs bool or list-of-str values
    assert all(
        v is True or (isinstance(v, list) and all(isinstance(s, str) for s in v)) for v in flt.values()
    )


class _Recorder(dict):
    """A tags mapping that records every key the rules look up."""

    seen: set[str] = set()

    def get(self, key: str, default: object = None) -> object:
        _Recorder.seen.add(key)
        return super().get(key, default)


def test_rule_tag_keys_lists_every_key_the_rules_read() -> None:
    samples = [
        {"highway": "primary", "width": "x", "lanes": "2", "layer": "-1", "bridge": "yes"},
        {"waterway": "river", "width": "3", "tunnel": "no", "location": "overground"},
        {"natural": "tree_row"},
        {"building": "yes", "area": "yes"},
        {},
    ]
    _Recorder.seen = set()
    for tags in samples:
        rec = _Recorder(tags)
        area_class(rec)
        line_class_and_width(rec)
        point_class_and_width(rec)
        is_coastline(rec)
    assert _Recorder.seen <= RULE_TAG_KEYS
    assert set(overpass_tag_filter()) <= RULE_TAG_KEYS


def test_class_id_lookup() -> None:
    assert class_id("building") == BUILDING
    assert class_id(" Water ") == WATER
    assert class_id("4") == VEGETATION
    assert class_id(2) == ROAD
    assert class_id(np.int64(0)) == BACKGROUND


@pytest.mark.parametrize("bad", ["forest", "", "-1", 5, 255, -1])
def test_class_id_errors(bad: object) -> None:
    with pytest.raises(KeyError) as info:
        class_id(bad)  # type: ignore[arg-type]
    message = str(info.value)
    assert "valid" in message
    if isinstance(bad, str) and not bad.lstrip("-").isdigit():
        assert "building" in message  # names the valid classes


def test_palette_and_colorize() -> None:
    lut = classes.palette()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert tuple(lut[WATER]) == classes.CLASSES[WATER].color
    img = classes.colorize(np.array([[0, 1], [255, 4]], dtype=np.uint8))
    assert img.shape == (2, 2, 3)
    assert tuple(img[1, 0]) == classes.IGNORE_COLOR
