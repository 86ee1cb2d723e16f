"""User vector layers (GeoJSON, GeoPackage, ...) with a class attribute -> FeatureSet.

Polygons become areas, lines become buffered lines and points become discs. Line/point widths come from an
optional ``width`` attribute (metres, full width) or, when it is missing/unusable, from
:data:`DEFAULT_LINE_WIDTH_M` / :data:`DEFAULT_POINT_DIAMETER_M` per class.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from geodiff.classes import (
    BACKGROUND,
    BUILDING,
    CLASS_NAMES,
    ROAD,
    ROAD_WIDTHS_M,
    TREE_DIAMETER_M,
    TREE_ROW_WIDTH_M,
    VEGETATION,
    WATER,
    class_id,
)
from geodiff.errors import (
    CorruptFileError,
    DataError,
    GeodiffWarning,
    InputNotFoundError,
    UnsupportedFileError,
)
from geodiff.grid import LONLAT, BBox
from geodiff.osm.features import clip_to_bbox, empty_feature_set, lonlat_bounds
from geodiff.progress import ProgressCallback, report

SUPPORTED_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".fgb")

# Full width (metres) of a line feature without a usable ``width`` attribute.
DEFAULT_LINE_WIDTH_M: dict[int, float] = {
    BACKGROUND: 2.0,
    BUILDING: 2.0,  # walls/fences drawn as lines
    ROAD: ROAD_WIDTHS_M["road"],  # an unknown road: 6 m
    WATER: 5.0,  # between a stream and a canal
    VEGETATION: TREE_ROW_WIDTH_M,  # hedges, tree rows: 5 m
}
# Diameter (metres) of a point feature without a usable ``width`` attribute.
DEFAULT_POINT_DIAMETER_M: dict[int, float] = {
    BACKGROUND: 2.0,
    BUILDING: 4.0,
    ROAD: 4.0,
    WATER: 4.0,
    VEGETATION: TREE_DIAMETER_M,  # a single tree: 5 m
}


def _class_ids(values: pd.Series, class_field: str, path: Path) -> np.ndarray:
    """Map class names/ids to ids; DataError naming every bad value."""
    mapping: dict[object, int] = {}
    bad: list[str] = []
    for value in pd.unique(values):
        key: object = value
        try:
            if value is None or (isinstance(value, float) and np.isnan(value)):
                raise KeyError(value)
            if isinstance(value, (float, np.floating)) and float(value).is_integer():
                key = int(value)  # GeoPackage/GeoJSON often store ids as floats
            mapping[value] = class_id(key)  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            plain = value.item() if isinstance(value, np.generic) else value  # 7, not np.int32(7)
            bad.append(repr(plain) if value is not None else "<empty>")
    if bad:
        valid = ", ".join(f"{i}={n}" for i, n in enumerate(CLASS_NAMES))
        raise DataError(
            f"{path}: field {class_field!r} has values that are not geodiff classes: {', '.join(sorted(bad))}. "
            f"Use class names or ids ({valid})"
        )
    return np.asarray([mapping[v] for v in values], dtype="int64")


def read_vector_features(
    path: str | Path,
    bbox: BBox | str | tuple[float, float, float, float] | None = None,
    class_field: str = "class",
    layer: str | int | None = None,
    progress: ProgressCallback | None = None,
) -> gpd.GeoDataFrame:
    """Read a vector layer whose features carry a class attribute as a FeatureSet.

    Parameters
    ----------
    path
        GeoJSON (``.geojson``/``.json``), GeoPackage (``.gpkg``), Shapefile or FlatGeobuf, in any CRS
        (a layer without CRS is taken as lon/lat, as GeoJSON specifies).
    bbox
        Keep features intersecting this area (any CRS; tuples/text are lon/lat); ``None`` keeps all.
    class_field
        Attribute holding the class as a name (``"building"``, case-insensitive) or id (``1``).
    layer
        Layer name or index for multi-layer files (GeoPackage); default the first layer.
    progress
        Optional ``(fraction, message)`` callback.

    Returns
    -------
    geopandas.GeoDataFrame
        FeatureSet in EPSG:4326. Widths: the ``width`` attribute when it is a positive number, else
        :data:`DEFAULT_LINE_WIDTH_M` (lines) or :data:`DEFAULT_POINT_DIAMETER_M` (points) of the class;
        0 for areas.

    Raises
    ------
    InputNotFoundError, UnsupportedFileError, CorruptFileError
        Missing file, unknown extension, unreadable file.
    DataError
        ``class_field`` missing (the message lists the available fields) or holding values that are not
        class names/ids (the message lists them and the valid names).
    """
    import pyogrio

    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"vector file {path} does not exist: check the path")
    if not path.name.lower().endswith(SUPPORTED_SUFFIXES):
        raise UnsupportedFileError(
            f"{path} is not a supported vector file: use one of {', '.join(SUPPORTED_SUFFIXES)} "
            "(OSM files go to --osm)"
        )
    report(progress, 0.0, f"reading {path.name}")
    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception as exc:  # pyogrio raises DataSourceError/DataLayerError for unreadable files
        raise CorruptFileError(
            f"cannot read vector file {path}: {exc}. Check that it is a valid GeoJSON/GeoPackage"
        ) from exc
    fields = [str(f) for f in info["fields"]]
    if class_field not in fields:
        raise DataError(
            f"{path} has no field {class_field!r}; available fields: {', '.join(fields) or '(none)'}. "
            "Pass the attribute holding the class with --class-field"
        )
    crs = info.get("crs") or "EPSG:4326"
    read_bbox = None
    if bbox is not None:
        # Read only what intersects the area (in the layer's own CRS), then filter exactly in lon/lat.
        from geodiff.grid import parse_bbox, parse_crs, reproject_bounds

        read_bbox = tuple(reproject_bounds(parse_bbox(bbox), parse_crs(crs)))
    try:
        gdf = gpd.read_file(path, layer=layer, bbox=read_bbox, engine="pyogrio")
    except Exception as exc:
        raise CorruptFileError(
            f"cannot read vector file {path}: {exc}. Check that it is a valid GeoJSON/GeoPackage"
        ) from exc
    report(progress, 0.6, f"classifying {len(gdf):,} features")
    if gdf.crs is None:
        gdf = gdf.set_crs(LONLAT)
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if len(gdf) == 0:
        return empty_feature_set()
    gdf = gdf.to_crs(LONLAT)
    if bbox is not None:
        gdf = clip_to_bbox(gdf, lonlat_bounds(bbox))
        if len(gdf) == 0:
            return empty_feature_set()

    collections = (gdf.geom_type == "GeometryCollection").to_numpy()
    if collections.any():  # their members are ordinary areas, lines and points: classify each
        gdf = pd.concat([gdf[~collections], gdf[collections].explode(index_parts=False)])
    ids = _class_ids(gdf[class_field], class_field, path)
    gtype = gdf.geom_type.to_numpy()
    is_area = np.isin(gtype, ("Polygon", "MultiPolygon"))
    is_line = np.isin(gtype, ("LineString", "MultiLineString", "LinearRing"))
    is_point = np.isin(gtype, ("Point", "MultiPoint"))
    widths = np.zeros(len(gdf), dtype="float64")
    if "width" in gdf.columns:
        given = pd.to_numeric(gdf["width"], errors="coerce").to_numpy(dtype="float64")
        given = np.where(np.isfinite(given) & (given > 0), given, np.nan)
    else:
        given = np.full(len(gdf), np.nan)
    line_default = np.asarray([DEFAULT_LINE_WIDTH_M[c] for c in ids], dtype="float64")
    point_default = np.asarray([DEFAULT_POINT_DIAMETER_M[c] for c in ids], dtype="float64")
    widths = np.where(is_line, np.where(np.isnan(given), line_default, given), widths)
    widths = np.where(is_point, np.where(np.isnan(given), point_default, given), widths)
    kind = np.select([is_area, is_line, is_point], ["area", "line", "point"], default="")
    keep = kind != ""
    if not keep.all():
        warnings.warn(
            f"{path}: {int((~keep).sum())} feature(s) with geometry types geodiff cannot draw "
            f"({', '.join(sorted(set(gtype[~keep].astype(str))))}) were skipped",
            GeodiffWarning,
            stacklevel=2,
        )
    features = gpd.GeoDataFrame(
        {"class_id": ids[keep], "width_m": widths[keep], "kind": kind[keep].astype(object)},
        geometry=gpd.GeoSeries(gdf.geometry.to_numpy()[keep], crs=LONLAT),
        crs=LONLAT,
    )
    report(progress, 1.0, f"read {len(features):,} features from {path.name}")
    return features
