"""Options shared by several commands, so they read, validate and behave the same everywhere.

In the manner of ``rasterio.rio.options``: each option is a decorator; options whose values need checking
carry a callback that returns the validated object (``--bbox`` gives a :class:`~geodiff.grid.BBox` in the
``--bbox-crs``), so a command body receives ready values and only calls the library.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geodiff.progress import JsonLinesProgress, TqdmProgress

F = Callable[..., Any]


def _bbox_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--bbox`` text -> validated BBox in ``--bbox-crs`` (parsed first: it is an eager option)."""
    if value is None:
        return None
    from geodiff.grid import parse_bbox

    return parse_bbox(value, crs=ctx.params.get("bbox_crs") or "EPSG:4326")


def bbox_options(required: bool = True, output_crs: bool = True) -> Callable[[F], F]:
    """``--bbox`` (-> a validated :class:`~geodiff.grid.BBox`), ``--bbox-crs`` and ``--crs``."""

    def decorate(f: F) -> F:
        if output_crs:
            f = click.option(
                "--crs",
                "crs",
                default=None,
                metavar="CRS",
                help="Output grid CRS, projected in metres. Default: the UTM zone of the bbox centre.",
            )(f)
        f = click.option(
            "--bbox",
            required=required,
            default=None,
            metavar="W,S,E,N",
            callback=_bbox_callback,
            help="Area as west,south,east,north (lon/lat degrees unless --bbox-crs).",
        )(f)
        return click.option(
            "--bbox-crs",
            default="EPSG:4326",
            show_default=True,
            metavar="CRS",
            is_eager=True,  # parsed before --bbox, whose callback needs it
            help="CRS of the --bbox numbers (only describes the area; the grid is metric).",
        )(f)

    return decorate


def source_options(f: F) -> F:
    """``--osm``, ``--vector``, ``--class-field``: where the map comes from (neither: Overpass)."""
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
    return click.option(
        "--osm",
        "osm_path",
        type=click.Path(path_type=Path),
        default=None,
        help="Local OSM file (.osm, .osm.bz2, .osm.gz, .osm.pbf). Default: download from Overpass.",
    )(f)


def model_option(f: F) -> F:
    return click.option(
        "--model",
        "model",
        default=None,
        metavar="NAME|DIR|HUB_ID",
        help="Model name (see `geodiff models`), model folder, or hub id when online. Default: the default model.",
    )(f)


def device_option(f: F) -> F:
    return click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")(f)


WORKER_THREADS = 1  # torch threads per Dask worker process when --threads is not given


def threads_option(f: F) -> F:
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="CPU threads for torch; with --workers/--scheduler, per worker process. "
        f"Default: torch's choice (all cores) here, {WORKER_THREADS} per worker.",
    )(f)


def worker_threads(threads: int | None) -> int:
    """``--threads`` for each worker process of --workers/--scheduler (default ``WORKER_THREADS``: several
    workers share the machine's cores)."""
    return check_threads(threads) or WORKER_THREADS


MAX_THREADS_PER_CORE = 4  # more torch threads than this only thrash (and 100000 exhausts the process)


def check_threads(threads: int | None) -> int | None:
    """Refuse a ``--threads`` no machine here can use; returns it."""
    import os

    from geodiff.errors import InvalidParameterError

    limit = MAX_THREADS_PER_CORE * (os.cpu_count() or 1)
    if threads is not None and threads > limit:
        raise InvalidParameterError(
            f"--threads {threads} is more than this machine can use: at most {limit} ({MAX_THREADS_PER_CORE} per core)"
        )
    return threads


def use_threads(threads: int | None) -> None:
    """Apply ``--threads`` to this process (a shared machine, or several jobs side by side)."""
    if check_threads(threads):
        import torch

        torch.set_num_threads(threads)


def guidance_option(f: F) -> F:
    return click.option(
        "--guidance-scale",
        type=click.FloatRange(min=1.0),
        default=None,
        metavar="S",
        help="Classifier-free guidance (1 = off; higher follows the map more closely). Default: the model's.",
    )(f)


def sampling_options(seed_help: str = "Random seed; same seed + place = same image.") -> Callable[[F], F]:
    """``--seed``, ``--steps``, ``--sampler``, ``--guidance-scale``, ``--batch-size`` (library defaults)."""

    def decorate(f: F) -> F:
        f = click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=8,
            show_default=True,
            help="Windows per U-Net call.",
        )(f)
        f = guidance_option(f)
        f = click.option(
            "--sampler",
            type=click.Choice(["dpm", "ddpm"]),
            default="dpm",
            show_default=True,
            help="dpm = DPM-Solver++ 2M (fast); ddpm = 1000-step ancestral reference sampler.",
        )(f)
        f = click.option(
            "--steps",
            type=click.IntRange(1, 1000),
            default=None,
            help="Denoising steps, 1..1000. Default: 20 (dpm), 1000 (ddpm).",
        )(f)
        return click.option(
            "--seed", type=click.IntRange(min=0), default=0, show_default=True, help=seed_help
        )(f)

    return decorate


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


def output_path(name: str, help: str, required: bool = False, param: str | None = None) -> Callable[[F], F]:
    """An output file option (``--out``, ``--mask-out``, ``--preview``); checks happen in the library."""
    return click.option(
        name, param or name.lstrip("-").replace("-", "_"), type=click.Path(path_type=Path, dir_okay=True),
        required=required, default=None, help=help,
    )  # fmt: skip


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
    """Refuse outputs that must not be written (see :func:`geodiff.io.check_output_paths`), before any work."""
    from geodiff.io import check_output_paths

    check_output_paths(paths, overwrite)


def echo_event(**fields: object) -> None:
    """A one-line, human-readable event on stderr (``device: cuda, dtype: bfloat16``)."""
    click.echo(", ".join(f"{k}: {v}" for k, v in fields.items() if k != "event"), err=True)
