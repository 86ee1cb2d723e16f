"""``geodiff synth``: synthetic aerial imagery GeoTIFF for a bbox."""

from __future__ import annotations

from pathlib import Path

import click

from geodiff.cli.options import (
    bbox_options,
    check_outputs,
    close_progress,
    make_progress,
    overwrite_option,
    progress_option,
    source_options,
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
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True, help="Output RGB GeoTIFF.")
@click.option(
    "--mask-out",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the paired semantic map. Default: <out>.mask.tif beside --out.",
)
@click.option(
    "--model",
    "model_dir",
    default=None,
    metavar="DIR|HUB_ID",
    help="Model folder (or hub id when online). Default: the shipped model.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Random seed; same seed + area = same image."
)
@click.option("--steps", type=int, default=None, help="Denoising steps. Default: 20 (dpm), 1000 (ddpm).")
@click.option(
    "--sampler",
    type=click.Choice(["dpm", "ddpm"]),
    default="dpm",
    show_default=True,
    help="dpm = DPM-Solver++ 2M (fast); ddpm = 1000-step ancestral reference sampler.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Windows per U-Net call.")
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
@click.option("--dry-run", is_flag=True, help="Print grid size, window count and estimated time, then stop.")
@progress_option
@overwrite_option
def synth(
    sample: bool,
    bbox: str | None,
    bbox_crs: str,
    crs: str | None,
    osm_path: Path | None,
    vector_path: Path | None,
    class_field: str,
    out_path: Path,
    mask_out: Path | None,
    model_dir: str | None,
    seed: int,
    steps: int | None,
    sampler: str,
    device: str,
    batch_size: int,
    resolution: float | None,
    no_blend: bool,
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
    from geodiff.grid import parse_bbox
    from geodiff.samples import sample_area
    from geodiff.synth import synthesize

    if sample:
        if bbox or osm_path or vector_path:
            raise InvalidParameterError(
                "--sample brings its own area and data: leave out --bbox/--osm/--vector"
            )
        area = sample_area()
        box, vector_path = area.bbox, area.vector_path
    elif bbox is None:
        raise InvalidParameterError("give --bbox W,S,E,N (or --sample for the embedded offline sample area)")
    else:
        box = parse_bbox(bbox, crs=bbox_crs)
    mask_path = mask_out or out_path.with_name(out_path.stem + ".mask.tif")
    if not dry_run:
        check_outputs([out_path, mask_path], overwrite)
    progress = make_progress("none" if dry_run else progress_mode, "synth")
    on_event = getattr(progress, "event", None)
    if on_event is None and progress_mode != "none":
        on_event = _echo_event
    try:
        result = synthesize(
            box,
            out_path,
            osm_path=osm_path,
            vector_path=vector_path,
            class_field=class_field,
            model=model_dir,
            seed=seed,
            steps=steps or (1000 if sampler == "ddpm" else 20),
            sampler=sampler,
            device=device,
            batch_size=batch_size,
            resolution=resolution,
            crs=crs,
            mask_out=mask_path,
            blend=not no_blend,
            dry_run=dry_run,
            progress=progress,
            on_event=on_event,
        )
    finally:
        close_progress(progress)
    if dry_run:
        click.echo(result.describe())
        return
    click.echo(
        f"Wrote {result.image_path} and {result.mask_path} ({result.grid.width} x {result.grid.height} px, "
        f"{result.grid.crs.to_string()}) in {result.seconds:.1f} s",
        err=True,
    )


def _echo_event(**fields: object) -> None:
    click.echo(", ".join(f"{k}: {v}" for k, v in fields.items() if k != "event"), err=True)
