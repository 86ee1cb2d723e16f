"""Planning a synthesis: grid, window layout and strips, outputs, all before any heavy work.

:func:`plan_synthesis` builds a :class:`SynthPlan` (what ``--dry-run`` prints); :mod:`geodiff.synth.run` runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geodiff.errors import AreaTooLargeError, InvalidParameterError, ModelError
from geodiff.grid import BBox, Grid, grid_for_bbox, parse_bbox
from geodiff.models import ModelRef, resolve_device, resolve_model
from geodiff.options import OutputOptions, Sampler, SamplingOptions, SourceOptions, options_from
from geodiff.settings import Settings, get_settings
from geodiff.synth.estimate import estimate_seconds, model_to_time
from geodiff.tiling import Layout, layout_for, split_rows

if TYPE_CHECKING:
    from geodiff.model import GeodiffModel


SAMPLERS: tuple[str, ...] = ("dpm", "ddpm")
DEFAULT_STEPS = {"dpm": 20, "ddpm": 1000}
"""Steps when none are given: DPM-Solver++ 2M converges in ~20; DDPM is the 1000-step ancestral reference."""
FAST_SAMPLER = "lcm"
"""The sampler of ``quality="fast"``: the distilled student's few consistency steps (its steps: the student's)."""


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
    quality: str = "full"
    runtime: str = "torch"
    estimate_runtime: str | None = None
    """The runtime the estimate was timed on: ``runtime``, or torch for ONNX graphs not exported yet."""

    @property
    def unet_passes(self) -> int:
        """U-Net passes per window: one per step, two with classifier-free guidance unless it is folded in."""
        guided = self.guidance_scale > 1 and self.quality == "full"
        return self.steps * (2 if guided else 1)

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
            f"sampler: {self.sampler} ({self.quality} quality), {self.steps} steps{guidance} = "
            f"{self.unet_passes} U-Net passes per window, batch {self.batch_size}, device {self.device}"
            + (f" on {self.runtime}" if self.runtime != "torch" else ""),
            f"model: {self.model.name}",
        ]
        if self.outputs:
            lines.append("outputs: " + ", ".join(str(p) for p in self.outputs))
        if self.seconds_estimate is not None:
            lines.append(
                f"estimated time: {_fmt_seconds(self.seconds_estimate)}"
                + (
                    f" (timed on {self.estimate_runtime}: the {self.runtime} graphs are exported on the first run)"
                    if self.estimate_runtime not in (None, self.runtime)
                    else ""
                )
            )
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
            "quality": self.quality,
            "unet_passes": self.unet_passes,
            "guidance_scale": self.guidance_scale,
            "device": self.device,
            "runtime": self.runtime,
            "model": self.model.name,
            "outputs": [str(p) for p in self.outputs],
            "cog": self.cog,
            "seconds_estimate": None if self.seconds_estimate is None else round(self.seconds_estimate, 1),
            "estimate_runtime": self.estimate_runtime,
        }


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
    steps: int | None,
    sampler: str,
    batch_size: int,
    seed: int,
    guidance_scale: float | None,
    quality: str = "full",
    fast_steps: int | None = None,
) -> int:
    """Validate sampling settings; returns the step count (when ``steps`` is None: the sampler's default, or
    ``fast_steps``, the student's, for ``quality="fast"``)."""
    if quality == "fast":
        if sampler not in ("dpm", FAST_SAMPLER):  # "dpm" is the default: the user named no sampler
            raise InvalidParameterError(
                f"sampler {sampler!r} belongs to the full model; the fast quality samples with its distilled "
                "student: leave the sampler out, or use quality full"
            )
        if steps is None:
            steps = fast_steps or 4
    elif sampler not in SAMPLERS:
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


def resolve_request(
    ref: ModelRef,
    quality: str | None,
    steps: int | None,
    sampler: str,
    batch_size: int,
    seed: int,
    guidance_scale: float | None,
) -> tuple[str, int, str]:
    """``(quality, steps, sampler)`` of a sampling request on the model ``ref``, validated: the quality resolved
    (:meth:`~geodiff.models.ModelRef.quality`), the steps defaulted (the student's for ``"fast"``) and the
    sampler the run uses (``FAST_SAMPLER`` for ``"fast"``)."""
    quality = ref.quality(quality)
    steps = check_request(
        steps, sampler, batch_size, seed, guidance_scale, quality, ref.default_steps(quality)
    )
    return quality, steps, FAST_SAMPLER if quality == "fast" else sampler


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
    quality: str | None = None,
    runtime: str = "torch",
    resolution: float | None = None,
    crs: str | None = None,
    blend: bool = True,
    overwrite: bool = False,
    cog: bool | None = None,
    estimate: bool = False,
    dry_run: bool = False,
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
    quality
        ``"full"`` (default for a model folder) or ``"fast"``: the folder's distilled student, a few steps of one
        U-Net pass each (steps default to the student's; ``sampler`` must be left out).
    runtime
        ``"torch"`` or ``"onnx"``: the U-Net and decoder on ONNX Runtime (CPU only, ``pip install
        'geodiff[onnx]'``; exported once per model and window size into the cache folder; pixels within tolerance of torch's).
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
        Time one U-Net call on ``device`` to fill :attr:`SynthPlan.seconds_estimate` (loads the model; with
        ``runtime="onnx"`` it exports the ONNX graphs the run will use, unless ``dry_run``).
    dry_run
        The plan is only shown, not run (``--dry-run``): the estimate does no work only a run needs, so ONNX graphs
        not exported yet are timed on torch instead (:attr:`SynthPlan.estimate_runtime` says which).
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
    from geodiff.model.onnx_runtime import check_runtime

    sampling = options_from(
        SamplingOptions, sampling, "sampling", model=model, device=device, seed=seed, steps=steps,
        sampler=sampler, guidance_scale=guidance_scale, batch_size=batch_size, quality=quality,
        runtime=runtime,
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
    ref = resolve_model(sampling.model, settings)
    quality, steps, sampler = resolve_request(
        ref, sampling.quality, sampling.steps, sampling.sampler, sampling.batch_size, sampling.seed,
        sampling.guidance_scale,
    )  # fmt: skip
    dev = resolve_device(sampling.device)
    check_runtime(sampling.runtime, dev)
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
        sampler,
        guidance,
        dev,
        sampling.batch_size,
        blend,
        source,
        out,
        mask,
        output.overwrite,
        cog=bool(cog) if cog is not None else grid.width * grid.height > settings.cog_min_pixels,
        quality=quality,
        runtime=sampling.runtime,
    )
    if estimate:
        timed = ref.load(dev, quality, plan.runtime)
        if dry_run:  # a run's estimate exports its ONNX graphs here, once for all workers; a dry run must not
            timed = model_to_time(timed)
        plan.seconds_estimate, plan.estimate_runtime = estimate_seconds(timed, plan), timed.runtime
    return plan
