"""Training-time augmentations that make hand-labelled tiles look like the OpenStreetMap maps users give.

Users condition geodiff on OSM rasterizations, which differ from the hand-labelled training masks: roads are
centre lines buffered to a standard width per highway type, footprints are clean polygons, small or private
features are missing (incomplete mapping leaves them background), and towns come at other scales than the
training city. Two augmentations close that gap without new data:

* :func:`zoom` cuts a larger or smaller square than the training crop and resamples it to the crop size, so
  denser (many small buildings) and sparser layouts appear; the output stays at the model's resolution.
* :func:`osm_style` redraws a class map the way geodiff's rasterizer would draw OSM: roads as their medial
  axis buffered to the nearest width of :data:`geodiff.classes.ROAD_WIDTHS_M`, footprints squared off, small
  features dropped and whole features dropped to background (rarely to "unknown") as incomplete OSM does.

Only the map changes in :func:`osm_style`; the image stays the photo, so the model learns to draw a real road
around an OSM road line and real content where OSM maps nothing. Everything is driven by a
``numpy.random.Generator`` so training stays reproducible and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from geodiff.classes import BACKGROUND, BUILDING, IGNORE, ROAD, ROAD_WIDTHS_M, VEGETATION, WATER

# The widths the rasterizer gives the common urban highway types, in metres (unique, ascending).
STANDARD_ROAD_WIDTHS_M = np.array(
    sorted(
        {
            ROAD_WIDTHS_M[k]
            for k in (
                "service",
                "residential",
                "tertiary",
                "secondary",
                "primary",
                "trunk",
                "motorway",
                "footway",
                "track",
            )
        }
    )
)


@dataclass(frozen=True)
class MapAugment:
    """How often and how strongly the two augmentations apply (``[data]`` of a training config)."""

    zoom_prob: float = 0.0
    """Probability that a training crop is zoomed (0 = never, the behaviour before these augmentations)."""
    zoom_min: float = 0.7
    """Smallest source square as a multiple of the crop (< 1: zoomed in, a sparser layout)."""
    zoom_max: float = 1.6
    """Largest source square as a multiple of the crop (> 1: zoomed out, denser); capped by the tile size."""
    osm_style_prob: float = 0.0
    """Probability that a crop's map is redrawn OSM-style by :func:`osm_style` (0 = never)."""
    drop_prob: float = 0.15
    """Within an OSM-style map: probability that a building, water or vegetation feature is left unmapped."""

    @property
    def active(self) -> bool:
        return self.zoom_prob > 0 or self.osm_style_prob > 0


def zoom(
    image: np.ndarray, mask: np.ndarray, crop: int, scale: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random ``round(crop * scale)`` square of ``image``/``mask`` resampled to ``crop`` x ``crop``.

    The image is resampled with an antialiasing filter (Lanczos), the class map by nearest neighbour (ids are not
    averaged; IGNORE stays IGNORE).
    """
    t = mask.shape[0]
    side = int(np.clip(round(crop * scale), 8, t))
    r, c = (int(v) for v in rng.integers(0, t - side + 1, size=2))
    img = image[r : r + side, c : c + side]
    m = mask[r : r + side, c : c + side]
    if side == crop:
        return np.ascontiguousarray(img), np.ascontiguousarray(m)
    img = np.array(Image.fromarray(np.ascontiguousarray(img)).resize((crop, crop), Image.Resampling.LANCZOS))
    m = np.array(Image.fromarray(np.ascontiguousarray(m)).resize((crop, crop), Image.Resampling.NEAREST))
    return img, m


def road_centre_lines(road: np.ndarray, resolution_m: float) -> np.ndarray:
    """The road area redrawn as its medial axis buffered to the nearest standard OSM width (bool array).

    The medial axis is the ridge of the distance transform; each ridge pixel's local width (from its distance to
    the edge) snaps to the nearest width in :data:`STANDARD_ROAD_WIDTHS_M`, and the ridge is buffered by half
    that width, as the rasterizer buffers an OSM way.
    """
    if not road.any():
        return road.copy()
    dist = ndimage.distance_transform_edt(road)
    ridge = road & (dist >= ndimage.maximum_filter(dist, size=3) - 0.5) & (dist >= 1.0)
    out = np.zeros_like(road)
    widths_px = STANDARD_ROAD_WIDTHS_M / resolution_m
    # a pixel-centre distance overstates the half-width by half a pixel on each side
    snapped = np.abs((2 * dist[ridge] - 1)[:, None] - widths_px[None, :]).argmin(1)
    rows, cols = np.nonzero(ridge)
    for k in np.unique(snapped):
        seeds = np.zeros_like(road)
        sel = snapped == k
        seeds[rows[sel], cols[sel]] = True
        out |= ndimage.distance_transform_edt(~seeds) <= (widths_px[k] - 1) / 2
    return out


def osm_style(
    mask: np.ndarray, rng: np.random.Generator, resolution_m: float = 1.0, drop_prob: float = 0.15
) -> np.ndarray:
    """A hand-labelled class map redrawn the way geodiff draws OSM (see the module docstring); a new array.

    Paint order stays the rasterizer's (vegetation < water < road < building): new road pixels never cover a
    building, and road pixels the centre line no longer covers become background, as unmapped verges are.
    """
    out = mask.copy()
    # features OSM mappers leave out: each connected feature independently, mostly to background
    for cls in (BUILDING, WATER, VEGETATION):
        labels, n = ndimage.label(out == cls)
        if n == 0:
            continue
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
        drop = rng.random(n) < drop_prob
        drop |= sizes < 12  # sheds and tiny patches are rarely mapped
        to_unknown = rng.random(n) < 0.1
        for value, sel in ((BACKGROUND, drop & ~to_unknown), (IGNORE, drop & to_unknown)):
            ids = np.nonzero(sel)[0] + 1
            if len(ids):
                out[np.isin(labels, ids)] = value
    # footprints are clean polygons: square off jagged hand-drawn edges
    building = out == BUILDING
    squared = ndimage.binary_closing(ndimage.binary_opening(building, np.ones((3, 3))), np.ones((3, 3)))
    out[building & ~squared] = BACKGROUND
    out[squared & ~building & (out != IGNORE)] = BUILDING
    # roads: medial axis at a standard width
    road = out == ROAD
    lines = road_centre_lines(road, resolution_m)
    out[road & ~lines] = BACKGROUND
    out[lines & (out != BUILDING) & (out != IGNORE)] = ROAD
    return out


def augment_pair(
    image: np.ndarray,
    mask: np.ndarray,
    crop: int | None,
    settings: MapAugment,
    rng: np.random.Generator,
    resolution_m: float = 1.0,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Zoom and/or OSM-style one tile as ``settings`` say; ``None`` when neither applies (plain crop then)."""
    zoomed = crop is not None and rng.random() < settings.zoom_prob
    styled = rng.random() < settings.osm_style_prob
    if not zoomed and not styled:
        return None
    if zoomed:
        assert crop is not None
        scale = float(np.exp(rng.uniform(np.log(settings.zoom_min), np.log(settings.zoom_max))))
        image, mask = zoom(image, mask, crop, scale, rng)
    elif crop is not None and crop < mask.shape[0]:
        r, c = (int(v) for v in rng.integers(0, mask.shape[0] - crop + 1, size=2))
        image, mask = image[r : r + crop, c : c + crop], mask[r : r + crop, c : c + crop]
    if styled:
        mask = osm_style(mask, rng, resolution_m, settings.drop_prob)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)
