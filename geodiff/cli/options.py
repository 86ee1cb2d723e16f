"""Options shared by several commands, so they read, validate and behave the same everywhere.

In the manner of ``rasterio.rio.options``: each option is a decorator; options whose values need checking
carry a callback that returns the validated object (``--bbox`` gives a :class:`~geodiff.grid.BBox` in the
``--bbox-crs``), and option groups arrive gathered into the library's values (:mod:`geodiff.options`:
``sampling``, ``source``, ``output``, ``cluster``), so a command body receives ready values and passes them
whole to the library: an option cannot be parsed and then forgotten on the way.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geodiff.errors import InvalidParameterError
from geodiff.options import (
    QUALITIES,
    RUNTIMES,
    WORKER_THREADS,
    ClusterOptions,
    OutputOptions,
    SamplingOptions,
    SourceOptions,
)
from geodiff.progress import JsonLinesProgress, TqdmProgress

F = Callable[..., Any]


def _gathered(name: str, build: Callable[..., Any], params: tuple[str, ...]) -> Callable[[F], F]:
    """Hand the command one value ``name=build(**those params)`` instead of the separate ``params``."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = build(**{p: kwargs.pop(p) for p in params})
            return f(*args, **kwargs)

        return command

    return decorate


def _bbox_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--bbox`` text -> validated BBox in ``--bbox-crs`` (parsed first: it is an eager option)."""
    if value is None:
        return None
    from geodiff.grid import parse_bbox

    return parse_bbox(value, crs=ctx.params.get("bbox_crs") or "EPSG:4326")


def crs_option(
    help: str = "Output grid CRS, projected in metres. Default: the UTM zone of the bbox centre.",
) -> Callable[[F], F]:
    return click.option("--crs", "crs", default=None, metavar="CRS", help=help)


def bbox_crs_option(
    help: str = "CRS of the --bbox numbers (only describes the area; the grid is metric).",
) -> Callable[[F], F]:
    return click.option(
        "--bbox-crs",
        default="EPSG:4326",
        show_default=True,
        metavar="CRS",
        is_eager=True,  # parsed before --bbox, whose callback needs it
        help=help,
    )


def bbox_options(required: bool = True, output_crs: bool = True) -> Callable[[F], F]:
    """``--bbox`` (-> a validated :class:`~geodiff.grid.BBox`), ``--bbox-crs`` and ``--crs``."""

    def decorate(f: F) -> F:
        if output_crs:
            f = crs_option()(f)
        f = click.option(
            "--bbox",
            required=required,
            default=None,
            metavar="W,S,E,N",
            callback=_bbox_callback,
            help="Area as west,south,east,north (lon/lat degrees unless --bbox-crs).",
        )(f)
        return bbox_crs_option()(f)

    return decorate


def source_options(f: F) -> F:
    """``--osm``, ``--vector``, ``--class-field`` -> ``source``: a :class:`~geodiff.options.SourceOptions`
    (neither file: Overpass)."""
    f = _gathered("source", SourceOptions, ("osm_path", "vector_path", "class_field"))(f)
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


def runtime_option(f: F | None = None, *, default: str | None = "torch", default_help: str = "") -> Any:
    """``--runtime torch|onnx``: eager PyTorch, or the U-Net and decoder on ONNX Runtime (CPU). Used bare
    (default torch) or as ``runtime_option(default=None, default_help=...)`` where another default applies."""

    def decorate(g: F) -> F:
        return click.option(
            "--runtime",
            type=click.Choice(RUNTIMES),
            default=default,
            show_default=default is not None,
            help="onnx = the U-Net and decoder on ONNX Runtime: CPU only, about 1.4x faster per tile there, "
            "pixels within one level of torch's; exported once per model and window size into the cache folder "
            f"(20-40 s; pip install 'geodiff[onnx]').{default_help}",
        )(g)

    return decorate(f) if f is not None else decorate


def threads_option(f: F) -> F:
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="CPU threads for torch; with --workers/--scheduler, per worker process. "
        f"Default: torch's choice (all cores) here, {WORKER_THREADS} per worker.",
        callback=lambda _ctx, _param, value: check_threads(value),
    )(f)


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


def cluster_options(workers_help: str, scheduler_help: str) -> Callable[[F], F]:
    """``--workers``, ``--scheduler``, ``--threads`` -> ``cluster``: a :class:`~geodiff.options.ClusterOptions`."""

    def decorate(f: F) -> F:
        f = _gathered("cluster", ClusterOptions, ("workers", "scheduler", "threads"))(f)
        f = threads_option(f)
        f = click.option("--scheduler", default=None, metavar="ADDRESS", help=scheduler_help)(f)
        return click.option("--workers", type=click.IntRange(min=1), default=None, help=workers_help)(f)

    return decorate


def guidance_option(f: F) -> F:
    return click.option(
        "--guidance-scale",
        type=click.FloatRange(min=1.0),
        default=None,
        metavar="S",
        help="Classifier-free guidance (1 = off; higher follows the map more closely). Default: the model's.",
    )(f)


def seed_option(help: str = "Random seed; same seed + place = same image.", **kw: Any) -> Callable[[F], F]:
    """``--seed`` (a sampling seed >= 0 unless ``kw`` says otherwise)."""
    kw = {"type": click.IntRange(min=0), "default": 0, "show_default": True, **kw}
    return click.option("--seed", help=help, **kw)


def steps_option(
    help: str = "Denoising steps, 1..1000. Default: 20 (dpm), 1000 (ddpm).", **kw: Any
) -> Callable[[F], F]:
    """``--steps`` (denoising steps; default: the sampler's unless ``kw`` says otherwise)."""
    kw = {"type": click.IntRange(1, 1000), "default": None, **kw}
    return click.option("--steps", help=help, **kw)


def quality_option(f: F) -> F:
    """``--quality full|fast``: the teacher, or the model folder's distilled few-step student."""
    return click.option(
        "--quality",
        type=click.Choice(QUALITIES),
        default="full",
        show_default=True,
        help="full = 20 DPM-Solver++ steps, 2 U-Net passes each (guidance); fast = the model's distilled "
        "student, a few steps of 1 pass each (about 8x faster on a CPU; see `geodiff models`).",
    )(f)


def sampling_options(seed_help: str = "Random seed; same seed + place = same image.") -> Callable[[F], F]:
    """``--model``, ``--seed``, ``--steps``, ``--sampler``, ``--quality``, ``--guidance-scale``, ``--batch-size``,
    ``--device``, ``--runtime``
    -> ``sampling``: a :class:`~geodiff.options.SamplingOptions` (library defaults)."""

    def decorate(f: F) -> F:
        f = _gathered(
            "sampling", SamplingOptions, tuple(fl.name for fl in dataclasses.fields(SamplingOptions))
        )(f)
        f = runtime_option(device_option(f))
        f = click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=8,
            show_default=True,
            help="Windows per U-Net call.",
        )(f)
        f = guidance_option(f)
        f = quality_option(f)
        f = click.option(
            "--sampler",
            type=click.Choice(["dpm", "ddpm"]),
            default="dpm",
            show_default=True,
            help="dpm = DPM-Solver++ 2M (20 steps); ddpm = 1000-step ancestral reference sampler "
            "(--quality full only).",
        )(f)
        f = steps_option()(f)
        f = seed_option(seed_help)(f)
        return model_option(f)

    return decorate


def _output(mask_out: Path | None, no_mask: bool, cog: bool | None, overwrite: bool) -> OutputOptions:
    if no_mask and mask_out is not None:
        raise InvalidParameterError("--no-mask and --mask-out contradict each other: give one of them")
    return OutputOptions(mask_out=mask_out, write_mask=not no_mask, overwrite=overwrite, cog=cog)


def output_options(f: F) -> F:
    """``--mask-out``, ``--no-mask``, ``--cog/--no-cog``, ``--overwrite`` -> ``output``: an
    :class:`~geodiff.options.OutputOptions`."""
    f = _gathered("output", _output, ("mask_out", "no_mask", "cog", "overwrite"))(f)
    f = overwrite_option(f)
    f = click.option(
        "--cog/--no-cog",
        default=None,
        help="Cloud-Optimized GeoTIFF outputs with overviews. Default: for areas over GEODIFF_COG_MIN_PIXELS.",
    )(f)
    f = click.option("--no-mask", is_flag=True, help="Do not write the semantic map.")(f)
    return output_path(
        "--mask-out", "Where to write the paired semantic map. Default: <out>.mask.tif beside --out."
    )(f)


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
