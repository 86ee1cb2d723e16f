"""Seam ratio: how visible window boundaries are in a mosaic.

The statistic is the mean absolute difference between adjacent pixels straddling a boundary
(row ``r-1`` vs row ``r`` for a horizontal boundary at ``r``), divided by the same statistic over all
interior adjacent pairs that are not boundaries. A mosaic without seams scores about 1.0; a mosaic whose
tiles were generated independently scores clearly above 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from geodiff.errors import InvalidParameterError


@dataclass(frozen=True)
class SeamResult:
    """Seam statistics of one image.

    Attributes
    ----------
    ratio
        ``boundary_mean / interior_mean`` (1.0 = invisible seams).
    boundary_mean
        Mean |difference| of adjacent pixels across the given boundaries (0-255 scale).
    interior_mean
        Mean |difference| of adjacent pixels at every other (interior) offset.
    n_boundaries
        Number of row plus column boundaries measured.
    """

    ratio: float
    boundary_mean: float
    interior_mean: float
    n_boundaries: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _axis_diffs(image: np.ndarray, axis: int) -> np.ndarray:
    """Mean |difference| between pixel ``i-1`` and ``i`` along ``axis``, for every ``i >= 1`` (index i-1)."""
    diff = np.abs(np.diff(image, axis=axis))
    other = tuple(a for a in range(diff.ndim) if a != axis)
    return diff.mean(axis=other)


def _valid_positions(positions: Sequence[int], length: int, name: str) -> list[int]:
    pos = sorted({int(p) for p in positions})
    bad = [p for p in pos if not 0 < p < length]
    if bad:
        raise InvalidParameterError(
            f"{name} boundary positions {bad} are outside 1..{length - 1}: a boundary at p separates pixel p-1 and p"
        )
    return pos


def seam_ratio(
    image: np.ndarray,
    rows: Sequence[int] = (),
    cols: Sequence[int] = (),
    exclude: int = 0,
) -> SeamResult:
    """Seam ratio of an (H, W, 3) image at given window boundaries.

    Parameters
    ----------
    image
        (H, W, C) or (H, W) array (any numeric dtype; uint8 stays on the 0-255 scale).
    rows, cols
        Boundary positions: ``p`` in ``rows`` means the horizontal boundary between rows ``p-1`` and ``p``.
    exclude
        Interior pairs within ``exclude`` pixels of a boundary are left out of the reference statistic
        (useful when blending may smear a seam over a few pixels). 0 keeps all non-boundary pairs.

    Returns
    -------
    SeamResult
        ``ratio`` is about 1.0 without seams and > 1 with visible discontinuities.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3:
        raise InvalidParameterError(f"seam_ratio expects an (H, W, C) image, got shape {np.shape(image)}")
    h, w = img.shape[:2]
    rows_ = _valid_positions(rows, h, "row")
    cols_ = _valid_positions(cols, w, "column")
    if not rows_ and not cols_:
        raise InvalidParameterError("seam_ratio needs at least one boundary row or column")

    boundary: list[np.ndarray] = []
    interior: list[np.ndarray] = []
    for axis, positions, length in ((0, rows_, h), (1, cols_, w)):
        if length < 2:
            continue
        d = _axis_diffs(img, axis)  # d[i-1] is the pair (i-1, i)
        is_boundary = np.zeros(length - 1, dtype=bool)
        near = np.zeros(length - 1, dtype=bool)
        for p in positions:
            is_boundary[p - 1] = True
            near[max(p - 1 - exclude, 0) : p + exclude] = True
        boundary.append(d[is_boundary])
        interior.append(d[~near])
    b = np.concatenate(boundary)
    i = np.concatenate(interior)
    if i.size == 0:
        raise InvalidParameterError(
            "no interior pixel pairs left to compare with: use fewer boundaries or a smaller exclude"
        )
    b_mean, i_mean = float(b.mean()), float(i.mean())
    ratio = b_mean / i_mean if i_mean > 0 else (1.0 if b_mean == 0 else float("inf"))
    return SeamResult(
        ratio=ratio, boundary_mean=b_mean, interior_mean=i_mean, n_boundaries=len(rows_) + len(cols_)
    )


def tile_boundaries(length: int, tile: int) -> list[int]:
    """Boundaries of independent non-overlapping tiles: ``tile, 2*tile, ...`` below ``length``."""
    if tile <= 0:
        raise InvalidParameterError(f"tile size must be positive, got {tile}")
    return list(range(tile, length, tile))


def window_edges(origins: Sequence[int], tile: int, length: int) -> list[int]:
    """Every window edge inside the image for overlapping windows starting at ``origins``.

    Both the start of each window and the end of each window are places where a blended mosaic could show
    a seam, so both are measured.
    """
    edges = {o for o in origins} | {o + tile for o in origins}
    return sorted(e for e in edges if 0 < e < length)


def mask_seam_ratio(image: np.ndarray, region: np.ndarray, band: int = 8) -> SeamResult:
    """Seam ratio across the boundary of an irregular ``region`` (H, W) bool of an (H, W, C) image: mean
    |difference| of 4-neighbour pixel pairs with one pixel in the region and one outside, over the same of
    the pairs within ``band`` px of the boundary that do not cross it (1.0 = the boundary does not show).
    For pasted or inpainted areas (``geodiff change``)."""
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[..., None]
    reg = np.asarray(region, bool)
    if reg.shape != img.shape[:2] or not reg.any() or reg.all():
        raise InvalidParameterError(
            "mask_seam_ratio needs a region mask of the image's shape, neither empty nor full"
        )
    near = ndimage.binary_dilation(reg, iterations=band) & ~ndimage.binary_erosion(reg, iterations=band)
    crossing, inside = [], []
    for axis in (0, 1):
        d = np.abs(np.diff(img, axis=axis)).mean(-1)
        a = np.take(reg, range(reg.shape[axis] - 1), axis=axis)
        b = np.take(reg, range(1, reg.shape[axis]), axis=axis)
        n = np.take(near, range(reg.shape[axis] - 1), axis=axis) & np.take(
            near, range(1, reg.shape[axis]), axis=axis
        )
        crossing.append(d[a != b])
        inside.append(d[(a == b) & n])
    c, i = np.concatenate(crossing), np.concatenate(inside)
    c_mean, i_mean = float(c.mean()), float(i.mean())
    ratio = c_mean / i_mean if i_mean > 0 else (1.0 if c_mean == 0 else float("inf"))
    return SeamResult(ratio=ratio, boundary_mean=c_mean, interior_mean=i_mean, n_boundaries=int(c.size))
