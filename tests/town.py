"""The hand-made tiny town (samples/tiny_town.osm): path, bbox and what it contains, shared by the tests."""

from __future__ import annotations

from pathlib import Path

from geodiff.classes import BUILDING, ROAD, VEGETATION, WATER

TOWN = Path(__file__).resolve().parent.parent / "samples" / "tiny_town.osm"
TOWN_BBOX = (7.4200, 43.7300, 7.4237, 43.7327)  # samples/make_tiny_town.py::TOWN_BBOX
# (class_id, kind) -> count inside TOWN_BBOX, as documented in samples/make_tiny_town.py
TOWN_COUNTS = {
    (BUILDING, "area"): 7,
    (ROAD, "area"): 1,
    (ROAD, "line"): 6,
    (WATER, "area"): 1,
    (WATER, "line"): 1,
    (WATER, "coastline"): 1,
    (VEGETATION, "area"): 2,
    (VEGETATION, "point"): 4,
}
