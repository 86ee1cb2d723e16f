"""Area -> semantic map -> tiled, blended latent diffusion -> mosaicked, georeferenced GeoTIFF.

:func:`plan_synthesis` computes everything a run will do before any heavy work (grid, windows, strips, outputs,
optionally the estimated time: what ``--dry-run`` prints); :func:`synthesize` runs a plan. The canvas (the bbox
grid grown to whole windows on the global window lattice) is denoised by :class:`geodiff.pipeline.GeodiffPipeline`
in overlapping windows whose predictions are blended at every step.

Memory stays bounded for large areas: the canvas is processed in strips of window rows; consecutive strips
share one window row, and their results are cross-faded over it. The initial noise is one field for the whole
world keyed by seed and place (:mod:`geodiff.noise`), so the same place and seed give the same pixels whatever
command or bbox they are part of.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geodiff.errors import AreaTooLargeError, InvalidParameterError, ModelError
from geodiff.grid import BBox, Grid, grid_for_bbox, parse_bbox
from geodiff.models import ModelRef, resolve_device, resolve_model
from geodiff.noise import location_noise, place_key
from geodiff.options import OutputOptions, Sampler, SamplingOptions, SourceOptions, options_from
from geodiff.progress import ProgressCallback, report
from geodiff.provenance import run_tags as provenance  # the tags of a run's outputs
from geodiff.settings import Settings, get_settings
from geodiff.tiling import Layout, layout_for, split_rows

if TYPE_CHECKING:
    import geopandas as gpd
    import torch

    from geodiff.model import GeodiffModel

SAMPLERS: tuple[str, ...] = ("dpm", "ddpm")
DEFAULT_STEPS = {"dpm": 20, "ddpm": 1000}
"""Steps when none are given: DPM-Solver++ 2M converges in ~20; DDPM is the 1000-step ancestral reference."""


MapSource = SourceOptions  # the older name of the same value


@dataclass
class SynthPlan:
    """What a run will do, computed before any heavy work (also what ``--dry-run`` prints).

    Build with :func:`plan_synthesis`; run with :func:`synthesize`.
    """

    bbox: BBox
    grid: Grid
    layout: Layout
    strips: list[tuple[int, int]]
    model: ModelRef
    seed: int
    steps: int
    sampler: str
    guidance_scale: float
    device: str
    batch_size: int
    blend: bool
    source: SourceOptions = field(default_factory=SourceOptions)
    out_path: Path | None = None
    mask_path: Path | None = None
    overwrite: bool = False
    cog: bool = False
    seconds_estimate: float | None = None

    @property
    def windows(self) -> int:
        """U-Net windows over all strips (strips share one window row, which is denoised twice)."""
        return self.layout.count + sum(len(self.layout.cols) for _ in self.strips[1:])

    @property
    def outputs(self) -> list[Path]:
        return [p for p in (self.out_path, self.mask_path) if p is not None]

    def canvas_grid(self) -> Grid:
        """The grid of the whole canvas: the bbox grid grown to whole windows on the lattice."""
        lay, (g_row, g_col) = self.layout, global_origin(self.grid)
        return self.grid.window(lay.canvas_row - g_row, lay.canvas_col - g_col, lay.height, lay.width)

    def window_edges(self) -> tuple[list[int], list[int]]:
        """Rows and columns of the output where a window starts or ends (where seams would show)."""
        lay, (g_row, g_col) = self.layout, global_origin(self.grid)
        off_r, off_c = g_row - lay.canvas_row, g_col - lay.canvas_col

        def edges(origins: tuple[int, ...], off: int, size: int) -> list[int]:
            cuts = {o - off for o in origins} | {o + lay.tile - off for o in origins}
            return sorted(c for c in cuts if 0 < c < size)

        return edges(lay.rows, off_r, self.grid.height), edges(lay.cols, off_c, self.grid.width)

    def describe(self) -> str:
        g = self.grid
        area_km2 = g.width * g.height * g.resolution**2 / 1e6
        guidance = f", guidance {self.guidance_scale:g}" if self.guidance_scale > 1 else ""
        lines = [
            f"grid: {g.width} x {g.height} px at {g.resolution:g} m/px in {g.crs.to_string()} ({area_km2:.3f} km^2)",
            f"windows: {self.windows} of {self.layout.tile} px ({len(self.layout.rows)} rows x "
            f"{len(self.layout.cols)} cols, {self.layout.overlap} px overlap) in {len(self.strips)} strip(s)",
            f"sampler: {self.sampler}, {self.steps} steps{guidance}, batch {self.batch_size}, device {self.device}",
            f"model: {self.model.name}",
        ]
        if self.outputs:
            lines.append("outputs: " + ", ".join(str(p) for p in self.outputs))
        if self.seconds_estimate is not None:
            lines.append(f"estimated time: {_fmt_seconds(self.seconds_estimate)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (``--dry-run --progress json``, the QGIS plugin's cost line)."""
        g = self.grid
        return {
            "width": g.width,
            "height": g.height,
            "resolution_m": g.resolution,
            "crs": g.crs.to_string(),
            "area_km2": round(g.width * g.height * g.resolution**2 / 1e6, 6),
            "windows": self.windows,
            "strips": len(self.strips),
            "steps": self.steps,
            "sampler": self.sampler,
            "guidance_scale": self.guidance_scale,
            "device": self.device,
            "model": self.model.name,
            "outputs": [str(p) for p in self.outputs],
            "cog": self.cog,
            "seconds_estimate": None if self.seconds_estimate is None else round(self.seconds_estimate, 1),
        }


