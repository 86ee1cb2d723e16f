"""A tiny, randomly initialised model for fast end-to-end tests (64 px windows at 2 m/px)."""

from __future__ import annotations

from pathlib import Path

import torch

from geodiff.model import GeodiffModel, ModelConfig

TINY = dict(
    resolution_m=2.0,
    tile_size=64,
    vae_block_channels=[8, 8, 8],
    vae_norm_groups=4,
    unet_block_channels=[8, 16],
    unet_attention_levels=[False, True],
    unet_norm_groups=4,
    attention_head_dim=8,
    map_encoder_channels=[8, 8],
    map_cond_channels=4,
    context_dim=8,
    storage_dtype="float32",
)


def build_tiny_model(seed: int = 0, **overrides: object) -> GeodiffModel:
    """The tiny model in memory, in eval mode; ``overrides`` replace fields of ``TINY``."""
    torch.manual_seed(seed)
    return GeodiffModel(ModelConfig(**{**TINY, **overrides})).eval()


def make_tiny_model(path: Path, seed: int = 0, **overrides: object) -> Path:
    build_tiny_model(seed, **overrides).save_pretrained(path)
    return path


if __name__ == "__main__":  # used by .ci/run to give the QGIS end-to-end tests a model
    import sys

    print(make_tiny_model(Path(sys.argv[1])))
