"""Shared fixtures. Tests never touch the network; those using ../shared/data skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point every test at a private cache and an unroutable Overpass URL unless it sets its own."""
    monkeypatch.setenv("GEODIFF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GEODIFF_OVERPASS_URL", "http://127.0.0.1:9/api")
