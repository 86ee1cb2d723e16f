"""The README's main job: ``geodiff synth --sample`` with the shipped model (slow on CPU: ``-m slow``)."""

from __future__ import annotations

import numpy as np
import pytest

from geodiff.cli import main
from geodiff.grid import grid_for_bbox
from geodiff.io import read_raster
from geodiff.samples import sample_area
from geodiff.settings import DEFAULT_MODEL_DIR, DEFAULT_RESOLUTION_M

pytestmark = pytest.mark.slow


def test_sample_area_with_shipped_model(tmp_path):
    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        pytest.fail(f"the shipped model is missing from {DEFAULT_MODEL_DIR}")
    out = tmp_path / "monaco.tif"
    assert main(["synth", "--sample", "--out", str(out), "--progress", "none"]) == 0
    rgb, grid, tags = read_raster(out)
    mask, _, _ = read_raster(tmp_path / "monaco.mask.tif")
    expected = grid_for_bbox(sample_area().bbox, DEFAULT_RESOLUTION_M)
    assert grid.transform == expected.transform and rgb.shape == (3, *expected.shape)
    assert rgb.std() > 5 and len(np.unique(mask)) >= 4
    assert "OpenStreetMap" in tags["ATTRIBUTION"]
