"""Bounding box -> metric raster grid (CRS, affine transform, shape). Pure functions, no I/O.

A grid's origin is snapped to whole multiples of the resolution in its CRS, so the grids of a bbox and of any
sub-bbox at the same resolution share pixel edges: a sub-area's pixels line up exactly with the larger run's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from geodiff.errors import AreaTooLargeError, InvalidBBoxError, InvalidParameterError

LONLAT = CRS.from_epsg(4326)


@dataclass(frozen=True)
class BBox:
    """An axis-aligned box ``west, south, east, north`` in ``crs`` (lon/lat by default)."""

    west: float
    south: float
    east: float
    north: float
    crs: CRS = LONLAT

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.west, self.south, self.east, self.north)

    def __str__(self) -> str:
        return ",".join(f"{v:.6f}" for v in self.as_tuple())

    def tags(self) -> dict[str, str]:
        """GeoTIFF tags: ``BBOX`` (W,S,E,N) and ``BBOX_CRS``, the CRS those numbers are in."""
        return {"BBOX": str(self), "BBOX_CRS": self.crs.to_string()}


def parse_crs(value: str | int | CRS) -> CRS:
    """A pyproj CRS from ``"EPSG:32632"``, ``32632``, WKT or a CRS; clear error otherwise."""
    if isinstance(value, CRS):
        return value
    try:
        return CRS.from_user_input(value)
    except CRSError as exc:
        raise InvalidParameterError(
            f"unknown CRS {value!r}: give an EPSG code like EPSG:32632 or a WKT/PROJ string"
        ) from exc


def parse_bbox(text: str | tuple[float, float, float, float] | BBox, crs: str | CRS | None = None) -> BBox:
    """Parse ``"W,S,E,N"`` (or a 4-tuple) into a validated :class:`BBox`.

    Raises :class:`InvalidBBoxError` for anything that is not four finite numbers, an inverted or empty box,
    or (for geographic CRSs) latitudes outside [-90, 90] / longitudes outside [-180, 180].
    """
    if isinstance(text, BBox):
        return validate_bbox(text)
    if isinstance(text, str):
        parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p != ""]
        if len(parts) != 4:
            raise InvalidBBoxError(
                f"bbox {text!r} must be four numbers W,S,E,N (e.g. 7.418,43.732,7.422,43.735 in lon/lat)"
            )
        try:
            values = tuple(float(p) for p in parts)
        except ValueError as exc:
            raise InvalidBBoxError(f"bbox {text!r} must be four numbers W,S,E,N; {exc}") from exc
    else:
        values = tuple(float(v) for v in text)
        if len(values) != 4:
            raise InvalidBBoxError(f"bbox {text!r} must have four values W,S,E,N")
    return validate_bbox(BBox(*values, crs=parse_crs(crs) if crs is not None else LONLAT))


def validate_bbox(bbox: BBox) -> BBox:
    w, s, e, n = bbox.as_tuple()
    if not all(math.isfinite(v) for v in (w, s, e, n)):
        raise InvalidBBoxError(f"bbox {bbox} has non-finite values")
    if bbox.crs.is_geographic:
        for lat in (s, n):
            if not -90 <= lat <= 90:
                raise InvalidBBoxError(
                    f"latitude {lat} is outside [-90, 90]: the bbox order is W,S,E,N (lon,lat,lon,lat)"
                )
        for lon in (w, e):
            if not -180 <= lon <= 180:
                raise InvalidBBoxError(f"longitude {lon} is outside [-180, 180]: the bbox order is W,S,E,N")
    if bbox.crs.is_geographic and w > 90 and e < -90 and s < n:  # e.g. 179.9,-17,-179.9,-16 (Fiji)
        raise InvalidBBoxError(
            f"bbox {bbox} crosses the antimeridian (180 degrees): split it into two bboxes, one on each side "
            f"({w:g},{s:g},180,{n:g} and -180,{s:g},{e:g},{n:g})"
        )
    if w >= e or s >= n:
        what = "inverted" if (w > e or s > n) else "degenerate (zero width or height)"
        raise InvalidBBoxError(f"bbox {bbox} is {what}: give W,S,E,N with west < east and south < north")
    return bbox


def utm_crs_for(lon: float, lat: float) -> CRS:
    """The WGS84 UTM zone CRS containing (lon, lat), e.g. EPSG:32632 for Monaco."""
    zone = int((lon + 180) // 6) % 60 + 1
    # Norway/Svalbard exceptions are ignored on purpose: distortion is small and results stay predictable.
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def check_metric_crs(crs: CRS) -> None:
    """Refuse an output grid CRS that is not projected in metres (the model's scale is metres per pixel)."""
    if crs.is_geographic:
        raise InvalidParameterError(
            f"output CRS {crs.to_string()} is geographic (degrees); choose a projected CRS in metres, "
            "e.g. the UTM zone (leave --crs out to get it automatically)"
        )
    units = {(a.unit_name or "").lower() for a in crs.axis_info[:2]}
    if not crs.is_projected or not units <= {"metre", "meter", "metres", "meters"}:
        raise InvalidParameterError(
            f"output CRS {crs.to_string()} has units of {', '.join(sorted(units)) or 'unknown'}, not metres: road "
            "widths and the model's ground resolution are in metres; choose a metric CRS (e.g. the UTM zone: "
            "leave --crs out)"
        )
    if crs.to_epsg() in (3857, 900913, 3395):
        raise InvalidParameterError(
            f"output CRS {crs.to_string()} (Web Mercator) is metric only at the equator: its 'metres' are "
            f"1/cos(latitude) ground metres, so the model would see the wrong scale; leave --crs out (local UTM "
            "zone) or choose an equal-scale CRS"
        )


def bbox_centre_lonlat(bbox: BBox) -> tuple[float, float]:
    """The bbox centre in lon/lat (whatever CRS the bbox is in)."""
    w, s, e, n = bbox.as_tuple()
    if bbox.crs.is_geographic and bbox.crs.equals(LONLAT, ignore_axis_order=True):
        return (w + e) / 2, (s + n) / 2
    t = Transformer.from_crs(bbox.crs, LONLAT, always_xy=True)
    lon0, lat0, lon1, lat1 = t.transform_bounds(w, s, e, n, densify_pts=21)
    return (lon0 + lon1) / 2, (lat0 + lat1) / 2


def reproject_bounds(bbox: BBox, dst: CRS) -> tuple[float, float, float, float]:
    """Bounds of ``bbox`` in ``dst``, densified so curved edges are enclosed."""
    if bbox.crs == dst:
        return bbox.as_tuple()
    t = Transformer.from_crs(bbox.crs, dst, always_xy=True)
    return t.transform_bounds(*bbox.as_tuple(), densify_pts=21)


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: ``crs``, ``transform`` (pixel -> CRS coordinates), ``width`` x ``height``."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def resolution(self) -> float:
        return float(self.transform.a)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid CRS."""
        left, top = self.transform.c, self.transform.f
        return (left, top - self.height * self.resolution, left + self.width * self.resolution, top)

    def pixel_to_world(
        self, row: np.ndarray | float, col: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """CRS coordinates of pixel centres (row, col may be fractional arrays)."""
        x, y = self.transform @ (np.asarray(col, dtype=float) + 0.5, np.asarray(row, dtype=float) + 0.5)
        return np.asarray(x), np.asarray(y)

    def world_to_pixel(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (row, col) whose centre is at (x, y); inverse of :meth:`pixel_to_world`."""
        col, row = ~self.transform @ (np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        return np.asarray(row) - 0.5, np.asarray(col) - 0.5

    def window(self, row_off: int, col_off: int, height: int, width: int) -> Grid:
        """The sub-grid of a pixel window (may extend past this grid's edges)."""
        return Grid(self.crs, self.transform @ Affine.translation(col_off, row_off), width, height)

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        t = Transformer.from_crs(self.crs, LONLAT, always_xy=True)
        return t.transform_bounds(*self.bounds, densify_pts=21)


def grid_for_bbox(
    bbox: BBox,
    resolution: float,
    crs: CRS | str | None = None,
    max_pixels: int | None = None,
) -> Grid:
    """The grid covering ``bbox`` at ``resolution`` metres (CRS units) per pixel.

    ``crs`` defaults to the UTM zone of the bbox centre, whatever CRS the bbox is given in (it only describes
    the area); an explicit ``crs`` must be projected in metres. The grid is snapped outward to whole multiples
    of ``resolution`` so nested bboxes share pixel edges.
    """
    if not (isinstance(resolution, (int, float)) and math.isfinite(resolution) and resolution > 0):
        raise InvalidParameterError(
            f"resolution must be a positive number of metres per pixel, got {resolution!r}"
        )
    validate_bbox(bbox)
    if crs is not None:
        target = parse_crs(crs)
        check_metric_crs(target)
    else:  # the bbox's CRS only describes the area: the grid is always in metres, in the local UTM zone
        lon0, lat0 = bbox_centre_lonlat(bbox)
        target = utm_crs_for(lon0, lat0)
    left, bottom, right, top = reproject_bounds(bbox, target)
    # A small tolerance keeps exact multiples from growing an extra pixel through float noise.
    eps = resolution * 1e-6
    x0 = math.floor((left + eps) / resolution) * resolution
    y1 = math.ceil((top - eps) / resolution) * resolution
    width = max(1, math.ceil((right - eps - x0) / resolution))
    height = max(1, math.ceil((y1 - bottom - eps) / resolution))
    if max_pixels is not None and width * height > max_pixels:
        need = math.sqrt(width * height / max_pixels) * resolution
        raise AreaTooLargeError(
            f"the bbox at {resolution:g} m/px is {width} x {height} = {width * height:,} pixels, over the limit "
            f"of {max_pixels:,}: use a smaller bbox, a coarser resolution (>= {need:.2f} m/px), or raise "
            "GEODIFF_MAX_PIXELS"
        )
    return Grid(target, Affine(resolution, 0.0, x0, 0.0, -resolution, y1), width, height)
