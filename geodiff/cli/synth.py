"""``geodiff synth``: synthetic aerial imagery GeoTIFF for a bbox."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geodiff.cli.options import (
    bbox_options,
    close_progress,
    device_option,
    echo_event,
    make_progress,
    model_option,
    output_path,
    overwrite_option,
    progress_option,
    sampling_options,
    source_options,
    threads_option,
    use_threads,
    worker_threads,
)
from geodiff.errors import InvalidParameterError


@click.command(
    epilog="Examples:\n\n\b\n  geodiff synth --sample --out monaco.tif\n"
    "  geodiff synth --bbox 7.418,43.732,7.422,43.735 --osm monaco.osm.pbf --out area.tif --seed 3\n"
    "  geodiff synth --bbox 24.935,60.164,24.953,60.179 --out helsinki.tif --dry-run"
)
@click.option(
    "--sample",
    is_flag=True,
    help="Use the embedded sample area (a part of Monaco, OSM data shipped with geodiff); "
    "works offline, no --bbox needed.",
)
@bbox_options(required=False)
@source_options
@output_path("--out", "Output RGB GeoTIFF.", required=True, param="out_path")
@output_path("--mask-out", "Where to write the paired semantic map. Default: <out>.mask.tif beside --out.")
@click.option("--no-mask", is_flag=True, help="Do not write the semantic map.")
@model_option
@sampling_options()
@device_option
@threads_option
@click.option(
    "--resolution",
    type=float,
    default=None,
    metavar="M",
    help="Metres per pixel; must match the model's (default: the model's).",
)
@click.option(
    "--no-blend", is_flag=True, help="Independent, non-overlapping tiles (seams visible; for comparison)."
)
@click.option(
    "--cog/--no-cog",
    default=None,
    help="Cloud-Optimized GeoTIFF outputs with overviews. Default: for areas over GEODIFF_COG_MIN_PIXELS.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Run strips as tasks on a local Dask cluster of N worker processes (one per GPU on a multi-GPU "
    "machine); resumable: run the same command again to finish an interrupted run.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Run on an existing Dask cluster (tcp://host:8786); Dask's config/DASK_SCHEDULER_ADDRESS also work.",
)
@click.option("--dry-run", is_flag=True, help="Print grid size, window count and estimated time, then stop.")
@progress_option
@overwrite_option
def synth(
    sample: bool,
    bbox,
    bbox_crs: str,
    crs: str | None,
    osm_path: Path | None,
    vector_path: Path | None,
    class_field: str,
    out_path: Path,
    mask_out: Path | None,
    no_mask: bool,
    model: str | None,
    seed: int,
    steps: int | None,
    sampler: str,
    guidance_scale: float | None,
    batch_size: int,
    device: str,
    threads: int | None,
    resolution: float | None,
    no_blend: bool,
    cog: bool | None,
    workers: int | None,
    scheduler: str | None,
    dry_run: bool,
    progress_mode: str,
    overwrite: bool,
) -> None:
    """Synthesize a seamless, georeferenced aerial image of an area from its OpenStreetMap map.

    \b
    OSM features -> semantic map -> overlapping 256 px windows -> latent diffusion blended at
    every step -> RGB GeoTIFF in the map's CRS/grid, with the semantic map beside it.
    Without --osm/--vector the map comes from the Overpass API (needs internet).
    Output carries provenance tags and "Map data (c) OpenStreetMap contributors, ODbL".
    """
    from geodiff.samples import sample_area
    from geodiff.synth import plan_synthesis, synthesize

    if sample:
        if bbox or osm_path or vector_path:
            raise InvalidParameterError(
                "--sample brings its own area and data: leave out --bbox/--osm/--vector"
            )
        area = sample_area()
        bbox, vector_path = area.bbox, area.vector_path
    elif bbox is None:
        raise InvalidParameterError("give --bbox W,S,E,N (or --sample for the embedded offline sample area)")
    if no_mask and mask_out is not None:
        raise InvalidParameterError("--no-mask and --mask-out contradict each other: give one of them")
    plan = plan_synthesis(
        bbox,
        out_path,
        mask_out=mask_out,
        write_mask=not no_mask,
        osm_path=osm_path,
        vector_path=vector_path,
        class_field=class_field,
        model=model,
        seed=seed,
        steps=steps,
        sampler=sampler,  # type: ignore[arg-type]
        guidance_scale=guidance_scale,
        device=device,
        batch_size=batch_size,
        resolution=resolution,
        crs=crs,
        blend=not no_blend,
        overwrite=overwrite
        or dry_run,  # a dry run writes nothing, so an existing output is no reason to stop
        estimate=True,
    )
    distributed = workers is not None or scheduler is not None
    info = plan.to_dict()
    if distributed:
        from geodiff.distributed import estimate_distributed_seconds

        estimate = estimate_distributed_seconds(plan, workers or 1)
        info.update(tasks=len(plan.strips), workers=workers, seconds_estimate_distributed=estimate)
    if dry_run:
        if progress_mode == "json":
            click.echo(json.dumps({"event": "plan", **info}))
        else:
            click.echo(plan.describe())
            if distributed:
                where = f"{workers} local worker(s)" if workers else f"the cluster at {scheduler}"
                click.echo(
                    f"distributed: {len(plan.strips)} task(s) (one per strip) on {where}"
                    + (
                        f", estimated {estimate:.0f} s with start-up"
                        if estimate is not None and workers
                        else ""
                    )
                )
        return
    progress = make_progress(progress_mode, "synth")
    on_event = getattr(progress, "event", None)
    if on_event is None and progress_mode != "none":
        on_event = echo_event
    if progress_mode == "json":
        progress.event(event="plan", **info)  # type: ignore[union-attr]
    elif progress_mode == "bar":
        click.echo(plan.describe(), err=True)
    try:
        if distributed:
            from geodiff.distributed import synthesize_distributed

            result = synthesize_distributed(
                plan,
                workers,
                scheduler,
                threads_per_worker=worker_threads(threads),
                progress=progress,
                on_event=on_event,
            )
        else:
            use_threads(threads)
            result = synthesize(plan, progress=progress, on_event=on_event)
    finally:
        close_progress(progress)
    written = " and ".join(str(p) for p in (result.image_path, result.mask_path) if p is not None)
    click.echo(
        f"Wrote {written} ({result.grid.width} x {result.grid.height} px, "
        f"{result.grid.crs.to_string()}) in {result.seconds:.1f} s",
        err=True,
    )
