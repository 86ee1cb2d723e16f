"""Raw OSM elements (osmnx-style GeoDataFrame) -> the classified :data:`FeatureSet`.

Every OSM source (local files, Overpass) produces a GeoDataFrame with one column per tag key and the element
type/id (osmnx style: a ``(element, id)`` MultiIndex or ``element``/``id`` columns). This module turns it into
the FeatureSet described in ``docs/ARCHITECTURE.md`` using only the tag rules of :mod:`geodiff.classes`.
"""

from __future__ import annotations

from collections.abc import Hashable

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import LineString, MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from geodiff.classes import (
    RULE_TAG_KEYS,
    WATER,
    area_class,
    is_coastline,
    line_class_and_width,
    point_class_and_width,
)
from geodiff.grid import LONLAT, BBox, parse_bbox, reproject_bounds

FEATURE_COLUMNS = ("class_id", "width_m", "kind", "geometry")
KINDS = ("area", "line", "point", "coastline")

# What a row becomes: (kind, class_id, width_m, geometry conversion). Conversions: "keep", "to_polygon"
# (closed LineString that is an area by its tags) and "to_line" (polygon whose tags only make it a line,
# e.g. a closed highway loop that osmnx/osmium built as a polygon).
_Result = tuple[str, int, float, str] | None


def empty_feature_set() -> gpd.GeoDataFrame:
    """A FeatureSet with no rows (and the right columns and dtypes)."""
    return gpd.GeoDataFrame(
        {
            "class_id": pd.Series([], dtype="int64"),
            "width_m": pd.Series([], dtype="float64"),
            "kind": pd.Series([], dtype="object"),
        },
        geometry=gpd.GeoSeries([], crs=LONLAT),
        crs=LONLAT,
    )


