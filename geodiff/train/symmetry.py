"""The 8 symmetries of the square, used both to augment tiles (:mod:`geodiff.train.dataset`) and to cache
their latents in every orientation (:mod:`geodiff.train.latents`); here so neither imports the other."""

from __future__ import annotations

import torch

#: The 8 symmetries of the square: k % 4 quarter turns, then a left-right mirror when k >= 4.
NUM_DIHEDRAL = 8


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Transform ``x`` (``[..., H, W]``) by the ``k``-th symmetry of the square (``0 <= k < 8``)."""
    if not 0 <= k < NUM_DIHEDRAL:
        raise ValueError(f"dihedral index must be 0..7, got {k}")
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x
