"""Colour-mask tables of training data sets -> geodiff class ids (the one place this mapping lives).

Colour masks are matched by nearest colour within a tolerance, because resampled or re-saved masks carry
near-colour noise; colours far from every entry are reported, not guessed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from geodiff.classes import BACKGROUND, BUILDING, IGNORE, ROAD, VEGETATION, WATER
from geodiff.errors import DataError

RGB = tuple[int, int, int]

#: "Semantic segmentation of aerial imagery" (Dubai, Humans in the Loop / MBRSC), measured colours
#: (see ../shared/data/dubai_aerial/PROVENANCE.md).
DUBAI_AERIAL: dict[RGB, int] = {
    (0x3C, 0x10, 0x98): BUILDING,
    (0x6E, 0xC1, 0xE4): ROAD,
    (0xE2, 0xA9, 0x29): WATER,
    (0xFE, 0xDD, 0x3A): VEGETATION,
    (0x84, 0x29, 0xF6): BACKGROUND,  # land (unpaved)
    (0x9B, 0x9B, 0x9B): IGNORE,  # unlabeled
    (0x00, 0x00, 0x00): IGNORE,  # stray black pixels
}

#: geodiff's own preview colours (``geodiff.classes``) read back, so rendered maps can serve as masks too.
TABLES: dict[str, dict[RGB, int]] = {"dubai_aerial": DUBAI_AERIAL}


def get_table(name: str) -> dict[RGB, int]:
    """A colour table by name; ``"geodiff"`` is the project's own class colours."""
    if name == "geodiff":
        from geodiff.classes import CLASSES, IGNORE_COLOR

        table: dict[RGB, int] = {c.color: c.id for c in CLASSES}
        table[IGNORE_COLOR] = IGNORE
        return table
    if name not in TABLES:
        raise DataError(f"unknown colour table {name!r}; known: geodiff, {', '.join(TABLES)}")
    return TABLES[name]


def map_colors(
    rgb: np.ndarray,
    table: Mapping[RGB, int],
    tolerance: int = 24,
    max_unknown_fraction: float = 0.001,
    source: str = "mask",
) -> tuple[np.ndarray, dict[RGB, int]]:
    """Map an ``(H, W, 3)`` colour mask to class ids by nearest table colour.

    Parameters
    ----------
    tolerance
        Largest per-channel difference (0-255) still accepted as that colour.
    max_unknown_fraction
        Pixels matching no colour become ``IGNORE``; above this fraction a :class:`DataError` lists them.

    Returns
    -------
    (ids, unknown)
        ``(H, W)`` uint8 class ids and ``{colour: pixel count}`` of the unknown colours.
    """
    colors = np.array(list(table.keys()), dtype=np.int16)
    ids = np.array(list(table.values()), dtype=np.uint8)
    flat = rgb.reshape(-1, 3)
    # unique colours first (as packed 24-bit codes): masks hold few distinct values
    code = (flat[:, 0].astype(np.int32) << 16) | (flat[:, 1].astype(np.int32) << 8) | flat[:, 2]
    ucode, inverse, counts = np.unique(code, return_inverse=True, return_counts=True)
    uniq = np.stack([ucode >> 16, (ucode >> 8) & 255, ucode & 255], axis=1)
    dist = np.abs(uniq[:, None, :].astype(np.int16) - colors[None]).max(-1)
    nearest = dist.argmin(1)
    ok = dist[np.arange(len(uniq)), nearest] <= tolerance
    lut = np.where(ok, ids[nearest], IGNORE).astype(np.uint8)
    unknown = {tuple(int(v) for v in uniq[i]): int(counts[i]) for i in np.flatnonzero(~ok)}
    n_unknown = sum(unknown.values())
    if n_unknown > max_unknown_fraction * flat.shape[0]:
        top = sorted(unknown.items(), key=lambda kv: -kv[1])[:8]
        listed = ", ".join(f"#{r:02X}{g:02X}{b:02X} ({n} px)" for (r, g, b), n in top)
        raise DataError(
            f"{source}: {n_unknown / flat.shape[0]:.2%} of pixels match no known mask colour within "
            f"{tolerance} levels: {listed}. Add them to the colour table in geodiff/train/colors.py, raise the "
            "tolerance, or check the mask is not a JPEG"
        )
    return lut[inverse.reshape(-1)].reshape(rgb.shape[:2]), unknown
