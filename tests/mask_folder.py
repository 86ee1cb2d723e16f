"""Fake Dubai-style source folders (colour masks + photos) for the dataset and training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from geodiff.classes import BUILDING, IGNORE, ROAD, WATER
from geodiff.train.colors import DUBAI_AERIAL

COLOR_OF = {v: k for k, v in DUBAI_AERIAL.items() if v != IGNORE}


def make_folder(root: Path, n: int = 3, size: tuple[int, int] = (300, 280), noise: bool = True) -> Path:
    """A fake Dubai-style folder: tile_1/images/*.jpg + tile_1/masks/*.png with a few classes."""
    rng = np.random.default_rng(0)
    (root / "tile_1" / "images").mkdir(parents=True)
    (root / "tile_1" / "masks").mkdir(parents=True)
    h, w = size[1], size[0]
    for i in range(n):
        ids = np.zeros((h, w), np.uint8)
        ids[: h // 2] = BUILDING
        ids[:, : w // 3] = ROAD
        ids[-20:, -20:] = WATER
        rgb = np.array([COLOR_OF.get(int(v), (0x9B,) * 3) for v in range(256)], np.int16)[ids]
        if noise:  # near-colour noise, as in re-saved masks
            rgb = rgb + rng.integers(-6, 7, rgb.shape)
        rgb[0, 0] = (0x9B, 0x9B, 0x9B)
        Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(root / "tile_1" / "masks" / f"part_{i}.png")
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "tile_1" / "images" / f"part_{i}.jpg")
    return root
