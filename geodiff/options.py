"""Options as values: the settings several entry points share, each group one small frozen object.

The CLI gathers its options into these (``geodiff.cli.options``) and hands them whole to the library
(:func:`geodiff.synth.plan_synthesis`, :func:`geodiff.augment.generate_dataset`), so a new option is added in
one object and one decorator instead of being copied by hand through every signature. The flat keyword
arguments of the library functions still work: :func:`options_from` builds the object from them.

No torch here (``import geodiff`` stays light).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from geodiff.errors import InvalidParameterError

if TYPE_CHECKING:
    import geopandas as gpd

    from geodiff.grid import BBox
    from geodiff.progress import ProgressCallback
    from geodiff.settings import Settings

Sampler = Literal["dpm", "ddpm"]
Quality = Literal["full", "fast"]
QUALITIES: tuple[str, ...] = ("full", "fast")
"""``full``: the teacher (20 DPM-Solver++ steps, two U-Net passes each with guidance); ``fast``: the model
folder's distilled student (a few steps of one pass each, guidance folded in)."""

Runtime = Literal["torch", "onnx"]
RUNTIMES: tuple[str, ...] = ("torch", "onnx")
"""``torch``: eager PyTorch (any device); ``onnx``: the U-Net and decoder on ONNX Runtime, CPU only, faster there
with the same pixels within tolerance (:mod:`geodiff.model.onnx_runtime`)."""

WORKER_THREADS = 1
"""Torch threads per Dask worker process when none are given: several workers share the machine's cores."""


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None


@dataclass(frozen=True)
class SamplingOptions:
    """What draws the pixels and how: model, device, seed and the denoising settings.

    ``model`` is a loaded :class:`~geodiff.model.GeodiffModel`, a :class:`~geodiff.models.ModelRef`, a name,
    a folder or a hub id (``None``: the default model); ``steps=None`` is the sampler's default.
    ``quality="fast"`` samples with the model folder's distilled student (a few one-pass steps, guidance
    folded in; :mod:`geodiff.model.student`) instead of ``sampler``.
    """

    model: Any = None
    device: str = "auto"
    seed: int = 0
    steps: int | None = None
    sampler: Sampler = "dpm"
    guidance_scale: float | None = None
    batch_size: int = 8
    quality: Quality | None = None
    """``None``: ``"full"`` for a model folder, an in-memory model's own."""
    runtime: Runtime = "torch"

    def __post_init__(self) -> None:
        if self.quality is not None:
            check_quality(self.quality)
        check_runtime_name(self.runtime)


def check_quality(quality: str) -> str:
    if quality not in QUALITIES:
        raise InvalidParameterError(f"quality must be 'full' or 'fast', got {quality!r}")
    return quality


def check_runtime_name(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise InvalidParameterError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return runtime


@dataclass(frozen=True)
class SourceOptions:
    """Where the map comes from: a local OSM file, a vector layer (with its class attribute), or Overpass."""

    osm_path: Path | None = None
    vector_path: Path | None = None
    class_field: str = "class"

    def __post_init__(self) -> None:
        object.__setattr__(self, "osm_path", _path(self.osm_path))
        object.__setattr__(self, "vector_path", _path(self.vector_path))

    def __str__(self) -> str:
        return str(self.osm_path or self.vector_path or "overpass")

    def load(
        self, bbox: BBox, settings: Settings, progress: ProgressCallback | None = None
    ) -> gpd.GeoDataFrame:
        """The features of ``bbox`` (see :func:`geodiff.osm.load_features`)."""
        from geodiff.osm import load_features

        return load_features(
            bbox,
            osm_path=self.osm_path,
            vector_path=self.vector_path,
            class_field=self.class_field,
            settings=settings,
            progress=progress,
        )


@dataclass(frozen=True)
class OutputOptions:
    """How a synthesis writes: the paired mask (default ``<out>.mask.tif``; ``write_mask=False``: none),
    replacing existing files, and COG (``None``: for grids over ``GEODIFF_COG_MIN_PIXELS``)."""

    mask_out: Path | None = None
    write_mask: bool = True
    overwrite: bool = False
    cog: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask_out", _path(self.mask_out))


@dataclass(frozen=True)
class ClusterOptions:
    """Where the work runs: this process, a local Dask cluster of ``workers`` processes, or the cluster at
    ``scheduler``; ``threads`` are torch's CPU threads here, or per worker process on a cluster."""

    workers: int | None = None
    scheduler: str | None = None
    threads: int | None = None

    @property
    def distributed(self) -> bool:
        return self.workers is not None or self.scheduler is not None

    @property
    def threads_per_worker(self) -> int:
        return self.threads or WORKER_THREADS

    def use_threads(self) -> None:
        """Apply ``threads`` to this process (for a run here, not on a cluster)."""
        use_threads(self.threads)


def use_threads(threads: int | None) -> None:
    """Torch's CPU threads in this process (a shared machine, or several jobs side by side); None: unchanged."""
    if threads:
        import torch

        torch.set_num_threads(threads)


T = TypeVar("T")


def options_from(cls: type[T], given: T | None, what: str, **flat: Any) -> T:
    """``given``, or the options built from the flat keyword arguments of the older API; giving both (a flat
    argument away from its default) is an error rather than a silent choice between them."""
    if given is None:
        return cls(**flat)
    defaults = cls()
    clash = [k for k, v in flat.items() if v is not getattr(defaults, k) and v != getattr(defaults, k)]
    if clash:
        raise InvalidParameterError(f"give {what}=... or {', '.join(clash)}, not both")
    return given