def lonlat_bounds(bbox: BBox | str | tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` in lon/lat degrees of a bbox given in any CRS (or as text/tuple)."""
    box = parse_bbox(bbox)
    return tuple(float(v) for v in reproject_bounds(box, LONLAT))  # type: ignore[return-value]


def _element_types(gdf: gpd.GeoDataFrame) -> np.ndarray:
    """Element type per row ("node"/"way"/"relation"; "" when the source does not say)."""
    if isinstance(gdf.index, pd.MultiIndex) and "element" in gdf.index.names:
        return np.asarray(gdf.index.get_level_values("element"), dtype=object)
    for col in ("element", "element_type"):
        if col in gdf.columns:
            return gdf[col].astype(str).to_numpy(dtype=object)
    return np.full(len(gdf), "", dtype=object)


def _classify_one(tags: dict[str, object], geom_kind: str, element: str, closed: bool) -> _Result:
    """The rule decision for one distinct (tags, geometry kind, element type, closed) combination."""
    if geom_kind == "point":
        hit = point_class_and_width(tags)
        return ("point", hit[0], float(hit[1]), "keep") if hit else None
    if is_coastline(tags):
        # Coastlines stay lines even when closed (islands): their direction says where the sea is.
        return ("coastline", WATER, 0.0, "keep" if geom_kind == "line" else "to_line")
    if geom_kind == "area":
        # Multipolygon relations are areas by definition even without an area=yes tag.
        area_tags = {**tags, "area": "yes"} if element == "relation" and tags.get("area") is None else tags
        cid = area_class(area_tags)
        if cid is not None:
            return ("area", cid, 0.0, "keep")
        if element == "relation":
            return None
        hit = line_class_and_width(tags)
        return ("line", hit[0], float(hit[1]), "to_line") if hit else None
    # Lines: a closed way that is an area by its tags (building, park, ...) becomes a polygon.
    if closed and tags.get("area") != "no":
        cid = area_class(tags)
        if cid is not None:
            return ("area", cid, 0.0, "to_polygon")
    hit = line_class_and_width(tags)
    return ("line", hit[0], float(hit[1]), "keep") if hit else None


def _to_polygon(geom: BaseGeometry) -> BaseGeometry | None:
    coords = list(geom.coords) if isinstance(geom, LineString) else []
    if len(coords) < 4:
        return None
    return Polygon(coords)


def _to_line(geom: BaseGeometry) -> BaseGeometry | None:
    if isinstance(geom, Polygon):
        return LineString(geom.exterior.coords)
    if isinstance(geom, MultiPolygon):
        return shapely.MultiLineString([p.exterior.coords for p in geom.geoms])
    return geom


def _polygonal(geom: BaseGeometry | None) -> BaseGeometry | None:
    """Valid polygonal part of ``geom`` (make_valid can return collections with stray lines)."""
    if geom is None or geom.is_empty:
        return None
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom
    parts = [g for g in shapely.get_parts(geom) if isinstance(g, (Polygon, MultiPolygon))]
    if not parts:
        return None
    return shapely.union_all(parts)


def classify_elements(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Classify raw OSM elements into a FeatureSet.

    Parameters
    ----------
    gdf
        Raw elements in EPSG:4326 (osmnx style): one column per tag key, the element type in the index
        level or column ``element``, and geometries built from the OSM data (Points for nodes, LineStrings or
        Polygons for ways, (Multi)Polygons for multipolygon relations).

    Returns
    -------
    geopandas.GeoDataFrame
        The FeatureSet: ``class_id`` (int), ``width_m`` (float), ``kind`` (str) and ``geometry`` in
        EPSG:4326, with a fresh RangeIndex. Unclassified elements are dropped.

    Notes
    -----
    Points use the point rules; polygons the area rules (ways whose tags only make them lines, such as a
    closed highway loop, fall back to the line rules on their outline); lines the line rules, except closed
    ways that are areas by their tags (``building``, ``leisure=park``, ``highway=*`` + ``area=yes``), which
    become polygons; ``natural=coastline`` lines become ``kind="coastline"`` with class WATER, keeping their
    direction. Rules run once per distinct tag combination, so large areas stay fast.
    """
    if gdf is None or len(gdf) == 0:
        return empty_feature_set()
    if gdf.crs is not None and not gdf.crs.equals(LONLAT):
        gdf = gdf.to_crs(LONLAT)
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    type_ids = shapely.get_type_id(geoms)  # -1 for None
    valid = (type_ids >= 0) & ~shapely.is_empty(geoms)
    # 0 Point, 1 LineString, 2 LinearRing, 3 Polygon, 4 MultiPoint, 5 MultiLineString, 6 MultiPolygon, 7 GC
    geom_kind = np.select(
        [np.isin(type_ids, (0, 4)), np.isin(type_ids, (1, 2, 5)), np.isin(type_ids, (3, 6))],
        ["point", "line", "area"],
        default="",
    )
    closed = np.zeros(len(gdf), dtype=bool)
    is_ls = type_ids == 1
    if is_ls.any():
        closed[is_ls] = shapely.is_closed(geoms[is_ls])
    elements = _element_types(gdf)

    keys = sorted(k for k in RULE_TAG_KEYS if k in gdf.columns)
    columns = []
    for k in keys:
        col = gdf[k].to_numpy(dtype=object)
        missing = pd.isna(col)
        col = np.where(missing, None, col)
        columns.append(col)

    cache: dict[Hashable, _Result] = {}
    kinds: list[str] = []
    class_ids: list[int] = []
    widths: list[float] = []
    out_geoms: list[BaseGeometry] = []
    for i in np.flatnonzero(valid & (geom_kind != "")):
        values = tuple(c[i] for c in columns)
        key = (values, geom_kind[i], elements[i], bool(closed[i]))
        if key in cache:
            result = cache[key]
        else:
            tags = {k: v for k, v in zip(keys, values, strict=True) if v is not None}
            result = cache[key] = _classify_one(tags, str(geom_kind[i]), str(elements[i]), bool(closed[i]))
        if result is None:
            continue
        kind, cid, width, convert = result
        geom = geoms[i]
        if convert == "to_polygon":
            geom = _to_polygon(geom)
        elif convert == "to_line":
            geom = _to_line(geom)
        if kind == "area":
            geom = _polygonal(geom)
        if geom is None or geom.is_empty:
            continue
        kinds.append(kind)
        class_ids.append(int(cid))
        widths.append(float(width))
        out_geoms.append(geom)

    if not kinds:
        return empty_feature_set()
    features = gpd.GeoDataFrame(
        {
            "class_id": np.asarray(class_ids, dtype="int64"),
            "width_m": np.asarray(widths, dtype="float64"),
            "kind": np.asarray(kinds, dtype=object),
        },
        geometry=gpd.GeoSeries(out_geoms, crs=LONLAT),
        crs=LONLAT,
    )
    # Coastline pieces (clipped extracts give several runs per way) become one LineString each, so the
    # rasterizer only ever sees directed single lines.
    multi_coast = (features["kind"] == "coastline").to_numpy() & (
        features.geom_type != "LineString"
    ).to_numpy()
    if multi_coast.any():
        exploded = features[multi_coast].explode(index_parts=False)
        exploded = exploded[exploded.geom_type == "LineString"]
        features = pd.concat([features[~multi_coast], exploded], ignore_index=True)
    return features


def clip_to_bbox(gdf: gpd.GeoDataFrame, bounds: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
    """Rows of ``gdf`` whose geometry intersects the lon/lat box ``bounds`` (geometries are not cut)."""
    if len(gdf) == 0:
        return gdf
    idx = gdf.sindex.query(shapely.box(*bounds), predicate="intersects")
    return gdf.iloc[np.sort(idx)]