@dataclass
class SynthResult:
    """A finished run: where the outputs are, their grid, and how long it took."""

    image_path: Path
    mask_path: Path | None
    grid: Grid
    seconds: float
    plan: SynthPlan
    tags: dict[str, str] = field(default_factory=dict)


def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def window_overlap(tile: int, latent_factor: int, blend: bool) -> int:
    """Window overlap in pixels: a quarter of the window (64 px of 256), whole latent cells; 0 without blending."""
    if not blend:
        return 0
    return max(latent_factor, (tile // 4) // latent_factor * latent_factor)


def global_origin(grid: Grid) -> tuple[int, int]:
    """Global pixel (row, col) of the grid's top-left pixel; grids are snapped so these are integers."""
    res = grid.resolution
    return round(-grid.transform.f / res), round(grid.transform.c / res)


def check_request(
    steps: int | None, sampler: str, batch_size: int, seed: int, guidance_scale: float | None
) -> int:
    """Validate sampling settings; returns the step count (the sampler's default when ``steps`` is None)."""
    if sampler not in SAMPLERS:
        raise InvalidParameterError(f"unknown sampler {sampler!r}: use {' or '.join(SAMPLERS)}")
    if steps is None:
        steps = DEFAULT_STEPS[sampler]
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000:
        raise InvalidParameterError(
            f"steps must be 1..1000, got {steps!r} (default 20 for dpm, 1000 for ddpm)"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(f"batch size must be >= 1, got {batch_size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise InvalidParameterError(f"seed must be an integer >= 0, got {seed!r}")
    if guidance_scale is not None and not (math.isfinite(guidance_scale) and guidance_scale >= 1):
        raise InvalidParameterError(f"guidance scale must be >= 1 (1 = off), got {guidance_scale!r}")
    return steps


def make_layout(grid: Grid, tile: int, latent_factor: int, blend: bool, max_strip_pixels: int):
    """The lattice-aligned window layout over ``grid`` and its strips of window rows."""
    overlap = window_overlap(tile, latent_factor, blend)
    row0, col0 = global_origin(grid)
    layout = layout_for(row0, col0, grid.height, grid.width, tile, overlap)
    stride = tile - overlap
    rows_per_strip = max(2, max_strip_pixels // max(1, layout.width * stride))
    return layout, split_rows(len(layout.rows), rows_per_strip)


def default_mask_path(out_path: str | Path) -> Path:
    """``area.tif`` -> ``area.mask.tif`` beside it: where the paired semantic map goes unless told otherwise."""
    out = Path(out_path)
    if not out.name or out.name in (".", ".."):  # "", ".", "/": a folder, not a file name
        raise InvalidParameterError(
            f"output {out_path!s} is a folder: give a file name such as {out / 'out.tif'}"
        )
    return out.with_name(out.stem + ".mask.tif")


def plan_synthesis(
    bbox: BBox | str | tuple[float, float, float, float],
    out_path: str | Path | None = None,
    *,
    mask_out: str | Path | None = None,
    write_mask: bool = True,
    osm_path: str | Path | None = None,
    vector_path: str | Path | None = None,
    class_field: str = "class",
    model: GeodiffModel | str | Path | None = None,
    seed: int = 0,
    steps: int | None = None,
    sampler: Sampler = "dpm",
    guidance_scale: float | None = None,
    device: str = "auto",
    batch_size: int = 8,
    resolution: float | None = None,
    crs: str | None = None,
    blend: bool = True,
    overwrite: bool = False,
    cog: bool | None = None,
    estimate: bool = False,
    settings: Settings | None = None,
    sampling: SamplingOptions | None = None,
    source: SourceOptions | None = None,
    output: OutputOptions | None = None,
) -> SynthPlan:
    """Plan a synthesis of ``bbox``: grid, windows, strips, outputs (nothing heavy is loaded or written).

    Parameters
    ----------
    bbox
        The area: a :class:`~geodiff.grid.BBox` in any CRS, or ``"W,S,E,N"`` / a 4-tuple in lon/lat. Its CRS only
        describes the area: the output grid is the local UTM zone (or ``crs``, which must be in metres).
    out_path
        The RGB GeoTIFF to write (``None`` for a plan that only describes the work).
    mask_out, write_mask
        Where the paired semantic map goes (default ``<out>.mask.tif``); ``write_mask=False`` writes none.
    osm_path, vector_path, class_field
        The map source (see :func:`geodiff.osm.load_features`); neither = Overpass.
    model
        A loaded :class:`~geodiff.model.GeodiffModel`, a model name (``geodiff models``), a folder or a hub id;
        ``None`` = the default model.
    seed, steps, sampler, guidance_scale
        Sampling: same seed + place = same pixels; steps default to 20 (``dpm``) or 1000 (``ddpm``);
        guidance defaults to the model's.
    device, batch_size
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; windows per U-Net call.
    resolution
        Must equal the model's ground resolution (the model knows no other scale); default: the model's.
    crs
        Output CRS, projected in metres; default: the UTM zone of the bbox centre.
    blend
        Overlapping, blended windows (``False``: independent tiles, seams visible; for comparison).
    overwrite
        Allow replacing existing outputs (refused by default).
    cog
        Write Cloud-Optimized GeoTIFFs with internal overviews; default: for grids over
        ``settings.cog_min_pixels`` pixels (small areas stay plain tiled GeoTIFFs).
    estimate
        Time one U-Net call on ``device`` to fill :attr:`SynthPlan.seconds_estimate` (loads the model).
    settings
        Default :func:`geodiff.settings.get_settings`.
    sampling, source, output
        The same options as values (:mod:`geodiff.options`, what the CLI passes): ``sampling`` stands for
        ``model`` ... ``batch_size``, ``source`` for ``osm_path``, ``vector_path``, ``class_field``, ``output``
        for ``mask_out``, ``write_mask``, ``overwrite``, ``cog``; give a value or its flat arguments, not both.

    Returns
    -------
    SynthPlan

    Raises
    ------
    InvalidParameterError, InvalidBBoxError, AreaTooLargeError, ModelError
        Before any data is read or any weights are loaded (the size check uses the model's config only).
    """
    from geodiff.io import check_output_paths, check_style_paths

    sampling = options_from(
        SamplingOptions, sampling, "sampling", model=model, device=device, seed=seed, steps=steps,
        sampler=sampler, guidance_scale=guidance_scale, batch_size=batch_size,
    )  # fmt: skip
    source = options_from(
        SourceOptions, source, "source", osm_path=osm_path, vector_path=vector_path, class_field=class_field
    )
    output = options_from(
        OutputOptions, output, "output", mask_out=mask_out, write_mask=write_mask, overwrite=overwrite,
        cog=cog,
    )  # fmt: skip
    settings = settings or get_settings()
    box = parse_bbox(bbox)
    steps = check_request(
        sampling.steps, sampling.sampler, sampling.batch_size, sampling.seed, sampling.guidance_scale
    )
    dev = resolve_device(sampling.device)
    ref = resolve_model(sampling.model, settings)
    cfg = ref.config
    res = cfg.resolution_m
    if resolution is not None and not math.isclose(resolution, res, rel_tol=1e-6):
        raise ModelError(
            f"the model was trained at {res:g} m/px; at --resolution {resolution:g} it would see buildings and "
            f"roads at a scale it never learned: leave --resolution out (uses {res:g}) or use a model trained "
            f"at {resolution:g} m/px"
        )
    try:
        grid = grid_for_bbox(box, res, crs=crs, max_pixels=settings.max_pixels)
    except AreaTooLargeError as exc:  # the resolution is fixed by the model: only a smaller area helps
        raise AreaTooLargeError(
            str(exc).split(": use a smaller bbox")[0]
            + f" at the model's fixed {res:g} m/px: split the area into smaller bboxes, or raise GEODIFF_MAX_PIXELS"
        ) from exc
    layout, strips = make_layout(grid, cfg.tile_size, cfg.latent_factor, blend, settings.max_strip_pixels)
    out = Path(out_path) if out_path is not None else None
    mask = None
    if out is not None and output.write_mask:
        mask = output.mask_out if output.mask_out is not None else default_mask_path(out)
    check_output_paths([out, mask], output.overwrite)
    check_style_paths([out, mask])
    guidance = cfg.guidance(sampling.guidance_scale)
    cog = output.cog
    plan = SynthPlan(
        box,
        grid,
        layout,
        strips,
        ref,
        sampling.seed,
        steps,
        sampling.sampler,
        guidance,
        dev,
        sampling.batch_size,
        blend,
        source,
        out,
        mask,
        output.overwrite,
        cog=bool(cog) if cog is not None else grid.width * grid.height > settings.cog_min_pixels,
    )
    if estimate:
        plan.seconds_estimate = estimate_seconds(ref.load(dev), plan)
    return plan


# ---------------------------------------------------------------------------------------------------------
# running a plan
# ---------------------------------------------------------------------------------------------------------


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def _pipeline(model: GeodiffModel, sampler: str):
    from geodiff.pipeline import GeodiffPipeline

    # "dpm" is the default sampler: a fast (distilled) model's default is its student's own
    return GeodiffPipeline(model, model.make_scheduler(None if sampler == "dpm" else sampler))


def _canvas_generator(seed: int, key: str, row: int, col: int) -> torch.Generator:
    """The per-step noise of ancestral samplers (ddpm), seeded by seed and the canvas's place."""
    import torch

    from geodiff.noise import block_seed

    return torch.Generator().manual_seed(block_seed(seed, key + "|steps", row, col))


def _step_noise(seed: int, key: str, row: int, col: int, height: int, width: int, channels: int):  # noqa: ANN202
    """A consistency sampler's (the fast student's) re-noising after step i, keyed by place like the initial noise."""
    return lambda i: location_noise(seed, f"{key}|step{i}", row, col, height, width, channels).unsqueeze(0)


def denoise_canvas(
    model: GeodiffModel,
    class_map: np.ndarray,
    noise: torch.Tensor,
    steps: int,
    sampler: str,
    batch_size: int,
    overlap: int,
    guidance_scale: float | None = None,
    generator: torch.Generator | None = None,
    progress: ProgressCallback | None = None,
    step_noise: Callable[[int], torch.Tensor] | None = None,
) -> np.ndarray:
    """Denoise one canvas (covered exactly by windows) and decode it: (H, W, 3) float32 RGB in [0, 1]."""
    out = _pipeline(model, sampler)(
        class_map,
        num_inference_steps=steps,
        latents=noise.unsqueeze(0),
        guidance_scale=guidance_scale,
        overlap=overlap,
        batch_size=batch_size,
        generator=generator,
        output_type="pt",
        progress=progress,
        step_noise=step_noise,
    )
    return out.images[0].add(1).mul(0.5).permute(1, 2, 0).numpy()


def synthesize_map(
    class_map: np.ndarray,
    model: GeodiffModel | str | Path | None = None,
    seed: int = 0,
    steps: int | None = None,
    sampler: Sampler = "dpm",
    guidance_scale: float | None = None,
    device: str = "auto",
    batch_size: int = 8,
    blend: bool = True,
    origin: tuple[int, int] = (0, 0),
    place: str = "local",
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Synthesize an (H, W, 3) uint8 image for an in-memory (H, W) class map (no georeferencing).

    The map is padded by edge replication to whole windows. ``origin`` (global pixel row, col) and ``place``
    (the noise key, e.g. ``"EPSG:32632"``) put it on the world's noise lattice: two calls with maps at the same
    place and origin and the same seed start from the same noise.
    """
    steps = check_request(steps, sampler, batch_size, seed, guidance_scale)
    model_obj = resolve_model(model).load(resolve_device(device))
    tile, f = model_obj.config.tile_size, model_obj.latent_factor
    overlap = window_overlap(tile, f, blend)
    h, w = class_map.shape
    layout = layout_for(origin[0], origin[1], h, w, tile, overlap)
    top, left = origin[0] - layout.canvas_row, origin[1] - layout.canvas_col
    canvas = np.pad(class_map, ((top, layout.height - h - top), (left, layout.width - w - left)), mode="edge")
    lat_r, lat_c = layout.canvas_row // f, layout.canvas_col // f
    noise = location_noise(
        seed, place, lat_r, lat_c, layout.height // f, layout.width // f, model_obj.latent_channels
    )
    rgb = denoise_canvas(
        model_obj,
        canvas,
        noise,
        steps,
        sampler,
        batch_size,
        overlap,
        guidance_scale,
        _canvas_generator(seed, place, lat_r, lat_c),
        progress,
        _step_noise(
            seed, place, lat_r, lat_c, layout.height // f, layout.width // f, model_obj.latent_channels
        ),
    )
    return _to_uint8(rgb[top : top + h, left : left + w])


RowSink = Callable[[np.ndarray, np.ndarray, int], None]
"""``sink(rgb_rows (h, W, 3) uint8, class_rows (h, W) uint8, first_row)``: receives finished bbox-grid rows."""


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


def assemble(plan: SynthPlan, results: Iterator[StripResult], sink: RowSink) -> None:
    """Cross-fade consecutive strips over their shared window row and hand finished bbox rows to ``sink``.

    ``results`` must come in strip order; only the previous strip's shared band is held in memory.
    """
    lay, grid = plan.layout, plan.grid
    g_row, g_col = global_origin(grid)
    off_r, off_c = g_row - lay.canvas_row, g_col - lay.canvas_col  # bbox grid inside the canvas
    pending: np.ndarray | None = None  # the previous strip's last window row, float
    for res in results:
        top, height, keep, _ = strip_rows(plan, res.index)
        if res.full is not None:
            rgb = res.full.copy()
            if pending is not None:
                rgb[: len(pending)] = _cross_fade(pending, rgb[: len(pending)])
            rows_u8 = _to_uint8(rgb[:keep])
            pending = rgb[keep:] if keep < height else None
        else:
            parts = []
            if res.head is not None:
                parts.append(_to_uint8(_cross_fade(pending, res.head) if pending is not None else res.head))
            parts.append(res.mid)
            rows_u8 = np.concatenate(parts) if len(parts) > 1 else parts[0]
            pending = res.tail
        # clip the finished canvas rows [top, top + keep) to the bbox grid
        r0, r1 = max(top, off_r), min(top + keep, off_r + grid.height)
        if r1 > r0:
            rows, cols = slice(r0 - top, r1 - top), slice(off_c, off_c + grid.width)
            sink(rows_u8[rows, cols], res.class_map[rows, cols], r0 - off_r)


def _cross_fade(pending: np.ndarray, new: np.ndarray) -> np.ndarray:
    band = pending.shape[0]
    ramp = ((np.arange(band) + 0.5) / band)[:, None, None].astype(np.float32)
    return pending * (1 - ramp) + new * ramp


def run_plan(
    plan: SynthPlan,
    model: GeodiffModel,
    sink: RowSink,
    features: gpd.GeoDataFrame | None = None,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
) -> None:
    """Denoise ``plan`` strip by strip in this process and hand finished rows to ``sink``.

    ``features`` (a FeatureSet covering the canvas) are loaded from the plan's source when not given.
    :mod:`geodiff.distributed` computes the same strips on a Dask cluster and assembles them the same way.
    """
    settings = settings or get_settings()
    if features is None:
        report(progress, 0.0, "loading map features")
        # features for the whole canvas (not only the bbox) so windows past the bbox edge see the real map
        features = plan.source.load(BBox(*plan.canvas_grid().bounds, crs=plan.grid.crs), settings)
    n = len(plan.strips)

    def strips() -> Iterator[StripResult]:
        for s in range(n):
            sub = None if progress is None else (lambda fr, msg, s=s: progress((s + fr) / n, msg))
            yield compute_strip(plan, model, features, s, sub)

    assemble(plan, strips(), sink)


def render(
    plan: SynthPlan,
    model: GeodiffModel | None = None,
    features: gpd.GeoDataFrame | None = None,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``plan`` in memory: ``(rgb (H, W, 3) uint8, class map (H, W) uint8)`` on the plan's grid.

    The same pixels :func:`synthesize` writes for the plan (for small areas: augmentation tiles, previews).
    """
    model = model if model is not None else plan.model.load(plan.device)
    rgb = np.zeros((*plan.grid.shape, 3), np.uint8)
    cmap = np.zeros(plan.grid.shape, np.uint8)

    def sink(rgb_rows: np.ndarray, class_rows: np.ndarray, row: int) -> None:
        rgb[row : row + len(rgb_rows)] = rgb_rows
        cmap[row : row + len(class_rows)] = class_rows

    run_plan(plan, model, sink, features, settings, progress)
    return rgb, cmap


def synthesize(
    plan_or_bbox: SynthPlan | BBox | str | tuple[float, float, float, float],
    out_path: str | Path | None = None,
    *,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
    on_event: Callable[..., None] | None = None,
    **options: Any,
) -> SynthResult:
    """Synthesize a georeferenced RGB GeoTIFF (and the paired semantic-map GeoTIFF) for an area.

    Parameters
    ----------
    plan_or_bbox
        A :class:`SynthPlan` from :func:`plan_synthesis`, or a bbox: then ``out_path`` and ``options`` are
        :func:`plan_synthesis`'s arguments.
    settings, progress
        Settings (default :func:`geodiff.settings.get_settings`) and a ``progress(fraction, message)`` callback.
    on_event
        Called with keyword fields for notable events (``event="device"``).

    Returns
    -------
    SynthResult

    Notes
    -----
    Both outputs are written to temporary files and renamed only when complete; an error or interrupt leaves
    neither under its final name, and an existing file is replaced only with ``overwrite=True``.
    """
    settings = settings or get_settings()
    if isinstance(plan_or_bbox, SynthPlan):
        if out_path is not None or options:
            raise InvalidParameterError("give either a SynthPlan or a bbox with options, not both")
        plan = plan_or_bbox
    else:
        plan = plan_synthesis(plan_or_bbox, out_path, settings=settings, **options)
    if plan.out_path is None:
        raise InvalidParameterError("the plan has no output path: plan_synthesis(bbox, out_path, ...)")
    started = time.monotonic()
    model = plan.model.load(plan.device)
    if on_event is not None:
        on_event(event="device", device=plan.device, dtype=str(model.dtype).removeprefix("torch."))
    tags = provenance(plan)
    report(progress, 0.0, "loading map features")
    features = plan.source.load(BBox(*plan.canvas_grid().bounds, crs=plan.grid.crs), settings)
    with output_sink(plan, tags) as sink:
        run_plan(plan, model, sink, features, settings, progress)
    report(progress, 1.0, "done")
    return SynthResult(plan.out_path, plan.mask_path, plan.grid, time.monotonic() - started, plan, tags)


@contextlib.contextmanager
def output_sink(plan: SynthPlan, tags: dict[str, str]) -> Iterator[RowSink]:
    """Open the plan's outputs (atomic; COG when the plan says so) and yield a :data:`RowSink` writing to them.

    The files (image, mask and their styles) appear under their names together, only when the block completes.
    """
    from rasterio.windows import Window

    from geodiff.io import Transaction, class_map_writer, rgb_writer

    grid = plan.grid
    with Transaction(plan.overwrite) as tx, contextlib.ExitStack() as stack:
        rgb_dst = stack.enter_context(
            rgb_writer(plan.out_path, grid, tags, overwrite=plan.overwrite, cog=plan.cog, tx=tx)
        )
        mask_dst = None
        if plan.mask_path is not None:
            mask_dst = stack.enter_context(
                class_map_writer(plan.mask_path, grid, tags, overwrite=plan.overwrite, cog=plan.cog, tx=tx)
            )

        def sink(rgb_rows: np.ndarray, class_rows: np.ndarray, row: int) -> None:
            window = Window(0, row, grid.width, len(rgb_rows))
            rgb_dst.write(np.moveaxis(rgb_rows, -1, 0), window=window)
            if mask_dst is not None:
                mask_dst.write(class_rows[None], window=window)

        yield sink


def estimate_seconds(model: GeodiffModel, plan: SynthPlan) -> float:
    """Time one batched U-Net call and one decode on this device, scale to the plan."""
    import torch

    tile, f = model.config.tile_size, model.latent_factor
    b = min(plan.batch_size, plan.windows)
    maps = torch.zeros(b, tile, tile, dtype=torch.long, device=model.device)
    lat = torch.randn(b, model.latent_channels, tile // f, tile // f, device=model.device, dtype=model.dtype)
    guided = 2 if plan.guidance_scale > 1 else 1
    with torch.inference_mode():
        cond = model.condition(maps)
        t = torch.full((b,), 500, device=model.device, dtype=torch.long)
        model.predict_noise(lat, t, cond)  # warm-up
        _sync(model.device)
        t0 = time.perf_counter()
        model.predict_noise(lat, t, cond)
        _sync(model.device)
        t_step = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.decode_latents(lat)
        _sync(model.device)
        t_dec = time.perf_counter() - t0
    batches = math.ceil(plan.windows / b)
    return batches * (plan.steps * t_step * guided + t_dec)


def _sync(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
