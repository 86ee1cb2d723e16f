"""Area -> semantic map -> tiled, blended latent diffusion -> mosaicked, georeferenced GeoTIFF.

The canvas (the bbox grid, grown to whole windows on the global window lattice) is denoised in overlapping
256 px windows. At every step the windows' noise predictions are blended with smooth weights into one canvas
prediction, then a single scheduler step updates the whole canvas latent, so neighbouring windows cannot drift
apart (Mixture-of-Diffusers). Decoding is windowed and blended the same way.

Memory stays bounded for large areas: the canvas is processed in strips of window rows; consecutive strips
share one window row, and their results are cross-faded over it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geodiff import __version__
from geodiff.errors import InvalidParameterError, ModelError
from geodiff.grid import BBox, Grid, grid_for_bbox
from geodiff.noise import location_noise
from geodiff.progress import ProgressCallback, report
from geodiff.settings import Settings, get_settings
from geodiff.tiling import Layout, blend_weights, layout_for, split_rows

if TYPE_CHECKING:
    import torch

    from geodiff.model import GeodiffModel

SAMPLERS = ("dpm", "ddpm")


@dataclass
class SynthPlan:
    """What a run will do, computed before any heavy work (also what ``--dry-run`` prints)."""

    grid: Grid
    layout: Layout
    strips: list[tuple[int, int]]
    steps: int
    sampler: str
    device: str
    batch_size: int
    seconds_estimate: float | None = None

    @property
    def windows(self) -> int:
        return self.layout.count + sum(len(self.layout.cols) for _ in self.strips[1:])

    def window_edges(self) -> tuple[list[int], list[int]]:
        """Rows and columns of the output where a window starts or ends (where seams would show)."""
        lay, (g_row, g_col) = self.layout, _global_origin(self.grid)
        off_r, off_c = g_row - lay.canvas_row, g_col - lay.canvas_col

        def edges(origins: tuple[int, ...], off: int, size: int) -> list[int]:
            cuts = {o - off for o in origins} | {o + lay.tile - off for o in origins}
            return sorted(c for c in cuts if 0 < c < size)

        return edges(lay.rows, off_r, self.grid.height), edges(lay.cols, off_c, self.grid.width)

    def describe(self) -> str:
        g = self.grid
        area_km2 = g.width * g.height * g.resolution**2 / 1e6
        lines = [
            f"grid: {g.width} x {g.height} px at {g.resolution:g} m/px in {g.crs.to_string()} ({area_km2:.3f} km^2)",
            f"windows: {self.windows} of {self.layout.tile} px ({len(self.layout.rows)} rows x "
            f"{len(self.layout.cols)} cols, {self.layout.overlap} px overlap) in {len(self.strips)} strip(s)",
            f"sampler: {self.sampler}, {self.steps} steps, batch {self.batch_size}, device {self.device}",
        ]
        if self.seconds_estimate is not None:
            lines.append(f"estimated time: {_fmt_seconds(self.seconds_estimate)}")
        return "\n".join(lines)


@dataclass
class SynthResult:
    image_path: Path
    mask_path: Path | None
    grid: Grid
    seconds: float
    plan: SynthPlan
    tags: dict[str, str] = field(default_factory=dict)


def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def resolve_device(device: str) -> tuple[str, Any]:
    """'auto' | 'cpu' | 'cuda[:N]' -> (device string, torch dtype): bf16 on CUDA, fp32 on CPU."""
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidParameterError(
                "--device cuda was asked for but no CUDA GPU is visible: use --device cpu"
            )
        return device, torch.bfloat16
    if device != "cpu":
        raise InvalidParameterError(f"unknown device {device!r}: use auto, cpu or cuda")
    return device, torch.float32


def load_model(
    model: GeodiffModel | str | Path | None, device: str, dtype: Any, settings: Settings
) -> GeodiffModel:
    """A ready model: an instance as is, or loaded from a folder / hub id (default: the shipped model)."""
    from geodiff.model import GeodiffModel

    if isinstance(model, GeodiffModel):
        return model.to(device=device, dtype=dtype)
    source = Path(model) if model is not None else settings.model_dir
    if model is None and not source.exists():
        raise ModelError(
            f"the default model folder {source} is missing: reinstall geodiff from a full checkout, "
            "or pass --model DIR (train one with `geodiff train diffusion`)"
        )
    return GeodiffModel.from_pretrained(str(source), device=device, dtype=dtype)


def window_overlap(tile: int, latent_factor: int, blend: bool) -> int:
    """Window overlap in pixels: a quarter of the window (64 px of 256), whole latent cells; 0 without blending."""
    if not blend:
        return 0
    return max(latent_factor, (tile // 4) // latent_factor * latent_factor)


def check_request(steps: int, sampler: str, batch_size: int, seed: int) -> None:
    if not isinstance(steps, int) or steps < 1 or steps > 1000:
        raise InvalidParameterError(
            f"steps must be 1..1000, got {steps!r} (default 20 for dpm, 1000 for ddpm)"
        )
    if sampler not in SAMPLERS:
        raise InvalidParameterError(f"unknown sampler {sampler!r}: use {' or '.join(SAMPLERS)}")
    if batch_size < 1:
        raise InvalidParameterError(f"batch size must be >= 1, got {batch_size}")
    if seed < 0:
        raise InvalidParameterError(f"seed must be >= 0, got {seed}")


def _global_origin(grid: Grid) -> tuple[int, int]:
    """Global pixel (row, col) of the grid's top-left pixel; grids are snapped so these are integers."""
    res = grid.resolution
    return round(-grid.transform.f / res), round(grid.transform.c / res)


