"""Features + grid -> semantic class raster.

Lines (roads, waterways, tree rows) and points (trees) are buffered by their width in the grid's metric CRS,
the sea is filled from natural=coastline ways, and shapes are burned in the class table's paint order so that
overlaps always resolve the same way.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from rasterio import features as rio_features
from shapely.geometry import box
from shapely.ops import linemerge, polygonize, unary_union

from geodiff.classes import BACKGROUND, PAINT_ORDER, WATER
from geodiff.errors import EmptyAreaError
from geodiff.grid import BBox, Grid, grid_for_bbox
from geodiff.progress import ProgressCallback, report, scaled
from geodiff.settings import Settings, get_settings

# How far (metres) beside a coastline segment we probe to decide which side is sea: far below any pixel size,
# far above float rounding at UTM coordinate magnitudes.
_COAST_PROBE_M = 0.05


def rasterize_features(
    features: gpd.GeoDataFrame,
    grid: Grid,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Burn a FeatureSet (see docs/ARCHITECTURE.md) into an (H, W) uint8 class map on ``grid``.

    Parameters
    ----------
    features
        GeoDataFrame with ``class_id``, ``width_m``, ``kind`` and geometry, in any CRS.
    grid
        Target grid; its CRS must be metric (widths are metres).
    progress
        Optional ``(fraction, message)`` callback.
    """
    report(progress, 0.0, "projecting features")
    out = np.full(grid.shape, BACKGROUND, dtype=np.uint8)
    if features is None or len(features) == 0:
        report(progress, 1.0, "empty")
        return out
    feats = features.to_crs(grid.crs) if features.crs is not None and features.crs != grid.crs else features
    max_width = float(feats["width_m"].max()) if len(feats) else 0.0
    frame = box(*grid.bounds)
    reach = frame.buffer(max_width / 2 + 2 * grid.resolution, join_style="mitre")
    feats = feats[feats.geometry.intersects(reach)]

    report(progress, 0.2, "buffering lines and points")
    coast_mask = (feats["kind"] == "coastline").to_numpy()
    coast = feats[coast_mask]
    feats = feats[~coast_mask]
    geoms = feats.geometry.to_numpy()
    widths = feats["width_m"].to_numpy(dtype=float)
    needs_buffer = widths > 0
    if needs_buffer.any():
        # Flat road ends would leave notches at junctions; round joins/caps look like real carriageways.
        geoms = geoms.copy()
        geoms[needs_buffer] = shapely.buffer(geoms[needs_buffer], widths[needs_buffer] / 2, quad_segs=4)
    class_ids = feats["class_id"].to_numpy(dtype=int)

    report(progress, 0.4, "filling sea from coastline")
    sea = sea_polygons(coast.geometry.to_numpy(), frame) if len(coast) else []

    report(progress, 0.5, "burning shapes")
    rank = {cid: i for i, cid in enumerate(PAINT_ORDER)}
    order = sorted(range(len(geoms)), key=lambda i: (rank.get(class_ids[i], -1), i))
    shapes: list[tuple[object, int]] = [(g, WATER) for g in sea]
    # Sea goes first among water so lakes/pools (same class) don't matter; everything else in paint order.
    water_rank = rank[WATER]
    pre = [(geoms[i], int(class_ids[i])) for i in order if rank.get(class_ids[i], -1) < water_rank]
    post = [(geoms[i], int(class_ids[i])) for i in order if rank.get(class_ids[i], -1) >= water_rank]
    shapes = [(g, v) for g, v in pre + shapes + post if g is not None and not g.is_empty]
    if shapes:
        rio_features.rasterize(shapes, out=out, transform=grid.transform, all_touched=False, dtype="uint8")
    report(progress, 1.0, "done")
    return out


def sea_polygons(coastlines: np.ndarray, frame: shapely.Polygon) -> list[shapely.Polygon]:
    """Faces of ``frame`` that lie on the sea side of the coastline ways.

    OSM coastlines have land on the left and sea on the right of the way direction. The frame is cut into faces
    by the coastlines; each face is voted sea or land by probing points just right/left of coastline segments.
    Coastlines ending inside the frame (clipped extracts) leave faces with mixed votes: the majority decides.
    """
    clipped = [g for g in shapely.intersection(coastlines, frame) if g is not None and not g.is_empty]
    if not clipped:
        return []
    parts = [p for g in clipped for p in getattr(g, "geoms", [g]) if p.geom_type == "LineString"]
    if not parts:
        return []
    clipped = _extend_open_ends(linemerge(parts), frame)
    faces = list(polygonize(unary_union([frame.exterior, *clipped])))
    if len(faces) < 1:
        return []
    # Segment midpoints and unit normals pointing right of the travel direction (sea side).
    coords = []
    for geom in clipped:
        for part in getattr(geom, "geoms", [geom]):
            if part.geom_type == "LineString" and len(part.coords) >= 2:
                coords.append(np.asarray(part.coords)[:, :2])
    if not coords:
        return []
    a = np.concatenate([c[:-1] for c in coords])
    b = np.concatenate([c[1:] for c in coords])
    d = b - a
    length = np.hypot(d[:, 0], d[:, 1])
    keep = length > 4 * _COAST_PROBE_M
    a, d, length = a[keep], d[keep], length[keep]
    mid = a + d / 2
    right = np.stack([d[:, 1], -d[:, 0]], axis=1) / length[:, None]
    tree = shapely.STRtree(faces)
    votes = np.zeros(len(faces))
    for sign in (1.0, -1.0):  # +1: probe right of the way (sea), -1: left (land)
        pts = shapely.points(mid + sign * _COAST_PROBE_M * right)
        pi, fi = tree.query(pts, predicate="within")
        np.add.at(votes, fi, sign * length[pi])
    return [f for f, v in zip(faces, votes, strict=True) if v > 0]


