"""OSM and vector sources -> one :data:`FeatureSet` (see ``docs/ARCHITECTURE.md``).

A FeatureSet is a GeoDataFrame in EPSG:4326 with ``class_id`` (int), ``width_m`` (float, full width of lines
and point discs, 0 for areas), ``kind`` (``"area"``, ``"line"``, ``"point"``, ``"coastline"``) and
``geometry``. :func:`load_features` picks the source: a local OSM file, a vector layer, or Overpass.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd

from geodiff.errors import EmptyAreaError, InvalidParameterError
from geodiff.grid import BBox
from geodiff.osm.features import classify_elements, empty_feature_set, lonlat_bounds
from geodiff.progress import ProgressCallback, report, scaled
from geodiff.settings import Settings, get_settings

__all__ = ["classify_elements", "empty_feature_set", "load_features"]


def load_features(
    bbox: BBox | str | tuple[float, float, float, float],
    osm_path: str | Path | None = None,
    vector_path: str | Path | None = None,
    class_field: str = "class",
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
    *,
    allow_empty: bool = False,
) -> gpd.GeoDataFrame:
    """The FeatureSet of ``bbox`` from a local OSM file, a vector layer, or (neither given) Overpass.

    Parameters
    ----------
    bbox
        Area of interest (a :class:`~geodiff.grid.BBox` in any CRS, or ``"W,S,E,N"``/4-tuple in lon/lat).
        Features intersecting it are returned whole (not clipped).
    osm_path
        ``.osm``, ``.osm.bz2``, ``.osm.gz`` or ``.osm.pbf`` file (:func:`geodiff.osm.files.read_elements`).
    vector_path
        GeoJSON/GeoPackage with a class attribute (:func:`geodiff.osm.vector.read_vector_features`).
    class_field
        Class attribute of ``vector_path`` features (names or ids).
    settings
        Overpass/cache settings; default :func:`geodiff.settings.get_settings`.
    progress
        Optional ``(fraction, message)`` callback.
    allow_empty
        Policy for areas without any mappable feature: by default :class:`EmptyAreaError` is raised (most
        likely a wrong bbox); callers that can use an all-background map (the rasterizer of an open field)
        pass ``True`` and get an empty FeatureSet.

    Raises
    ------
    InvalidParameterError
        Both ``osm_path`` and ``vector_path`` given.
    EmptyAreaError
        Nothing mappable in the bbox and not ``allow_empty``.
    InputNotFoundError, UnsupportedFileError, CorruptFileError, DataError, OverpassError
        From the chosen source.
    """
    if osm_path is not None and vector_path is not None:
        raise InvalidParameterError("give either an OSM file (--osm) or a vector file (--vector), not both")
    bounds = lonlat_bounds(bbox)
    if vector_path is not None:
        from geodiff.osm.vector import read_vector_features

        features = read_vector_features(vector_path, bbox, class_field=class_field, progress=progress)
        source = str(vector_path)
    else:
        if osm_path is not None:
            from geodiff.osm.files import read_elements

            elements = read_elements(osm_path, bbox, progress=scaled(progress, 0.0, 0.9))
            source = str(osm_path)
        else:
            from geodiff.osm.overpass import fetch_elements

            settings = settings or get_settings()
            elements = fetch_elements(
                bbox, settings, allow_empty=allow_empty, progress=scaled(progress, 0.0, 0.9)
            )
            source = f"Overpass ({settings.overpass_url})"
        features = classify_elements(elements)
        report(progress, 1.0, f"{len(features):,} map features")
    if len(features) == 0 and not allow_empty:
        w, s, e, n = bounds
        raise EmptyAreaError(
            f"{source} has no buildings, roads, water or vegetation in {w:.6f},{s:.6f},{e:.6f},{n:.6f}: "
            "check the bbox (order W,S,E,N in lon/lat) and that the data covers it"
        )
    return features if len(features) else empty_feature_set()