def _crs_key(grid: Grid) -> str:
    epsg = grid.crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else grid.crs.to_wkt()


def make_plan(
    grid: Grid,
    model_tile: int,
    latent_factor: int,
    steps: int,
    sampler: str,
    device: str,
    batch_size: int,
    blend: bool,
    max_strip_pixels: int,
) -> SynthPlan:
    overlap = window_overlap(model_tile, latent_factor, blend)
    row0, col0 = _global_origin(grid)
    layout = layout_for(row0, col0, grid.height, grid.width, model_tile, overlap)
    stride = model_tile - overlap
    rows_per_strip = max(2, max_strip_pixels // max(1, layout.width * stride))
    strips = split_rows(len(layout.rows), rows_per_strip)
    return SynthPlan(grid, layout, strips, steps, sampler, device, batch_size)


# ---------------------------------------------------------------------------------------------------------
# the diffusion core: a canvas (map, layout) -> RGB, no geography
# ---------------------------------------------------------------------------------------------------------


def _windows_in_batches(windows: Sequence[tuple[int, int]], batch: int) -> list[list[tuple[int, int]]]:
    return [list(windows[i : i + batch]) for i in range(0, len(windows), batch)]


def denoise_canvas(
    model: GeodiffModel,
    class_map: np.ndarray,
    rows: Sequence[int],
    cols: Sequence[int],
    noise: torch.Tensor,
    steps: int,
    sampler: str,
    batch_size: int,
    overlap: int,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Denoise one canvas and decode it. Returns (H, W, 3) float32 RGB in [0, 1].

    ``class_map`` covers the canvas exactly (H = rows[-1] + tile, W = cols[-1] + tile); ``noise`` is the
    initial latent noise of the canvas (C, H / f, W / f).
    """
    import torch

    tile = model.config.tile_size
    f = model.latent_factor
    device, dtype = model.device, model.dtype
    lt, lo = tile // f, overlap // f
    windows = [(r, c) for r in rows for c in cols]
    batches = _windows_in_batches(windows, batch_size)
    w_lat = torch.from_numpy(blend_weights(lt, lo)).to(device=device, dtype=torch.float32)
    scheduler = model.make_scheduler(sampler)
    scheduler.set_timesteps(steps, device=device)

    latents = (noise.to(device=device, dtype=torch.float32) * scheduler.init_noise_sigma).unsqueeze(0)
    maps = torch.from_numpy(class_map.astype(np.int64))
    # Conditioning depends only on the map: compute it once per batch of windows, not once per step.
    with torch.inference_mode():
        conds = [
            model.condition(torch.stack([maps[r : r + tile, c : c + tile] for r, c in batch]).to(device))
            for batch in batches
        ]
    total = steps * len(batches) + len(batches)
    done = 0
    for i, t in enumerate(scheduler.timesteps):
        eps = torch.zeros_like(latents)
        weight = torch.zeros_like(latents[:, :1])
        model_in = scheduler.scale_model_input(latents, t)
        for batch, cond in zip(batches, conds, strict=True):
            crops = torch.cat([model_in[:, :, r // f : r // f + lt, c // f : c // f + lt] for r, c in batch])
            with torch.inference_mode():
                tt = torch.full((len(batch),), int(t), device=device, dtype=torch.long)
                pred = model.predict_noise(crops.to(dtype), tt, cond).float()
            for k, (r, c) in enumerate(batch):
                eps[:, :, r // f : r // f + lt, c // f : c // f + lt] += pred[k] * w_lat
                weight[:, :, r // f : r // f + lt, c // f : c // f + lt] += w_lat
            done += 1
            report(progress, done / total, f"denoising step {i + 1}/{steps}")
        latents = scheduler.step(eps / weight, t, latents).prev_sample

    # Windowed decode, blended in pixel space with the same kind of weights.
    height, width = class_map.shape
    rgb = torch.zeros(3, height, width)
    wsum = torch.zeros(1, height, width)
    w_px = torch.from_numpy(blend_weights(tile, overlap))
    for batch in batches:
        crops = torch.cat([latents[:, :, r // f : r // f + lt, c // f : c // f + lt] for r, c in batch])
        with torch.inference_mode():
            images = model.decode_latents(crops.to(dtype)).float().cpu()
        for k, (r, c) in enumerate(batch):
            rgb[:, r : r + tile, c : c + tile] += images[k] * w_px
            wsum[:, r : r + tile, c : c + tile] += w_px
        done += 1
        report(progress, done / total, "decoding")
    out = (rgb / wsum).clamp(-1, 1).add(1).mul(0.5)
    return out.permute(1, 2, 0).numpy()


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def synthesize_map(
    class_map: np.ndarray,
    model: GeodiffModel | str | Path | None = None,
    seed: int = 0,
    steps: int = 20,
    sampler: str = "dpm",
    device: str = "auto",
    batch_size: int = 8,
    blend: bool = True,
    origin: tuple[int, int] = (0, 0),
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Synthesize an (H, W, 3) uint8 image for an in-memory (H, W) class map (no georeferencing).

    The map is padded by edge replication to whole windows; ``origin`` places it on the global noise lattice
    (two calls with maps at the same origin and the same seed start from the same noise).
    """
    check_request(steps, sampler, batch_size, seed)
    dev, dtype = resolve_device(device)
    model = load_model(model, dev, dtype, get_settings())
    tile, f = model.config.tile_size, model.latent_factor
    overlap = window_overlap(tile, f, blend)
    h, w = class_map.shape
    layout = layout_for(origin[0], origin[1], h, w, tile, overlap)
    top, left = origin[0] - layout.canvas_row, origin[1] - layout.canvas_col
    canvas = np.pad(class_map, ((top, layout.height - h - top), (left, layout.width - w - left)), mode="edge")
    noise = location_noise(
        seed,
        "local",
        layout.canvas_row // f,
        layout.canvas_col // f,
        layout.height // f,
        layout.width // f,
        model.latent_channels,
    )
    rgb = denoise_canvas(
        model, canvas, layout.rows, layout.cols, noise, steps, sampler, batch_size, overlap, progress
    )
    return _to_uint8(rgb[top : top + h, left : left + w])


# ---------------------------------------------------------------------------------------------------------
# the geographic job
# ---------------------------------------------------------------------------------------------------------


def synthesize(
    bbox: BBox,
    out_path: str | Path,
    osm_path: str | Path | None = None,
    vector_path: str | Path | None = None,
    class_field: str = "class",
    model: GeodiffModel | str | Path | None = None,
    seed: int = 0,
    steps: int = 20,
    sampler: str = "dpm",
    device: str = "auto",
    batch_size: int = 8,
    resolution: float | None = None,
    crs: str | None = None,
    mask_out: str | Path | None = None,
    blend: bool = True,
    dry_run: bool = False,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
    on_event: Any = None,
) -> SynthResult | SynthPlan:
    """Synthesize a georeferenced RGB GeoTIFF (and the paired semantic-map GeoTIFF) for ``bbox``.

    Returns the :class:`SynthPlan` without doing the work when ``dry_run``. Both outputs are written atomically;
    an error or interrupt leaves neither under its final name.
    """
    from geodiff.io import class_map_writer, rgb_writer
    from geodiff.osm import load_features

    settings = settings or get_settings()
    check_request(steps, sampler, batch_size, seed)
    dev, dtype = resolve_device(device)
    if on_event is not None:
        on_event(event="device", device=dev, dtype=str(dtype).removeprefix("torch."))
    model_obj = load_model(model, dev, dtype, settings)
    res = model_obj.config.resolution_m
    if resolution is not None and not math.isclose(resolution, res, rel_tol=1e-6):
        raise ModelError(
            f"the model was trained at {res:g} m/px; at --resolution {resolution:g} it would see buildings and "
            f"roads at a scale it never learned: leave --resolution out (uses {res:g}) or use a model trained "
            f"at {resolution:g} m/px"
        )
    grid = grid_for_bbox(bbox, res, crs=crs, max_pixels=settings.max_pixels)
    plan = make_plan(
        grid,
        model_obj.config.tile_size,
        model_obj.latent_factor,
        steps,
        sampler,
        dev,
        batch_size,
        blend,
        settings.max_strip_pixels,
    )
    if dry_run:
        plan.seconds_estimate = estimate_seconds(model_obj, plan)
        return plan

    started = time.monotonic()
    report(progress, 0.0, "loading map features")
    # Features for the whole canvas (not only the bbox) so windows past the bbox edge see the real map.
    grid_row, grid_col = _global_origin(grid)
    canvas_grid = grid.window(
        plan.layout.canvas_row - grid_row,
        plan.layout.canvas_col - grid_col,
        plan.layout.height,
        plan.layout.width,
    )
    canvas_bbox = BBox(*canvas_grid.bounds, crs=grid.crs)
    features = load_features(
        canvas_bbox, osm_path=osm_path, vector_path=vector_path, class_field=class_field, settings=settings
    )
    out_path = Path(out_path)
    mask_path = Path(mask_out) if mask_out is not None else out_path.with_name(out_path.stem + ".mask.tif")
    tags = {
        "MODEL": str(getattr(model_obj, "name_or_path", model) or settings.model_dir),
        "SEED": seed,
        "STEPS": steps,
        "SAMPLER": sampler,
        "BLEND": blend,
        "DEVICE": dev,
        "GEODIFF_VERSION": __version__,
        "BBOX": str(bbox),
        "SOURCE": str(osm_path or vector_path or "overpass"),
    }
    with class_map_writer(mask_path, grid, tags) as mask_dst, rgb_writer(out_path, grid, tags) as rgb_dst:
        _run_strips(model_obj, plan, canvas_grid, features, seed, rgb_dst, mask_dst, progress)
    report(progress, 1.0, "done")
    return SynthResult(
        out_path, mask_path, grid, time.monotonic() - started, plan, {k: str(v) for k, v in tags.items()}
    )


def _run_strips(model, plan, canvas_grid, features, seed, rgb_dst, mask_dst, progress):
    """Denoise strip by strip, cross-fade shared window rows, write finished rows to the outputs."""
    from geodiff.rasterize import rasterize_features

    lay = plan.layout
    tile, f = lay.tile, model.latent_factor
    grid = plan.grid
    g_row, g_col = _global_origin(grid)
    off_r, off_c = g_row - lay.canvas_row, g_col - lay.canvas_col  # bbox grid inside the canvas
    pending: np.ndarray | None = None  # cross-fade band carried from the previous strip
    n = len(plan.strips)
    for s, (first, stop) in enumerate(plan.strips):
        top = lay.rows[first]
        height = lay.rows[stop - 1] + tile - top
        strip_grid = canvas_grid.window(top, 0, height, lay.width)
        class_map = rasterize_features(features, strip_grid)
        noise = location_noise(
            seed,
            _crs_key(grid),
            (lay.canvas_row + top) // f,
            lay.canvas_col // f,
            height // f,
            lay.width // f,
            model.latent_channels,
        )
        sub = None if progress is None else (lambda fr, msg, s=s: progress((s + fr) / n, msg))
        rgb = denoise_canvas(
            model,
            class_map,
            [r - top for r in lay.rows[first:stop]],
            lay.cols,
            noise,
            plan.steps,
            plan.sampler,
            plan.batch_size,
            lay.overlap,
            sub,
        )
        if pending is not None:
            band = pending.shape[0]
            ramp = ((np.arange(band) + 0.5) / band)[:, None, None].astype(np.float32)
            rgb[:band] = pending * (1 - ramp) + rgb[:band] * ramp
        keep = height if s == n - 1 else lay.rows[stop - 1] - top  # last row band goes to the next strip
        if s < n - 1:
            pending = rgb[keep:].copy()
        _write_rows(rgb_dst, mask_dst, _to_uint8(rgb[:keep]), class_map[:keep], top, off_r, off_c, grid)


def _write_rows(rgb_dst, mask_dst, rgb_u8, class_map, canvas_top, off_r, off_c, grid) -> None:
    """Write canvas rows [canvas_top, canvas_top + len) clipped to the bbox grid."""
    from rasterio.windows import Window

    r0 = max(canvas_top, off_r)
    r1 = min(canvas_top + rgb_u8.shape[0], off_r + grid.height)
    if r1 <= r0:
        return
    rows = slice(r0 - canvas_top, r1 - canvas_top)
    cols = slice(off_c, off_c + grid.width)
    window = Window(0, r0 - off_r, grid.width, r1 - r0)
    rgb_dst.write(np.moveaxis(rgb_u8[rows, cols], -1, 0), window=window)
    mask_dst.write(class_map[rows, cols][None], window=window)


def estimate_seconds(model: GeodiffModel, plan: SynthPlan) -> float:
    """Time one batched U-Net call and one decode on this device, scale to the plan."""
    import torch

    tile, f = model.config.tile_size, model.latent_factor
    b = min(plan.batch_size, plan.windows)
    maps = torch.zeros(b, tile, tile, dtype=torch.long, device=model.device)
    lat = torch.randn(b, model.latent_channels, tile // f, tile // f, device=model.device, dtype=model.dtype)
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
    return batches * (plan.steps * t_step + t_dec)


def _sync(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
