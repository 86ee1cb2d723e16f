"""``geodiff change``: the after image of a geodiff output for an edited map, and the change mask."""

from __future__ import annotations

from pathlib import Path

import click

from geodiff.cli.options import (
    close_progress,
    cluster_options,
    device_option,
    echo_event,
    make_progress,
    model_option,
    output_path,
    overwrite_option,
    progress_option,
    runtime_option,
    source_options,
)
from geodiff.options import ClusterOptions, SourceOptions


@click.command(
    epilog="Examples:\n\n\b\n  geodiff synth --sample --out before.tif\n"
    "  geodiff change --before before.tif --vector edited.gpkg --out after.tif\n"
    "  geodiff change --before before.tif --map edited_map.tif --out after.tif --margin 4"
)
@click.option(
    "--before",
    "before",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="A geodiff synth (or change) output: its grid, model, seed, steps, sampler and semantic map "
    "(the mask file beside it) are read from it.",
)
@source_options
@click.option(
    "--map",
    "map_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The after map as a class-map GeoTIFF on BEFORE's grid (instead of --osm/--vector/Overpass).",
)
@click.option(
    "--edits",
    "edits_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A vector layer of only the edited features (with --class-field), painted over BEFORE's map "
    "(background features remove what was there).",
)
@output_path("--out", "The after image (RGB GeoTIFF).", required=True, param="out_path")
@output_path("--mask-out", "The after semantic map. Default: <out>.mask.tif beside --out.")
@output_path(
    "--change-out",
    "The change mask (0 unchanged, 1 + old*5 + new where the class changed; a QGIS style names them). "
    "Default: <out>.change.tif beside --out.",
)
@click.option(
    "--margin",
    "margin_m",
    type=click.FloatRange(min=0),
    default=None,
    metavar="M",
    help="Metres around the changed pixels that may change too (the outer half cross-fades into BEFORE); "
    "farther pixels are BEFORE's, bit for bit. Default: 8.",
)
@model_option
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Windows per U-Net call."
)
@device_option
@runtime_option(default=None, default_help=" Default: the runtime that made BEFORE (its RUNTIME tag).")
@cluster_options(
    workers_help="Inpaint the regions around the edits as tasks on a local Dask cluster of N worker processes "
    "(for many edits over a large area; the same pixels as one process).",
    scheduler_help="Run the regions on an existing Dask cluster (tcp://host:8786).",
)
@progress_option
@overwrite_option
def change(
    before: Path,
    source: SourceOptions,
    map_path: Path | None,
    edits_path: Path | None,
    out_path: Path,
    mask_out: Path | None,
    change_out: Path | None,
    margin_m: float | None,
    model: str | None,
    batch_size: int,
    device: str,
    runtime: str | None,
    cluster: ClusterOptions,
    progress_mode: str,
    overwrite: bool,
) -> None:
    """Synthesize the after image of BEFORE for an edited map: it differs from BEFORE only where the map
    changed (and within --margin of it), and is re-synthesized there in context (latent inpainting).

    \b
    Only the windows touching the change are computed. Writes the after image, its semantic map and
    a change mask together (all three or none). Without --map/--edits/--osm/--vector the after map comes
    from the Overpass API (needs internet).
    """
    from geodiff.change import DEFAULT_MARGIN_M, plan_change, synthesize_change

    plan = plan_change(
        before,
        out_path,
        change_out=change_out,
        mask_out=mask_out,
        map_path=map_path,
        edits_path=edits_path,
        osm_path=source.osm_path,
        vector_path=source.vector_path,
        class_field=source.class_field,
        margin_m=DEFAULT_MARGIN_M if margin_m is None else margin_m,
        model=model,
        device=device,
        batch_size=batch_size,
        overwrite=overwrite,
        runtime=runtime,
    )
    progress = make_progress(progress_mode, "change")
    on_event = getattr(progress, "event", None)
    if on_event is None and progress_mode != "none":
        on_event = echo_event
    try:
        result = synthesize_change(plan, progress=progress, on_event=on_event, cluster=cluster)
    finally:
        close_progress(progress)
    click.echo(
        f"Wrote {result.image_path}, {result.mask_path} and {result.change_path}: {result.changed_pixels} px "
        f"changed class, {result.area_pixels} px re-synthesized in {result.windows} window(s), "
        f"{result.seconds:.1f} s",
        err=True,
    )
