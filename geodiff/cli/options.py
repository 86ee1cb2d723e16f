"""Options shared by several commands, so they read and behave the same everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geodiff.errors import InvalidParameterError
from geodiff.progress import JsonLinesProgress, TqdmProgress

F = Callable[..., Any]


def bbox_options(required: bool = True) -> Callable[[F], F]:
    """--bbox, --bbox-crs and --crs, the same in every command."""

    def decorate(f: F) -> F:
        f = click.option(
            "--crs",
            "crs",
            default=None,
            metavar="CRS",
            help="Output CRS (projected, metres). Default: UTM zone of the bbox centre.",
        )(f)
        f = click.option(
            "--bbox-crs",
            default="EPSG:4326",
            show_default=True,
            metavar="CRS",
            help="CRS of the --bbox numbers.",
        )(f)
        return click.option(
            "--bbox",
            required=required,
            default=None,
            metavar="W,S,E,N",
            help="Area as west,south,east,north (lon/lat degrees unless --bbox-crs).",
        )(f)

    return decorate


def source_options(f: F) -> F:
    f = click.option(
        "--class-field",
        default="class",
        show_default=True,
        help="Attribute of --vector features holding the class name or id.",
    )(f)
    f = click.option(
        "--vector",
        "vector_path",
        type=click.Path(path_type=Path),
        default=None,
        help="GeoJSON/GeoPackage layer with a class attribute (instead of OSM).",
    )(f)
    f = click.option(
        "--osm",
        "osm_path",
        type=click.Path(path_type=Path),
        default=None,
        help="Local OSM file (.osm, .osm.bz2, .osm.pbf). Default: download from Overpass.",
    )(f)
    return f


def progress_option(f: F) -> F:
    return click.option(
        "--progress",
        "progress_mode",
        type=click.Choice(["bar", "json", "none"]),
        default="bar",
        show_default=True,
        help="Progress display on stderr; 'json' writes one JSON object per line.",
    )(f)


def overwrite_option(f: F) -> F:
    return click.option("--overwrite", is_flag=True, help="Replace output files that already exist.")(f)


def make_progress(mode: str, description: str) -> TqdmProgress | JsonLinesProgress | None:
    if mode == "json":
        return JsonLinesProgress()
    if mode == "bar":
        return TqdmProgress(description)
    return None


def close_progress(progress: object) -> None:
    close = getattr(progress, "close", None)
    if close is not None:
        close()


def check_outputs(paths: list[Path | None], overwrite: bool) -> None:
    """Refuse to replace existing files unless --overwrite; checked before any work starts."""
    for p in paths:
        if p is None:
            continue
        if p.exists() and not overwrite:
            raise InvalidParameterError(
                f"{p} already exists: pass --overwrite to replace it, or choose another name"
            )
        if not p.parent.exists():
            raise InvalidParameterError(f"output folder {p.parent} does not exist: create it first")
