"""One initial-noise field for the whole world, seeded by (seed, place).

Noise is generated in fixed 64x64 latent blocks on a global lattice; each block's generator is seeded from the
user's seed, the CRS and the block's global indices. Any canvas is assembled from the blocks it covers, so the
same place and seed always get the same noise, whatever bbox it is part of.
"""

from __future__ import annotations

import hashlib
import math

import torch
from pyproj import CRS

BLOCK = 64


def place_key(crs: CRS) -> str:
    """The noise key of a grid CRS: ``"EPSG:32632"`` (or its WKT when it has no EPSG code)."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def block_seed(seed: int, crs_key: str, bi: int, bj: int) -> int:
    """The generator seed of noise block (bi, bj) of the lattice of ``crs_key`` for the user's ``seed``."""
    digest = hashlib.blake2b(f"{seed}|{crs_key}|{bi}|{bj}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def location_noise(
    seed: int, crs_key: str, row0: int, col0: int, height: int, width: int, channels: int
) -> torch.Tensor:
    """Standard normal noise (channels, height, width) for global latent pixels starting at (row0, col0)."""
    out = torch.empty(channels, height, width)
    bi0, bj0 = math.floor(row0 / BLOCK), math.floor(col0 / BLOCK)
    bi1, bj1 = math.floor((row0 + height - 1) / BLOCK), math.floor((col0 + width - 1) / BLOCK)
    for bi in range(bi0, bi1 + 1):
        for bj in range(bj0, bj1 + 1):
            g = torch.Generator().manual_seed(block_seed(seed, crs_key, bi, bj))
            block = torch.randn(channels, BLOCK, BLOCK, generator=g)
            r0, c0 = bi * BLOCK, bj * BLOCK
            rs, re = max(r0, row0), min(r0 + BLOCK, row0 + height)
            cs, ce = max(c0, col0), min(c0 + BLOCK, col0 + width)
            out[:, rs - row0 : re - row0, cs - col0 : ce - col0] = block[
                :, rs - r0 : re - r0, cs - c0 : ce - c0
            ]
    return out
