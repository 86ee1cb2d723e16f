"""``geodiff augment``: a paired (synthetic image, semantic mask) dataset for segmentation training."""

from __future__ import annotations

from pathlib import Path

import click

from geodiff.cli.options import (
    bbox_crs_option,
    close_progress,
    cluster_options,
    crs_option,
    make_progress,
    overwrite_option,
    progress_option,
    sampling_options,
    source_options,
)
from geodiff.options import ClusterOptions, SamplingOptions, SourceOptions


@click.command(
    epilog="Examples:\n\n"
    "  geodiff augment --area 7.41,43.72,7.44,43.75 --osm monaco.osm.pbf --n-windows 200 --out aug/\n\n"
    "  geodiff augment --windows bboxes.txt --seeds-per-window 4 --format png --out aug/"
)
@click.option(
    "--windows",
    "windows_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Bboxes to synthesize: a text file with one W,S,E,N per line, or a GeoJSON of polygons.",
)
@click.option(
    "--area", default=None, metavar="W,S,E,N", help="Draw --n-windows random tiles inside this area."
)
@click.option("--n-windows", type=int, default=0, help="Number of random windows (with --area).")
@bbox_crs_option("CRS of --area/--windows.")
@crs_option("Output CRS. Default: UTM zone of each window.")
@source_options
@click.option("--seeds-per-window", type=int, default=1, show_default=True, help="Samples per window.")
@click.option(
    "--min-labeled",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Random windows: minimum fraction of non-background map pixels (0..1).",
)
@click.option("--format", "fmt", type=click.Choice(["tif", "png"]), default="tif", show_default=True)
@sampling_options(seed_help="First seed (also picks the random windows).")
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Dataset folder to create."
)
@cluster_options(
    workers_help="Render the samples as tasks on a local Dask cluster of N worker processes.",
    scheduler_help="Render on an existing Dask cluster.",
)
@click.option(
    "--changes",
    is_flag=True,
    help="Change-detection sets: each sample also gets a random plausible edit of its map (remove/add a "
    "building, add a road or a pond) and its after image, after mask and change mask (after_images/, "
    "after_masks/, changes/; the manifest says what was edited). Runs in this process.",
)
@click.option(
    "--margin",
    "margin_m",
    type=click.FloatRange(min=0),
    default=None,
    metavar="M",
    help="With --changes: metres around an edit that may change too (default 8).",
)
@progress_option
@overwrite_option
def augment(
    windows_path: Path | None,
    area: str | None,
    n_windows: int,
    bbox_crs: str,
    crs: str | None,
    source: SourceOptions,
    seeds_per_window: int,
    min_labeled: float,
    fmt: str,
    sampling: SamplingOptions,
    out_dir: Path,
    cluster: ClusterOptions,
    changes: bool,
    margin_m: float | None,
    progress_mode: str,
    overwrite: bool,
) -> None:
    """Generate synthetic image + mask tiles: OUT/images/, OUT/masks/, OUT/manifest.json and OUT/manifest.csv.

    \b
    Masks hold class ids (0 background, 1 building, 2 road, 3 water, 4 vegetation): the folder loads directly
    as a segmentation dataset (torchgeo, segmentation_models_pytorch-style loaders). Nothing is left under
    --out if the run fails or is interrupted.
    """
    from geodiff.augment import generate_dataset, read_windows
    from geodiff.errors import InputNotFoundError, InvalidParameterError
    from geodiff.grid import parse_bbox

    if (windows_path is None) == (area is None):
        raise InvalidParameterError("give exactly one of --windows FILE or --area W,S,E,N (with --n-windows)")
    for p, name in ((source.osm_path, "--osm"), (source.vector_path, "--vector")):
        if p is not None and not p.exists():
            raise InputNotFoundError(f"{name} {p} does not exist")
    if changes and cluster.distributed:
        raise InvalidParameterError("--changes renders in this process: leave out --workers/--scheduler")
    windows = read_windows(windows_path, bbox_crs) if windows_path is not None else None
    box = parse_bbox(area, crs=bbox_crs) if area is not None else None
    progress = make_progress(progress_mode, "augment")
    try:
        result = generate_dataset(
            out_dir,
            windows=windows,
            area=box,
            n_windows=n_windows,
            seeds_per_window=seeds_per_window,
            crs=crs,
            fmt=fmt,  # type: ignore[arg-type]
            min_labeled=min_labeled,
            overwrite=overwrite,
            progress=progress,
            sampling=sampling,
            source=source,
            cluster=cluster,
            changes=changes,
            margin_m=margin_m,
        )
    finally:
        close_progress(progress)
    click.echo(f"Wrote {result.n_samples} pairs to {result.out_dir} in {result.seconds:.0f} s", err=True)
