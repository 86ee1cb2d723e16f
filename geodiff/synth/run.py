"""Running a plan in this process: strip by strip into memory (:func:`render`) or into files (:func:`synthesize`).

:mod:`geodiff.distributed` computes the same strips on a Dask cluster and assembles them the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geodiff.errors import InvalidParameterError
from geodiff.grid import BBox, Grid
from geodiff.progress import ProgressCallback, report
from geodiff.provenance import run_tags as provenance  # the tags of a run's outputs
from geodiff.settings import Settings, get_settings
from geodiff.synth.assemble import RowSink, assemble
from geodiff.synth.plan import SynthPlan, plan_synthesis
from geodiff.synth.strips import StripResult, compute_strip
from geodiff.synth.write import output_sink

if TYPE_CHECKING:
    import geopandas as gpd

    from geodiff.model import GeodiffModel


@dataclass
class SynthResult:
    """A finished run: where the outputs are, their grid, and how long it took."""

    image_path: Path
    mask_path: Path | None
    grid: Grid
    seconds: float
    plan: SynthPlan
    tags: dict[str, str] = field(default_factory=dict)


def run_plan(
    plan: SynthPlan,
    model: GeodiffModel,
    sink: RowSink,
    features: gpd.GeoDataFrame | None = None,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
) -> None:
    """Denoise ``plan`` strip by strip in this process and hand finished rows to ``sink``.

    ``features`` (a FeatureSet covering the canvas) are loaded from the plan's source when not given.
    :mod:`geodiff.distributed` computes the same strips on a Dask cluster and assembles them the same way.
    """
    settings = settings or get_settings()
    if features is None:
        report(progress, 0.0, "loading map features")
        # features for the whole canvas (not only the bbox) so windows past the bbox edge see the real map
        features = plan.source.load(BBox(*plan.canvas_grid().bounds, crs=plan.grid.crs), settings)
    n = len(plan.strips)

    def strips() -> Iterator[StripResult]:
        for s in range(n):
            sub = None if progress is None else (lambda fr, msg, s=s: progress((s + fr) / n, msg))
            yield compute_strip(plan, model, features, s, sub)

    assemble(plan, strips(), sink)


def render(
    plan: SynthPlan,
    model: GeodiffModel | None = None,
    features: gpd.GeoDataFrame | None = None,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``plan`` in memory: ``(rgb (H, W, 3) uint8, class map (H, W) uint8)`` on the plan's grid.

    The same pixels :func:`synthesize` writes for the plan (for small areas: augmentation tiles, previews).
    """
    model = model if model is not None else plan.model.load(plan.device, plan.quality, plan.runtime)
    rgb = np.zeros((*plan.grid.shape, 3), np.uint8)
    cmap = np.zeros(plan.grid.shape, np.uint8)

    def sink(rgb_rows: np.ndarray, class_rows: np.ndarray, row: int) -> None:
        rgb[row : row + len(rgb_rows)] = rgb_rows
        cmap[row : row + len(class_rows)] = class_rows

    run_plan(plan, model, sink, features, settings, progress)
    return rgb, cmap


def synthesize(
    plan_or_bbox: SynthPlan | BBox | str | tuple[float, float, float, float],
    out_path: str | Path | None = None,
    *,
    settings: Settings | None = None,
    progress: ProgressCallback | None = None,
    on_event: Callable[..., None] | None = None,
    **options: Any,
) -> SynthResult:
    """Synthesize a georeferenced RGB GeoTIFF (and the paired semantic-map GeoTIFF) for an area.

    Parameters
    ----------
    plan_or_bbox
        A :class:`SynthPlan` from :func:`plan_synthesis`, or a bbox: then ``out_path`` and ``options`` are
        :func:`plan_synthesis`'s arguments.
    settings, progress
        Settings (default :func:`geodiff.settings.get_settings`) and a ``progress(fraction, message)`` callback.
    on_event
        Called with keyword fields for notable events (``event="device"``).

    Returns
    -------
    SynthResult

    Notes
    -----
    Both outputs are written to temporary files and renamed only when complete; an error or interrupt leaves
    neither under its final name, and an existing file is replaced only with ``overwrite=True``.
    """
    settings = settings or get_settings()
    if isinstance(plan_or_bbox, SynthPlan):
        if out_path is not None or options:
            raise InvalidParameterError("give either a SynthPlan or a bbox with options, not both")
        plan = plan_or_bbox
    else:
        plan = plan_synthesis(plan_or_bbox, out_path, settings=settings, **options)
    if plan.out_path is None:
        raise InvalidParameterError("the plan has no output path: plan_synthesis(bbox, out_path, ...)")
    started = time.monotonic()
    model = plan.model.load(plan.device, plan.quality, plan.runtime)
    if on_event is not None:
        on_event(event="device", device=plan.device, dtype=str(model.dtype).removeprefix("torch."))
    tags = provenance(plan)
    report(progress, 0.0, "loading map features")
    features = plan.source.load(BBox(*plan.canvas_grid().bounds, crs=plan.grid.crs), settings)
    with output_sink(plan, tags) as sink:
        run_plan(plan, model, sink, features, settings, progress)
    report(progress, 1.0, "done")
    return SynthResult(plan.out_path, plan.mask_path, plan.grid, time.monotonic() - started, plan, tags)
