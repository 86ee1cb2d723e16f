"""The map-conditioned latent diffusion model (autoencoder + map conditioner + U-Net + noise schedule).

See docs/ARCHITECTURE.md, "Model contract". Names are imported lazily: reading a model's config
(``geodiff.model.config``, e.g. for ``geodiff models``) needs no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geodiff._lazy import lazy_exports

_LAZY = {
    "Conditioning": "geodiff.model.conditioning",
    "MapConditioner": "geodiff.model.conditioning",
    "one_hot": "geodiff.model.conditioning",
    "CONDITIONING_VARIANTS": "geodiff.model.config",
    "ModelConfig": "geodiff.model.config",
    "GeodiffModel": "geodiff.model.core",
    "build_autoencoder": "geodiff.model.core",
    "build_scheduler_config": "geodiff.model.core",
    "load_autoencoder": "geodiff.model.core",
}

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

if TYPE_CHECKING:
    from geodiff.model.conditioning import Conditioning, MapConditioner, one_hot
    from geodiff.model.config import CONDITIONING_VARIANTS, ModelConfig
    from geodiff.model.core import GeodiffModel, build_autoencoder, build_scheduler_config, load_autoencoder


__getattr__ = lazy_exports(__name__, _LAZY)
