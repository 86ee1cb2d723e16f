"""The embedded offline sample area (``geodiff synth --sample``): a real place that needs no network.

Part of Monaco (Port Hercule and La Condamine), shipped as classified OpenStreetMap features in
``geodiff/data/sample_monaco.geojson`` (made by ``samples/make_sample_area.py``). Map data (c) OpenStreetMap
contributors, ODbL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from geodiff.errors import InputNotFoundError
from geodiff.grid import BBox

SAMPLE_BBOX = (7.4195, 43.7325, 7.4245, 43.7360)  # W, S, E, N: ~400 m x 390 m
SAMPLE_PATH = Path(__file__).resolve().parent / "data" / "sample_monaco.geojson"


@dataclass(frozen=True)
class SampleArea:
    name: str
    bbox: BBox
    vector_path: Path


def sample_area() -> SampleArea:
    if not SAMPLE_PATH.exists():
        raise InputNotFoundError(
            f"the sample area file {SAMPLE_PATH} is missing: reinstall geodiff from a complete checkout"
        )
    return SampleArea("Monaco, Port Hercule", BBox(*SAMPLE_BBOX), SAMPLE_PATH)
