"""Typed settings in one place.

Values come from the dataclass defaults, then ``GEODIFF_*`` environment variables; code takes a
:class:`Settings` (or calls :func:`get_settings`) instead of reading the environment itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

# Ground resolution (metres per pixel) of the shipped default model's training data. The rasterizer uses it
# as its default so maps match what the model was trained on; tests check the shipped model agrees.
# 1.0 m/px was measured on the Dubai training data (road widths, car and truck lengths; see the model card).
DEFAULT_RESOLUTION_M = 1.0

# Window size the diffusion model works on, in pixels.
TILE_SIZE = 256

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "geodiff-default"


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "geodiff"


@dataclass(frozen=True)
class Settings:
    overpass_url: str = "https://overpass-api.de/api"
    """Overpass API endpoint (without ``/interpreter``)."""
    overpass_timeout_s: int = 180
    """HTTP timeout for one Overpass request, seconds."""
    overpass_max_query_area_m2: float = 2_500_000_000.0
    """Bboxes larger than this are split into several Overpass sub-queries (osmnx's mechanism)."""
    overpass_rate_limit: bool = True
    """Ask the server's /status endpoint for a free slot before each query (public servers want this)."""
    use_cache: bool = True
    """Cache Overpass responses on disk; a repeated bbox is served without network."""
    cache_dir: Path = field(default_factory=_default_cache)
    max_pixels: int = 400_000_000
    """Largest grid (width x height) geodiff will allocate; larger requests must lower the resolution."""
    max_strip_pixels: int = 16_000_000
    """Synthesis works on strips of at most about this many canvas pixels at a time (bounds RAM/GPU memory)."""
    default_resolution_m: float = DEFAULT_RESOLUTION_M
    model_dir: Path = DEFAULT_MODEL_DIR

    def with_overrides(self, **kwargs: object) -> Settings:
        return replace(self, **kwargs)


_ENV_PREFIX = "GEODIFF_"


def get_settings(**overrides: object) -> Settings:
    """Settings from defaults, ``GEODIFF_<FIELD>`` environment variables, then keyword overrides."""
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = os.environ.get(_ENV_PREFIX + f.name.upper())
        if raw is None:
            continue
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if kind == "bool":
            values[f.name] = raw.strip().lower() in {"1", "true", "yes", "on"}
        elif kind == "int":
            values[f.name] = int(raw)
        elif kind == "float":
            values[f.name] = float(raw)
        elif kind == "Path":
            values[f.name] = Path(raw).expanduser()
        else:
            values[f.name] = raw
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
