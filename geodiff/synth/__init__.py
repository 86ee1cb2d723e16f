"""Area -> semantic map -> tiled, blended latent diffusion -> mosaicked, georeferenced GeoTIFF.

:func:`plan_synthesis` computes everything a run will do before any heavy work (grid, windows, strips, outputs,
optionally the estimated time: what ``--dry-run`` prints); :func:`synthesize` runs a plan. The canvas (the bbox
grid grown to whole windows on the global window lattice) is denoised by :class:`geodiff.pipeline.GeodiffPipeline`
in overlapping windows whose predictions are blended at every step.

Memory stays bounded for large areas: the canvas is processed in strips of window rows; consecutive strips
share one window row, and their results are cross-faded over it. The initial noise is one field for the whole
world keyed by seed and place (:mod:`geodiff.noise`), so the same place and seed give the same pixels whatever
command or bbox they are part of.

One module per job, in the order a run goes through them:

- :mod:`~geodiff.synth.plan`: :class:`SynthPlan`, :func:`plan_synthesis` and the layout arithmetic;
- :mod:`~geodiff.synth.canvas`: one canvas through the pipeline, :func:`synthesize_map` for in-memory maps;
- :mod:`~geodiff.synth.strips`: a strip of window rows computed on its own (here or on a Dask worker);
- :mod:`~geodiff.synth.assemble`: strips cross-faded into finished rows handed to a :data:`RowSink`;
- :mod:`~geodiff.synth.write`: the sink writing a plan's files atomically;
- :mod:`~geodiff.synth.run`: a plan run in this process (:func:`render`, :func:`synthesize`);
- :mod:`~geodiff.synth.estimate`: a plan's duration from one timed U-Net call.

Everything public is re-exported here: ``from geodiff.synth import X`` is the import to use.
"""

from __future__ import annotations

from geodiff.provenance import run_tags as provenance  # the tags of a run's outputs
from geodiff.synth.assemble import RowSink, assemble
from geodiff.synth.canvas import _canvas_generator, _step_noise, _to_uint8, denoise_canvas, synthesize_map
from geodiff.synth.estimate import estimate_seconds
from geodiff.synth.plan import (
    DEFAULT_STEPS,
    SAMPLERS,
    MapSource,
    SynthPlan,
    check_request,
    default_mask_path,
    global_origin,
    make_layout,
    plan_synthesis,
    window_overlap,
)
from geodiff.synth.run import SynthResult, render, run_plan, synthesize
from geodiff.synth.strips import (
    STRIP_FEATURE_MARGIN_M,
    StripResult,
    compute_strip,
    strip_features,
    strip_rows,
)
from geodiff.synth.write import output_sink
from geodiff.tiling import layout_for

__all__ = [
    "DEFAULT_STEPS",
    "SAMPLERS",
    "STRIP_FEATURE_MARGIN_M",
    "MapSource",
    "RowSink",
    "StripResult",
    "SynthPlan",
    "SynthResult",
    "_canvas_generator",
    "_step_noise",
    "_to_uint8",
    "assemble",
    "check_request",
    "compute_strip",
    "default_mask_path",
    "denoise_canvas",
    "estimate_seconds",
    "global_origin",
    "layout_for",
    "make_layout",
    "output_sink",
    "plan_synthesis",
    "provenance",
    "render",
    "run_plan",
    "strip_features",
    "strip_rows",
    "synthesize",
    "synthesize_map",
    "window_overlap",
]
