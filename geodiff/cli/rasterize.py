"""``geodiff rasterize``: OpenStreetMap (or a vector layer) -> semantic map GeoTIFF."""

from __future__ import annotations

from pathlib import Path

import click

from geodiff.cli.options import (
    bbox_options,
    close_progress,
    make_progress,
    output_path,
    overwrite_option,
    progress_option,
    source_options,
)
from geodiff.options import SourceOptions


@click.command(
    epilog="Example: geodiff rasterize --bbox 7.418,43.732,7.422,43.735 --osm monaco.osm.pbf "
    "--out map.tif --preview map.png"
)
@bbox_options()
@source_options
@click.option(
    "--resolution",
    type=float,
    default=None,
    metavar="M",
    help="Ground resolution in metres per pixel. Default: the shipped model's training resolution.",
)
@output_path(
    "--out", "Output GeoTIFF: one band of class ids with a colour table.", required=True, param="out_path"
)
@output_path("--preview", "Also write a colour PNG preview here.", param="preview_path")
@click.option("--allow-empty", is_flag=True, help="Write an all-background map when no features are found.")
@progress_option
@overwrite_option
def rasterize(
    bbox,
    bbox_crs: str,
    crs: str | None,
    source: SourceOptions,
    resolution: float | None,
    out_path: Path,
    preview_path: Path | None,
    allow_empty: bool,
    progress_mode: str,
    overwrite: bool,
) -> None:
    """Rasterize buildings, roads, water and vegetation in a bbox to a semantic map GeoTIFF.

    \b
    Classes (pixel values): 0 background, 1 building, 2 road, 3 water, 4 vegetation.
    The map is in the UTM zone of the bbox centre (or --crs), north-up, at --resolution m/px.
    Sources: --osm FILE (.osm, .osm.bz2, .osm.pbf), --vector FILE (GeoJSON/GeoPackage with a
    class attribute), or, with neither, the Overpass API (needs internet; responses are cached).
    """
    from geodiff.classes import CLASS_NAMES
    from geodiff.rasterize import rasterize_to_file

    progress = make_progress(progress_mode, "rasterize")
    try:
        class_map, grid = rasterize_to_file(
            bbox,
            out_path,
            preview=preview_path,
            resolution=resolution,
            crs=crs,
            osm_path=source.osm_path,
            vector_path=source.vector_path,
            class_field=source.class_field,
            allow_empty=allow_empty,
            overwrite=overwrite,
            progress=progress,
        )
    finally:
        close_progress(progress)
    counts = ", ".join(f"{name} {100 * (class_map == i).mean():.1f}%" for i, name in enumerate(CLASS_NAMES))
    click.echo(
        f"Wrote {out_path} ({grid.width} x {grid.height} px at {grid.resolution:g} m, {grid.crs.to_string()}): {counts}",
        err=True,
    )
