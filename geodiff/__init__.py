"""geodiff: synthetic, georeferenced aerial imagery from OpenStreetMap.

The public API::

    import geodiff

    plan = geodiff.plan_synthesis("7.418,43.732,7.422,43.735", "area.tif")   # what --dry-run prints
    result = geodiff.synthesize(plan)                                        # -> SynthResult
    model = geodiff.load_model("geodiff-default", device="auto")             # -> GeodiffModel
    class_map, grid = geodiff.rasterize_bbox(geodiff.parse_bbox("7.418,43.732,7.422,43.735"))

The library core lives in small modules (``classes``, ``grid``, ``osm``, ``rasterize``, ``io``, ``model``,
``models``, ``pipeline``, ``synth``, ``augment``); the CLI (``geodiff.cli``) and the QGIS plugin are thin
layers over it. Names are imported lazily, so ``import geodiff`` stays cheap (no torch until it is needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geodiff._lazy import lazy_exports
from geodiff._version import __version__
from geodiff.provenance import ATTRIBUTION

_LAZY = {
    "plan_synthesis": "geodiff.synth",
    "synthesize": "geodiff.synth",
    "synthesize_map": "geodiff.synth",
    "render": "geodiff.synth",
    "SynthPlan": "geodiff.synth",
    "SynthResult": "geodiff.synth",
    "load_model": "geodiff.models",
    "installed_models": "geodiff.models",
    "rasterize_bbox": "geodiff.rasterize",
    "rasterize_features": "geodiff.rasterize",
    "parse_bbox": "geodiff.grid",
    "BBox": "geodiff.grid",
    "Grid": "geodiff.grid",
    "generate_dataset": "geodiff.augment",
    "GeodiffPipeline": "geodiff.pipeline",
    "GeodiffModel": "geodiff.model",
}

__all__ = [
    "ATTRIBUTION",
    "BBox",
    "GeodiffModel",
    "GeodiffPipeline",
    "Grid",
    "SynthPlan",
    "SynthResult",
    "__version__",
    "generate_dataset",
    "installed_models",
    "load_model",
    "parse_bbox",
    "plan_synthesis",
    "rasterize_bbox",
    "rasterize_features",
    "render",
    "synthesize",
    "synthesize_map",
]

if TYPE_CHECKING:
    from geodiff.augment import generate_dataset
    from geodiff.grid import BBox, Grid, parse_bbox
    from geodiff.model import GeodiffModel
    from geodiff.models import installed_models, load_model
    from geodiff.pipeline import GeodiffPipeline
    from geodiff.rasterize import rasterize_bbox, rasterize_features
    from geodiff.synth import SynthPlan, SynthResult, plan_synthesis, render, synthesize, synthesize_map


__getattr__ = lazy_exports(__name__, _LAZY)
