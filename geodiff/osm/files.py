"""Local OSM files (.osm, .osm.bz2, .osm.gz, .osm.pbf) -> raw elements, read with pyosmium.

pyosmium reads every format in C++, keeps node locations for way geometries and assembles multipolygon
areas. Only objects carrying a tag key some rule in :mod:`geodiff.classes` uses reach Python, so even a
whole-city extract reads in about a second. Objects whose geometry cannot be built (clipped extracts with
missing nodes or incomplete multipolygons) are skipped, not fatal.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import osmium
import pandas as pd
import shapely

from geodiff.classes import RULE_TAG_KEYS, is_coastline, overpass_tag_filter
from geodiff.errors import (
    CorruptFileError,
    GeodiffError,
    GeodiffWarning,
    InputNotFoundError,
    UnsupportedFileError,
)
from geodiff.grid import LONLAT, BBox
from geodiff.osm.features import clip_to_bbox, lonlat_bounds
from geodiff.progress import ProgressCallback, report

SUPPORTED_SUFFIXES = (".osm", ".osm.bz2", ".osm.gz", ".osm.pbf", ".pbf", ".xml", ".xml.bz2", ".xml.gz")

# Objects without any of these keys can never be classified, so the C++ filter drops them early.
_FILTER_KEYS = tuple(sorted(set(overpass_tag_filter())))
# Tags kept on the rows: everything the rules read, plus a few for humans inspecting the frame.
_KEEP_TAGS = RULE_TAG_KEYS | {"name", "type"}


def osm_file_format(path: Path) -> str:
    """The supported suffix ``path`` ends with (lower case); raise UnsupportedFileError otherwise."""
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise UnsupportedFileError(
        f"{path} is not a supported OSM file: use one of {', '.join(SUPPORTED_SUFFIXES[:4])} "
        "(or pass a GeoJSON/GeoPackage with --vector)"
    )


def _tags(obj: osmium.osm.OSMObject) -> dict[str, str]:
    return {t.k: t.v for t in obj.tags if t.k in _KEEP_TAGS}


def _partial_line_wkb(way: osmium.osm.Way) -> bytes | None:
    """The parts of a way whose nodes are present, as a MultiLineString in drawn order.

    Clipped extracts keep ways that leave the clip but drop their outside nodes; joining the remaining runs
    with straight chords could cut across the area, so each run of present nodes becomes its own part.
    """
    runs: list[list[tuple[float, float]]] = [[]]
    for nd in way.nodes:
        if nd.location.valid():
            runs[-1].append((nd.location.lon, nd.location.lat))
        elif runs[-1]:
            runs.append([])
    parts = [r for r in runs if len(r) >= 2]
    if not parts:
        return None
    return shapely.to_wkb(shapely.MultiLineString(parts))


def _check_complete(path: Path, n_tagged_nodes: int, n_ways: int, n_broken: int) -> None:
    """Catch files that end early: OSM files list nodes, then ways, then relations, so a download cut off
    (even exactly at a block boundary, which parses cleanly) loses the ways first, or leaves ways whose nodes
    were never written."""
    if n_ways == 0 and (n_tagged_nodes > 0 or _any_node(path)):
        raise CorruptFileError(
            f"OSM file {path} holds nodes but not a single way: it looks truncated (a download that stopped "
            "early); download it again (e.g. from https://download.geofabrik.de) or export it anew"
        )
    if n_ways >= 20 and n_broken > 0.2 * n_ways:
        warnings.warn(
            f"{path}: {n_broken} of {n_ways} mapped ways refer to nodes missing from the file; it may be truncated "
            "or cut without complete ways (osmium extract --strategy complete_ways fixes the latter)",
            GeodiffWarning,
            stacklevel=3,
        )


def _any_node(path: Path) -> bool:
    """Whether the file has any node at all (the main pass's tag filter hides untagged ones)."""
    return next(iter(osmium.FileProcessor(str(path), osmium.osm.NODE)), None) is not None


def read_elements(
    path: str | Path,
    bbox: BBox | str | tuple[float, float, float, float] | None = None,
    progress: ProgressCallback | None = None,
) -> gpd.GeoDataFrame:
    """Read the raw OSM elements of a local file that intersect ``bbox``.

    Parameters
    ----------
    path
        ``.osm``, ``.osm.bz2``, ``.osm.gz`` or ``.osm.pbf`` file.
    bbox
        Area of interest (any CRS; tuples and ``"W,S,E,N"`` text are lon/lat). Elements whose geometry
        intersects it are kept, uncut. ``None`` keeps everything.
    progress
        Optional ``(fraction, message)`` callback.

    Returns
    -------
    geopandas.GeoDataFrame
        osmnx-style elements in EPSG:4326, indexed by ``(element, id)`` with one column per kept tag key
        (the keys :data:`geodiff.classes.RULE_TAG_KEYS` plus ``name``/``type``). Nodes are Points, ways are
        LineStrings or (when osmium assembled a valid area from a closed way) Polygons, multipolygon
        relations are (Multi)Polygons. ``natural=coastline`` ways are always LineStrings in their drawn
        direction. Feed it to :func:`geodiff.osm.features.classify_elements`.

    Raises
    ------
    InputNotFoundError
        ``path`` does not exist.
    UnsupportedFileError
        The extension is not a supported OSM format.
    CorruptFileError
        The file cannot be parsed (truncated download, wrong content).
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"OSM file {path} does not exist: check the path")
    if path.is_dir():
        raise UnsupportedFileError(
            f"{path} is a folder: give an OSM file ({', '.join(SUPPORTED_SUFFIXES[:4])})"
        )
    osm_file_format(path)
    bounds = lonlat_bounds(bbox) if bbox is not None else None

    report(progress, 0.0, f"reading {path.name}")
    nodes: list[tuple[int, bytes, dict[str, str]]] = []
    ways: dict[int, tuple[bytes | None, dict[str, str]]] = {}
    way_areas: dict[int, bytes] = {}
    relation_areas: list[tuple[int, bytes, dict[str, str]]] = []
    factory = osmium.geom.WKBFactory()
    n_ways_seen = n_ways_broken = 0
    try:
        processor = (
            osmium.FileProcessor(str(path))
            .with_locations()
            .with_areas(osmium.filter.KeyFilter(*_FILTER_KEYS))
            .with_filter(osmium.filter.KeyFilter(*_FILTER_KEYS))
        )
        for obj in processor:
            # Broken objects (missing node locations, unclosable rings) are skipped one by one.
            try:
                if obj.is_node():
                    nodes.append((obj.id, factory.create_point(obj), _tags(obj)))
                elif obj.is_way():
                    n_ways_seen += 1
                    try:
                        wkb = factory.create_linestring(obj)
                    except (osmium.InvalidLocationError, RuntimeError):
                        n_ways_broken += 1
                        wkb = _partial_line_wkb(obj)
                    ways[obj.id] = (wkb, _tags(obj))
                elif obj.is_area():
                    wkb = factory.create_multipolygon(obj)
                    if obj.from_way():
                        way_areas[obj.orig_id()] = wkb
                    else:
                        relation_areas.append((obj.orig_id(), wkb, _tags(obj)))
            except (osmium.InvalidLocationError, RuntimeError):
                continue
    except GeodiffError:
        raise
    except Exception as exc:  # pyosmium reports parse errors as RuntimeError and friends
        raise CorruptFileError(
            f"cannot read OSM file {path}: {exc}. The file is damaged or not OSM data; download it again "
            "(e.g. from https://download.geofabrik.de) or export it anew"
        ) from exc
    _check_complete(path, len(nodes), n_ways_seen, n_ways_broken)
    report(progress, 0.7, f"building geometries for {path.name}")

    index: list[tuple[str, int]] = []
    wkbs: list[bytes] = []
    tag_rows: list[dict[str, str]] = []
    for nid, wkb, tags in nodes:
        index.append(("node", nid))
        wkbs.append(wkb)
        tag_rows.append(tags)
    for wid, (line_wkb, tags) in ways.items():
        # One row per way: the assembled area if osmium built one (closed ways), else the line. Coastlines
        # keep their line so the direction (land on the left) survives.
        area_wkb = way_areas.get(wid)
        wkb = area_wkb if area_wkb is not None and not is_coastline(tags) else line_wkb
        if wkb is None:
            continue
        index.append(("way", wid))
        wkbs.append(wkb)
        tag_rows.append(tags)
    for rid, wkb, tags in relation_areas:
        index.append(("relation", rid))
        wkbs.append(wkb)
        tag_rows.append(tags)

    geoms = shapely.from_wkb(wkbs, on_invalid="ignore") if wkbs else np.array([], dtype=object)
    # A single-way area comes back as a one-part MultiPolygon; a plain Polygon is what osmnx gives.
    geoms = np.asarray(geoms, dtype=object)
    parts = shapely.get_num_geometries(geoms)
    single = (shapely.get_type_id(geoms) == 6) & (parts == 1)
    if single.any():
        geoms[single] = shapely.get_geometry(geoms[single], 0)
    frame = pd.DataFrame.from_records(tag_rows) if tag_rows else pd.DataFrame()
    gdf = gpd.GeoDataFrame(
        frame,
        geometry=gpd.GeoSeries(geoms, crs=LONLAT),
        crs=LONLAT,
    )
    gdf.index = pd.MultiIndex.from_tuples(index, names=["element", "id"]) if index else gdf.index
    gdf = gdf[~(gdf.geometry.isna() | gdf.geometry.is_empty)]
    if bounds is not None:
        gdf = clip_to_bbox(gdf, bounds)
    report(progress, 1.0, f"read {len(gdf):,} OSM elements from {path.name}")
    return gdf
