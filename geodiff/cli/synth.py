"""``geodiff synth``: synthetic aerial imagery GeoTIFF for a bbox."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from geodiff.cli.options import (
    bbox_options,
    close_progress,
    cluster_options,
    echo_event,
    make_progress,
    output_options,
    output_path,
    progress_option,
    sampling_options,
    source_options,
)
from geodiff.errors import InvalidParameterError
from geodiff.options import ClusterOptions, OutputOptions, SamplingOptions, SourceOptions


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
@output_options
@sampling_options()
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
@cluster_options(
    workers_help="Run strips as tasks on a local Dask cluster of N worker processes (one per GPU on a "
    "multi-GPU machine); resumable: run the same command again to finish an interrupted run.",
    scheduler_help="Run on an existing Dask cluster (tcp://host:8786); Dask's config/DASK_SCHEDULER_ADDRESS "
    "also work.",
)
@click.option("--dry-run", is_flag=True, help="Print grid size, window count and estimated time, then stop.")
@progress_option
def synth(
    sample: bool,
    bbox,
    bbox_crs: str,
    crs: str | None,
    source: SourceOptions,
    out_path: Path,
    output: OutputOptions,
    sampling: SamplingOptions,
    resolution: float | None,
    no_blend: bool,
    cluster: ClusterOptions,
    dry_run: bool,
    progress_mode: str,
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
        if bbox or source.osm_path or source.vector_path:
            raise InvalidParameterError(
                "--sample brings its own area and data: leave out --bbox/--osm/--vector"
            )
        area = sample_area()
        bbox, source = area.bbox, dataclasses.replace(source, vector_path=area.vector_path)
    elif bbox is None:
        raise InvalidParameterError("give --bbox W,S,E,N (or --sample for the embedded offline sample area)")
    if dry_run:  # a dry run writes nothing, so an existing output is no reason to stop
        output = dataclasses.replace(output, overwrite=True)
    plan = plan_synthesis(
        bbox,
        out_path,
        resolution=resolution,
        crs=crs,
        blend=not no_blend,
        estimate=True,
        dry_run=dry_run,
        sampling=sampling,
        source=source,
        output=output,
    )
    workers, scheduler = cluster.workers, cluster.scheduler
    info = plan.to_dict()
    if cluster.distributed:
        from geodiff.distributed import estimate_distributed_seconds

        estimate = estimate_distributed_seconds(plan, workers or 1)
        info.update(tasks=len(plan.strips), workers=workers, seconds_estimate_distributed=estimate)
    if dry_run:
        if progress_mode == "json":
            click.echo(json.dumps({"event": "plan", **info}))
        else:
            click.echo(plan.describe())
            if cluster.distributed:
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
        if cluster.distributed:
            from geodiff.distributed import synthesize_distributed

            result = synthesize_distributed(plan, cluster=cluster, progress=progress, on_event=on_event)
        else:
            cluster.use_threads()
            result = synthesize(plan, progress=progress, on_event=on_event)
    finally:
        close_progress(progress)
    written = " and ".join(str(p) for p in (result.image_path, result.mask_path) if p is not None)
    click.echo(
        f"Wrote {written} ({result.grid.width} x {result.grid.height} px, "
        f"{result.grid.crs.to_string()}) in {result.seconds:.1f} s",
        err=True,
    )
