"""The semantic class table: ids, names, colours, paint order and the OSM tag rules.

This is the only module that knows which OSM tags become which class. Everything else asks it.

Ids are stable (they are baked into trained models): 0 background, 1 building, 2 road, 3 water,
4 vegetation. ``IGNORE`` (255) marks unlabeled pixels in training data; it never appears in maps made from OSM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SemanticClass:
    id: int
    name: str
    color: tuple[int, int, int]
    description: str


BACKGROUND, BUILDING, ROAD, WATER, VEGETATION = 0, 1, 2, 3, 4
IGNORE = 255

CLASSES: tuple[SemanticClass, ...] = (
    SemanticClass(BACKGROUND, "background", (214, 200, 160), "bare land, pavement, anything unmapped"),
    SemanticClass(BUILDING, "building", (192, 57, 43), "building footprints"),
    SemanticClass(ROAD, "road", (127, 140, 141), "roads and paths, buffered by type/width/lanes"),
    SemanticClass(
        WATER, "water", (46, 134, 193), "water bodies, rivers, pools and the sea side of coastlines"
    ),
    SemanticClass(VEGETATION, "vegetation", (39, 174, 96), "parks, forest, grass, gardens, scrub"),
)
NUM_CLASSES = len(CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
IGNORE_COLOR = (0, 0, 0)

# Later classes are painted over earlier ones, so overlaps resolve the same way every time
# (a building in a park stays a building, a bridge road over a river stays a road).
PAINT_ORDER: tuple[int, ...] = (VEGETATION, WATER, ROAD, BUILDING)


def class_id(name_or_id: str | int) -> int:
    """Return the class id for a class name (case-insensitive) or id; raise ``KeyError`` if unknown."""
    if isinstance(name_or_id, (int, np.integer)):
        if 0 <= int(name_or_id) < NUM_CLASSES:
            return int(name_or_id)
        raise KeyError(f"unknown class id {name_or_id}; valid ids are 0..{NUM_CLASSES - 1}")
    key = str(name_or_id).strip().lower()
    if key.isdigit():
        return class_id(int(key))
    for c in CLASSES:
        if c.name == key:
            return c.id
    raise KeyError(f"unknown class {name_or_id!r}; valid names are {', '.join(CLASS_NAMES)}")


def palette() -> np.ndarray:
    """A 256x3 uint8 colour lookup table: class colours, ``IGNORE`` black, the rest black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for c in CLASSES:
        lut[c.id] = c.color
    lut[IGNORE] = IGNORE_COLOR
    return lut


def colorize(class_map: np.ndarray) -> np.ndarray:
    """Turn an (H, W) class-id array into an (H, W, 3) uint8 RGB image."""
    return palette()[class_map.astype(np.uint8)]


# ----------------------------------------------------------------------------------------------------------
# OSM tag rules
# ----------------------------------------------------------------------------------------------------------

# Carriageway width in metres by highway type, used when a way has no usable width/lanes tag.
ROAD_WIDTHS_M: dict[str, float] = {
    "motorway": 22.0,
    "trunk": 18.0,
    "primary": 14.0,
    "secondary": 11.0,
    "tertiary": 9.0,
    "motorway_link": 8.0,
    "trunk_link": 8.0,
    "primary_link": 7.0,
    "secondary_link": 7.0,
    "tertiary_link": 6.0,
    "unclassified": 6.0,
    "residential": 7.0,
    "living_street": 5.0,
    "service": 4.5,
    "pedestrian": 5.0,
    "road": 6.0,
    "busway": 7.0,
    "track": 3.0,
    "footway": 2.0,
    "cycleway": 2.0,
    "path": 1.5,
    "bridleway": 2.0,
    "steps": 2.0,
}
LANE_WIDTH_M = 3.5

# Linear waterways drawn with a width (metres); rivers usually also have area polygons.
WATERWAY_WIDTHS_M: dict[str, float] = {
    "river": 12.0,
    "canal": 8.0,
    "stream": 2.5,
    "drain": 1.5,
    "ditch": 1.5,
}

TREE_ROW_WIDTH_M = 5.0
TREE_DIAMETER_M = 5.0

# Area rules: (key, accepted values or None for "any value but no"), class. Checked in this order per class.
AREA_RULES: dict[int, tuple[tuple[str, frozenset[str] | None], ...]] = {
    BUILDING: (("building", None),),
    ROAD: (
        ("area:highway", None),
        ("amenity", frozenset({"parking"})),  # surface parking reads as pavement from above
    ),
    WATER: (
        ("natural", frozenset({"water", "bay", "strait"})),
        ("waterway", frozenset({"riverbank", "dock", "canal"})),
        ("water", None),
        ("landuse", frozenset({"reservoir", "basin"})),
        ("leisure", frozenset({"swimming_pool", "marina"})),
    ),
    VEGETATION: (
        (
            "landuse",
            frozenset(
                {
                    "forest",
                    "grass",
                    "meadow",
                    "orchard",
                    "vineyard",
                    "village_green",
                    "recreation_ground",
                    "allotments",
                    "plant_nursery",
                    "greenfield",
                    "farmland",
                    "flowerbed",
                }
            ),
        ),
        ("leisure", frozenset({"park", "garden", "golf_course", "nature_reserve", "dog_park"})),
        ("natural", frozenset({"wood", "scrub", "grassland", "heath", "wetland", "shrubbery", "fell"})),
    ),
}

