"""Window layout and blending weights for seamless tiled diffusion.

Windows sit on a *global* lattice: their pixel origins are multiples of the stride in the grid CRS's pixel
coordinates (grids are snapped to whole multiples of the resolution, see :mod:`geodiff.grid`). So two runs over
overlapping areas use the same windows where they overlap, which, with the location-seeded noise field, is what
makes a sub-bbox agree with a larger run.

Overlapping windows' predictions are averaged with smooth weights (high in the middle, low but non-zero at the
edges), so no window edge shows in the result (Mixture-of-Diffusers style).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geodiff.errors import InvalidParameterError


def window_origins(start: int, stop: int, tile: int, stride: int) -> list[int]:
    """Lattice-aligned window origins (multiples of ``stride``) whose windows cover ``[start, stop)``.

    Example: ``window_origins(100, 600, 256, 192)`` -> ``[0, 192, 384]`` (covers 0..640).
    """
    if stride <= 0 or stride > tile:
        raise InvalidParameterError(f"stride must be in 1..{tile}, got {stride}")
    if stop <= start:
        raise InvalidParameterError(f"empty range [{start}, {stop})")
    first = math.floor(start / stride) * stride
    origins = [first]
    while origins[-1] + tile < stop:
        origins.append(origins[-1] + stride)
    return origins


def edge_ramp(size: int, overlap: int) -> np.ndarray:
    """(size,) float64 weights along one window axis: 1 in the core, a cosine ramp over ``overlap`` px at each end.

    The ramp never reaches 0 (min ~1/overlap), so every pixel of the canvas has positive total weight, and
    within an overlap band the two windows' ramps sum to a smooth, nearly constant profile.
    """
    if overlap <= 0:
        return np.ones(size, dtype=np.float64)
    if overlap * 2 > size:
        raise InvalidParameterError(f"overlap {overlap} must be at most half the window size {size}")
    ramp = np.ones(size, dtype=np.float64)
    x = (np.arange(overlap) + 0.5) / overlap  # 0..1 across the band, exclusive of ends
    edge = 0.5 - 0.5 * np.cos(np.pi * x)
    ramp[:overlap] = edge
    ramp[-overlap:] = edge[::-1]
    return ramp


def blend_weights(size: int, overlap: int) -> np.ndarray:
    """(size, size) float32 weights of a square window: the outer product of two :func:`edge_ramp`."""
    ramp = edge_ramp(size, overlap)
    return np.outer(ramp, ramp).astype(np.float32)


@dataclass(frozen=True)
class Layout:
    """Windows covering a canvas: origins are relative to the canvas's top-left pixel."""

    canvas_row: int  # global pixel row of the canvas origin
    canvas_col: int
    height: int
    width: int
    tile: int
    overlap: int
    rows: tuple[int, ...]  # window origins relative to the canvas
    cols: tuple[int, ...]

    @property
    def windows(self) -> list[tuple[int, int]]:
        return [(r, c) for r in self.rows for c in self.cols]

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)


def layout_for(row0: int, col0: int, height: int, width: int, tile: int, overlap: int) -> Layout:
    """Lattice-aligned layout covering global pixel rows ``row0..row0+height`` and cols ``col0..col0+width``."""
    stride = tile - overlap
    rows = window_origins(row0, row0 + height, tile, stride)
    cols = window_origins(col0, col0 + width, tile, stride)
    return Layout(
        canvas_row=rows[0],
        canvas_col=cols[0],
        height=rows[-1] + tile - rows[0],
        width=cols[-1] + tile - cols[0],
        tile=tile,
        overlap=overlap,
        rows=tuple(r - rows[0] for r in rows),
        cols=tuple(c - cols[0] for c in cols),
    )


def split_rows(n_rows: int, rows_per_strip: int) -> list[tuple[int, int]]:
    """Split ``n_rows`` window rows into strips of ``rows_per_strip`` sharing one window row with the next.

    Returns ``(first, stop)`` index pairs. Neighbouring strips overlap by a whole window row, the band in which
    their results are cross-faded.
    """
    if n_rows <= rows_per_strip:
        return [(0, n_rows)]
    if rows_per_strip < 2:
        raise InvalidParameterError("a strip needs at least two window rows to overlap its neighbour")
    strips, first = [], 0
    while True:
        stop = min(first + rows_per_strip, n_rows)
        strips.append((first, stop))
        if stop == n_rows:
            return strips
        first = stop - 1
