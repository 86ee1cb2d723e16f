"""The provenance tags of every synthetic output: one schema for ``synth`` and ``augment`` alike.

A run's fields (:func:`run_tags`) go into the GeoTIFF tags of its image and class map, completed at write time
with the attribution and the software (:func:`provenance_tags`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from geodiff._version import __version__

ATTRIBUTION = "Map data (c) OpenStreetMap contributors, ODbL"


class Run(Protocol):
    """What the tags read from a :class:`geodiff.synth.SynthPlan` (a protocol: provenance sits below synth)."""

    model: Any
    seed: int
    steps: int
    sampler: str
    quality: str
    runtime: str
    guidance_scale: float
    blend: bool
    device: str
    bbox: Any
    source: Any


def run_tags(plan: Run) -> dict[str, str]:
    """What produced the pixels of ``plan``: model, seed, sampler, guidance, source..."""
    tags: dict[str, object] = {
        "MODEL": plan.model.name,
        "SEED": plan.seed,
        "STEPS": plan.steps,
        "SAMPLER": plan.sampler,
        "QUALITY": plan.quality,
        "RUNTIME": plan.runtime,  # `geodiff change` draws the change on the runtime that made BEFORE
        "GUIDANCE_SCALE": f"{plan.guidance_scale:g}",
        "BLEND": plan.blend,
        "DEVICE": plan.device,
        "GEODIFF_VERSION": __version__,
        **plan.bbox.tags(),
        "SOURCE": str(plan.source),
        "SYNTHETIC": "yes",
    }
    from geodiff.models import model_fingerprint

    fingerprint = model_fingerprint(plan.model)
    if fingerprint is not None:  # `geodiff change` checks that its model is the one that made the image
        tags["MODEL_SHA256"] = fingerprint
    mask_path, out_path = getattr(plan, "mask_path", None), getattr(plan, "out_path", None)
    if mask_path is not None and out_path is not None:  # where `geodiff change` finds the map
        tags["MASK"] = mask_path.name if mask_path.parent == out_path.parent else mask_path.resolve()
    return {k: str(v) for k, v in tags.items()}


def provenance_tags(extra: Mapping[str, object] | None = None) -> dict[str, str]:
    """The tags a written file carries: attribution and software, then ``extra`` (upper-cased keys)."""
    tags = {"ATTRIBUTION": ATTRIBUTION, "SOFTWARE": f"geodiff {__version__}"}
    for k, v in (extra or {}).items():
        tags[str(k).upper()] = str(v)
    return tags
