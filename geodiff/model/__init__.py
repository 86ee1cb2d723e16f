"""The map-conditioned latent diffusion model (autoencoder + map conditioner + U-Net + noise schedule).

See docs/ARCHITECTURE.md, "Model contract".
"""

from geodiff.model.conditioning import Conditioning, MapConditioner, one_hot
from geodiff.model.config import CONDITIONING_VARIANTS, ModelConfig
from geodiff.model.core import (
    GeodiffModel,
    build_autoencoder,
    build_scheduler_config,
    load_autoencoder,
)

__all__ = [
    "CONDITIONING_VARIANTS",
    "Conditioning",
    "GeodiffModel",
    "MapConditioner",
    "ModelConfig",
    "build_autoencoder",
    "build_scheduler_config",
    "load_autoencoder",
    "one_hot",
]
