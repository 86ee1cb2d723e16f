"""``geodiff dataset build``: cut (image, class map) training tiles into a compact dataset folder."""

from __future__ import annotations

from pathlib import Path

import click

from geodiff.cli.options import (
    close_progress,
    make_progress,
    overwrite_option,
    progress_option,
    seed_option,
    source_options,
)
from geodiff.errors import InvalidParameterError
from geodiff.options import SourceOptions
from geodiff.settings import DEFAULT_RESOLUTION_M, TILE_SIZE


@click.group()
def dataset() -> None:
    """Build training datasets of (image, mask) tiles."""


@dataset.command()
@click.option(
    "--images",
    "images",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder with images/ + masks/ colour-mask pairs (searched recursively), e.g. dubai_aerial.",
)
@click.option(
    "--orthophoto",
    type=click.Path(path_type=Path),
    default=None,
    help="A georeferenced RGB GeoTIFF; its class map comes from --osm or --vector.",
)
@source_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output dataset folder.")
@click.option(
    "--colors",
    default="dubai_aerial",
    show_default=True,
    help="Mask colour table (geodiff/train/colors.py): dubai_aerial or geodiff.",
)
@click.option(
    "--resolution",
    type=float,
    default=DEFAULT_RESOLUTION_M,
    show_default=True,
    help="Ground resolution in m/px (orthophotos are resampled to it; recorded for mask folders).",
)
@click.option(
    "--tile-size", type=click.IntRange(min=16), default=TILE_SIZE, show_default=True, help="Tile side in px."
)
@click.option(
    "--stride", type=click.IntRange(min=1), default=None, help="Window step in px (default: the tile size)."
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.1,
    show_default=True,
    help="Fraction of source images held out as the fixed validation split.",
)
@seed_option("Seed of the train/validation split.", type=int)
@click.option(
    "--tolerance",
    type=click.IntRange(0, 255),
    default=24,
    show_default=True,
    help="Largest per-channel colour difference still matched to a mask colour.",
)
@click.option(
    "--jpeg-quality",
    type=click.IntRange(1, 100),
    default=90,
    show_default=True,
    help="JPEG quality of stored tiles.",
)
@progress_option
@overwrite_option
def build(
    images: Path | None,
    orthophoto: Path | None,
    source: SourceOptions,
    out: Path,
    colors: str,
    resolution: float,
    tile_size: int,
    stride: int | None,
    val_fraction: float,
    seed: int,
    tolerance: int,
    jpeg_quality: int,
    progress_mode: str,
    overwrite: bool,
) -> None:
    """Cut tiles from colour-mask folders (--images) or an orthophoto + OSM/vector (--orthophoto)."""
    from geodiff.train.dataset import build_from_mask_folder, build_from_orthophoto, dataset_transaction

    if (images is None) == (orthophoto is None):
        raise InvalidParameterError("give exactly one of --images DIR or --orthophoto FILE")
    tx = dataset_transaction(out, overwrite)  # checks --out before any work
    progress = make_progress(progress_mode, "dataset")
    try:
        if images is not None:
            manifest = build_from_mask_folder(
                images,
                out,
                colors=colors,
                resolution_m=resolution,
                tile_size=tile_size,
                stride=stride,
                val_fraction=val_fraction,
                seed=seed,
                tolerance=tolerance,
                jpeg_quality=jpeg_quality,
                progress=progress,
                tx=tx,
            )
        else:
            manifest = build_from_orthophoto(
                orthophoto,
                out,
                osm_path=source.osm_path,
                vector_path=source.vector_path,
                class_field=source.class_field,
                resolution_m=resolution,
                tile_size=tile_size,
                stride=stride,
                val_fraction=val_fraction,
                seed=seed,
                jpeg_quality=jpeg_quality,
                progress=progress,
                tx=tx,
            )
    finally:
        close_progress(progress)
    click.echo(
        f"{manifest['num_tiles']} tiles ({manifest['num_train']} train, {manifest['num_val']} val) "
        f"written to {out}"
    )
