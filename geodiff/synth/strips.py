"""Strips of window rows, the unit of work: each is rasterized and denoised on its own, here or on a Dask worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from geodiff.grid import BBox
from geodiff.noise import location_noise, place_key
from geodiff.progress import ProgressCallback
from geodiff.synth.canvas import _canvas_generator, _step_noise, _to_uint8, denoise_canvas

if TYPE_CHECKING:
    import geopandas as gpd

    from geodiff.model import GeodiffModel
    from geodiff.synth.plan import SynthPlan


@dataclass
class StripResult:
    """One strip's denoised canvas rows, split so strips can be computed anywhere and assembled exactly.

    Rows ``[0, head)`` (the window row shared with the previous strip) and ``[keep, height)`` (the one shared
    with the next) stay float32, since assembly cross-fades them; the rows in between are final uint8. When the
    two shared bands overlap (strips of two window rows) the whole strip stays float32 in ``full``.
    """

    index: int
    class_map: np.ndarray  # uint8 rows [0, keep) of the strip's map
    head: np.ndarray | None = None
    mid: np.ndarray | None = None
    tail: np.ndarray | None = None
    full: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}


def strip_rows(plan: SynthPlan, s: int) -> tuple[int, int, int, int]:
    """``(top, height, keep, head)`` of strip ``s``: canvas row, height, rows it finalises, shared head rows."""
    lay, n = plan.layout, len(plan.strips)
    first, stop = plan.strips[s]
    top = lay.rows[first]
    height = lay.rows[stop - 1] + lay.tile - top
    keep = height if s == n - 1 else lay.rows[stop - 1] - top  # the last window row goes on to the next strip
    return top, height, keep, (lay.tile if s > 0 else 0)


STRIP_FEATURE_MARGIN_M = 250.0
"""Features this close to a strip are sent with it: buffered lines (the widest roads) reach into it."""


def strip_features(plan: SynthPlan, features: gpd.GeoDataFrame, s: int) -> gpd.GeoDataFrame:
    """The part of ``features`` strip ``s`` can see (what a distributed task is sent): everything near the
    strip, and every coastline (the sea is filled from coastlines that may lie far outside the strip)."""
    import shapely

    from geodiff.osm.features import lonlat_bounds

    if len(features) == 0:
        return features
    top, height, _, _ = strip_rows(plan, s)
    x0, y0, x1, y1 = plan.canvas_grid().window(top, 0, height, plan.layout.width).bounds
    m = STRIP_FEATURE_MARGIN_M
    box = shapely.box(*lonlat_bounds(BBox(x0 - m, y0 - m, x1 + m, y1 + m, crs=plan.grid.crs)))
    keep = np.zeros(len(features), bool)
    keep[features.sindex.query(box, predicate="intersects")] = True
    keep |= (features["kind"] == "coastline").to_numpy()
    return features.iloc[np.flatnonzero(keep)]  # original order: the rasterizer sees what it would have


def compute_strip(
    plan: SynthPlan,
    model: GeodiffModel,
    features: gpd.GeoDataFrame,
    s: int,
    progress: ProgressCallback | None = None,
) -> StripResult:
    """Rasterize and denoise strip ``s`` of ``plan`` on its own: no other strip is needed."""
    from geodiff.rasterize import rasterize_features

    lay, f = plan.layout, model.latent_factor
    top, height, keep, head = strip_rows(plan, s)
    key = place_key(plan.grid.crs)
    class_map = rasterize_features(features, plan.canvas_grid().window(top, 0, height, lay.width))
    lat_r, lat_c = (lay.canvas_row + top) // f, lay.canvas_col // f
    noise = location_noise(plan.seed, key, lat_r, lat_c, height // f, lay.width // f, model.latent_channels)
    rgb = denoise_canvas(
        model, class_map, noise, plan.steps, plan.sampler, plan.batch_size, lay.overlap, plan.guidance_scale,
        _canvas_generator(plan.seed, key, lat_r, lat_c), progress,
        _step_noise(plan.seed, key, lat_r, lat_c, height // f, lay.width // f, model.latent_channels),
    )  # fmt: skip
    tail = rgb[keep:] if keep < height else None
    if head > keep:
        return StripResult(s, class_map[:keep], full=rgb)
    return StripResult(
        s, class_map[:keep], head=rgb[:head] if head else None, mid=_to_uint8(rgb[head:keep]), tail=tail
    )
