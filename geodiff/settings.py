"""Typed settings in one place.

Values come from the dataclass defaults, then ``GEODIFF_*`` environment variables; code takes a
:class:`Settings` (or calls :func:`get_settings`) instead of reading the environment itself. A malformed or
out-of-range environment value is a clear :class:`~geodiff.errors.InvalidParameterError` naming the variable.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from geodiff.errors import InvalidParameterError

# Ground resolution (metres per pixel) of the shipped default model's training data. The rasterizer uses it
# as its default so maps match what the model was trained on; tests check the shipped model agrees.
# 1.0 m/px was measured on the Dubai training data (road widths, car and truck lengths; see the model card).
DEFAULT_RESOLUTION_M = 1.0

# Window size the diffusion model works on, in pixels.
TILE_SIZE = 256

# Models shipped inside the package (package data, so they travel with a wheel).
SHIPPED_MODELS_DIR = Path(__file__).resolve().parent / "data" / "models"
DEFAULT_MODEL_NAME = "geodiff-default"
DEFAULT_MODEL_DIR = SHIPPED_MODELS_DIR / DEFAULT_MODEL_NAME


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
    overpass_max_subqueries: int = 32
    """Refuse areas that would need more Overpass sub-queries than this (be kind to public servers)."""
    overpass_max_wait_s: int = 600
    """Longest total wait for a free Overpass slot (the server's /status) before giving up."""
    overpass_rate_limit: bool = True
    """Ask the server's /status endpoint for a free slot before each query (public servers want this)."""
    use_cache: bool = True
    """Cache Overpass responses on disk; a repeated bbox is served without network."""
    cache_dir: Path = field(default_factory=_default_cache)
    max_pixels: int = 400_000_000
    """Largest grid (width x height) geodiff will allocate; larger requests must be split."""
    max_strip_pixels: int = 16_000_000
    """Synthesis works on strips of at most about this many canvas pixels at a time (bounds RAM/GPU memory)."""
    cog_min_pixels: int = 16_000_000
    """Outputs with more pixels than this are written as Cloud-Optimized GeoTIFFs with overviews (``--cog``)."""
    default_resolution_m: float = DEFAULT_RESOLUTION_M
    model_dir: Path | None = None
    """The default model's folder; unset = ``geodiff-default`` from the user's model folder or the package."""
    exit_with_stdin: bool = False
    """Stop (as on SIGTERM: no output left) when standard input closes: a parent that starts geodiff with a pipe
    it never writes (the QGIS plugin) ends geodiff by dying, on every OS, even when it cannot send a signal."""

    def with_overrides(self, **kwargs: object) -> Settings:
        return replace(self, **kwargs)


_ENV_PREFIX = "GEODIFF_"
_POSITIVE = {
    "overpass_timeout_s",
    "overpass_max_query_area_m2",
    "overpass_max_subqueries",
    "overpass_max_wait_s",
    "max_pixels",
    "max_strip_pixels",
    "cog_min_pixels",
    "default_resolution_m",
}


def _parse(name: str, kind: str, raw: str) -> object:
    var = _ENV_PREFIX + name.upper()
    text = raw.strip()
    if kind == "bool":
        low = text.lower()
        if low in {"1", "true", "yes", "on"}:
            return True
        if low in {"0", "false", "no", "off"}:
            return False
        raise InvalidParameterError(f"{var}={raw!r} is not a yes/no value: use 1 or 0")
    if kind in ("int", "float"):
        try:
            value: float = int(text) if kind == "int" else float(text)
        except ValueError:
            raise InvalidParameterError(
                f"{var}={raw!r} is not {'an integer' if kind == 'int' else 'a number'}: "
                f"unset it or give e.g. {var}={getattr(Settings, name)}"
            ) from None
        if name in _POSITIVE and not (math.isfinite(value) and value > 0):
            raise InvalidParameterError(f"{var}={raw!r} must be positive: unset it or give a value above 0")
        return value
    if kind.startswith("Path"):
        if not text:
            raise InvalidParameterError(f"{var} is set but empty: unset it or give a folder")
        return Path(text).expanduser()
    return raw


def get_settings(**overrides: object) -> Settings:
    """Settings from defaults, ``GEODIFF_<FIELD>`` environment variables, then keyword overrides."""
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = os.environ.get(_ENV_PREFIX + f.name.upper())
        if raw is None:
            continue
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        values[f.name] = _parse(f.name, kind, raw)
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