# Areas that exist in OSM but are not visible from above.
_HIDDEN_LOCATIONS = frozenset({"underground", "underwater"})
_TUNNEL_VALUES = frozenset({"yes", "culvert", "building_passage", "avalanche_protector"})
_NON_ROAD_HIGHWAYS = frozenset({"proposed", "abandoned", "razed", "construction", "platform", "corridor"})


def _tag(tags: Mapping[str, object], key: str) -> str | None:
    value = tags.get(key)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _is_hidden(tags: Mapping[str, object]) -> bool:
    if _tag(tags, "location") in _HIDDEN_LOCATIONS:
        return True
    if _tag(tags, "tunnel") in _TUNNEL_VALUES:
        return True
    layer = _parse_number(_tag(tags, "layer"))
    return layer is not None and layer < 0 and _tag(tags, "bridge") is None


def _parse_number(text: str | None) -> float | None:
    """Parse OSM numeric tags like ``"7"``, ``"7.5 m"``, ``"3;4"`` (first value); None if unusable."""
    if text is None:
        return None
    first = text.split(";")[0].strip().lower().removesuffix("m").strip()
    try:
        value = float(first.replace(",", "."))
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _is_highway_area(tags: Mapping[str, object]) -> bool:
    """Closed highway ways tagged ``area=yes`` (pedestrian squares, ...) are paved areas, not lines."""
    return _tag(tags, "highway") in ROAD_WIDTHS_M and _tag(tags, "area") == "yes"


def area_class(tags: Mapping[str, object]) -> int | None:
    """Class of a closed way / multipolygon from its tags, or None if it is not mapped to any class.

    When several rules match, the class painted last (``PAINT_ORDER``) wins, matching what the raster shows.
    """
    if _is_hidden(tags):
        return None
    for cid in reversed(PAINT_ORDER):
        if cid == ROAD and _is_highway_area(tags):
            return ROAD
        for key, values in AREA_RULES[cid]:
            value = _tag(tags, key)
            if value is None or value == "no":
                continue
            if values is None or value in values:
                return cid
    return None


def line_class_and_width(tags: Mapping[str, object]) -> tuple[int, float] | None:
    """(class, full width in metres) of a linear way drawn as a buffered line, or None.

    Roads use ``width`` when tagged, else ``lanes`` x 3.5 m, else a typical width for the highway type.
    """
    if _is_hidden(tags):
        return None
    highway = _tag(tags, "highway")
    if highway is not None and highway not in _NON_ROAD_HIGHWAYS and highway in ROAD_WIDTHS_M:
        width = _parse_number(_tag(tags, "width"))
        if width is None or not 0.5 <= width <= 100:
            lanes = _parse_number(_tag(tags, "lanes"))
            width = lanes * LANE_WIDTH_M if lanes is not None and 1 <= lanes <= 16 else ROAD_WIDTHS_M[highway]
        return ROAD, width
    waterway = _tag(tags, "waterway")
    if waterway in WATERWAY_WIDTHS_M:
        width = _parse_number(_tag(tags, "width"))
        if width is None or not 0.5 <= width <= 500:
            width = WATERWAY_WIDTHS_M[waterway]
        return WATER, width
    if _tag(tags, "natural") == "tree_row":
        return VEGETATION, TREE_ROW_WIDTH_M
    return None


def point_class_and_width(tags: Mapping[str, object]) -> tuple[int, float] | None:
    """(class, diameter in metres) of a node drawn as a disc (single trees), or None."""
    if _tag(tags, "natural") == "tree":
        return VEGETATION, TREE_DIAMETER_M
    return None


def is_coastline(tags: Mapping[str, object]) -> bool:
    """natural=coastline ways: land on the left, sea on the right of the way direction."""
    return _tag(tags, "natural") == "coastline"


# Every tag key the rule functions above read: sources may drop all other tags before classifying.
RULE_TAG_KEYS: frozenset[str] = frozenset(
    {key for rules in AREA_RULES.values() for key, _ in rules}
    | {"highway", "area", "waterway", "natural", "width", "lanes", "location", "tunnel", "layer", "bridge"}
)


def overpass_tag_filter() -> dict[str, bool | list[str]]:
    """The osmnx ``tags`` filter that fetches every element any rule above can use."""
    wanted: dict[str, set[str] | bool] = {"highway": True, "building": True}
    for rules in AREA_RULES.values():
        for key, values in rules:
            if values is None:
                wanted[key] = True
            elif wanted.get(key) is not True:
                wanted.setdefault(key, set()).update(values)  # type: ignore[union-attr]
    wanted.setdefault("waterway", set()).update(WATERWAY_WIDTHS_M)  # type: ignore[union-attr]
    wanted.setdefault("natural", set()).update({"tree_row", "tree", "coastline"})  # type: ignore[union-attr]
    return {k: (True if v is True else sorted(v)) for k, v in wanted.items()}  # type: ignore[arg-type]