def _extend_open_ends(lines: shapely.Geometry, frame: shapely.Polygon) -> list[shapely.LineString]:
    """Prolong coastline ends that stop inside the frame (cut extracts) straight on to the frame edge.

    Without this a coastline that ends mid-frame cannot split land from sea; continuing along its last
    segment's direction is the least surprising guess.
    """
    diag = float(np.hypot(*(np.subtract(frame.bounds[2:], frame.bounds[:2]))))
    boundary = frame.exterior
    out = []
    for line in getattr(lines, "geoms", [lines]):
        coords = [tuple(c[:2]) for c in line.coords]
        if len(coords) < 2:
            continue
        if not line.is_closed:
            for end, prev, at_start in ((coords[-1], coords[-2], False), (coords[0], coords[1], True)):
                if boundary.distance(shapely.Point(end)) < 1e-6:
                    continue
                d = np.subtract(end, prev)
                norm = float(np.hypot(*d))
                if norm == 0:
                    continue
                far = tuple(np.add(end, d / norm * diag))
                ray = shapely.intersection(shapely.LineString([end, far]), frame)
                exit_pt = ray.coords[-1] if ray.geom_type == "LineString" and not ray.is_empty else None
                if exit_pt is None:
                    continue
                if at_start:
                    coords.insert(0, tuple(exit_pt[:2]))
                else:
                    coords.append(tuple(exit_pt[:2]))
        out.append(shapely.LineString(coords))
    return out


def rasterize_bbox(
    bbox: BBox,
    resolution: float | None = None,
    crs: str | None = None,
    osm_path: str | Path | None = None,
    vector_path: str | Path | None = None,
    class_field: str = "class",
    allow_empty: bool = False,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, Grid]:
    """Load features for ``bbox`` from a source and rasterize them; returns ``(class_map, grid)``.

    The grid is validated (size limit) before any data is read. Raises :class:`EmptyAreaError` when the area
    holds no mapped features unless ``allow_empty``.
    """
    from geodiff.osm import load_features  # heavy imports (osmnx) only when needed

    settings = settings or get_settings()
    res = resolution if resolution is not None else settings.default_resolution_m
    grid = grid_for_bbox(bbox, res, crs=crs, max_pixels=settings.max_pixels)
    feats = load_features(
        bbox,
        osm_path=osm_path,
        vector_path=vector_path,
        class_field=class_field,
        allow_empty=True,  # the empty check below also knows about --allow-empty
        settings=settings,
        progress=scaled(progress, 0.0, 0.6),
    )
    class_map = rasterize_features(feats, grid, progress=scaled(progress, 0.6, 1.0))
    if not allow_empty and not class_map.any():
        source = osm_path or vector_path or "Overpass"
        raise EmptyAreaError(
            f"no buildings, roads, water or vegetation from {source} fall inside bbox {bbox}: check the bbox "
            "(W,S,E,N order, right place?) and that the source covers it; pass --allow-empty to write an "
            "all-background map anyway"
        )
    return class_map, grid


def rasterize_to_file(
    bbox: BBox,
    out_path: str | Path,
    preview: str | Path | None = None,
    resolution: float | None = None,
    crs: str | None = None,
    osm_path: str | Path | None = None,
    vector_path: str | Path | None = None,
    class_field: str = "class",
    allow_empty: bool = False,
    overwrite: bool = False,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, Grid]:
    """:func:`rasterize_bbox`, then write the class-map GeoTIFF (and a colour PNG ``preview``).

    Outputs are checked before any data is read (existing files need ``overwrite``) and published together
    (map, style, preview: all or none). Returns ``(class_map, grid)``.
    """
    from geodiff.io import Transaction, write_class_map, write_class_preview

    tx = Transaction(overwrite)
    tx.claim([p for p in (out_path, preview) if p is not None])
    class_map, grid = rasterize_bbox(
        bbox, resolution=resolution, crs=crs, osm_path=osm_path, vector_path=vector_path,
        class_field=class_field, allow_empty=allow_empty, settings=settings, progress=progress,
    )  # fmt: skip
    tags = {**bbox.tags(), "SOURCE": str(osm_path or vector_path or "overpass")}
    with tx:
        write_class_map(out_path, class_map, grid, tags=tags, overwrite=overwrite, tx=tx)
        if preview is not None:
            write_class_preview(preview, class_map, overwrite=overwrite, tx=tx)
    return class_map, grid
