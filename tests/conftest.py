"""Shared fixtures. Tests never touch the network; those using ../shared/data skip when it is absent."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# the helper modules beside the tests (tiny_model, town, mask_folder) import as top-level modules
sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("GEODIFF_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLES = REPO / "samples"

# Two CPU cores are shared by the whole test run: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def osm_extracts(shared_data: Path) -> Path:
    path = shared_data / "osm"
    if not path.is_dir():
        pytest.skip(f"OSM extracts not found at {path}")
    return path


@pytest.fixture(scope="session")
def dubai_aerial(shared_data: Path) -> Path:
    path = shared_data / "dubai_aerial"
    if not path.is_dir():
        pytest.skip(f"Dubai aerial data not found at {path}")
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small built training dataset (two 128 px sources cut into 64 px tiles), once per test module."""
    from geodiff.train.dataset import build_from_mask_folder

    from mask_folder import make_folder

    root = tmp_path_factory.mktemp("data")
    make_folder(root / "src", n=2, size=(128, 128))
    build_from_mask_folder(root / "src", root / "ds", tile_size=64, val_fraction=0.5)
    return root / "ds"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point every test at a private cache and an unroutable Overpass URL unless it sets its own."""
    monkeypatch.setenv("GEODIFF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GEODIFF_OVERPASS_URL", "http://127.0.0.1:9/api")
