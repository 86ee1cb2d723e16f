"""The autoencoder training stages, one named step each, chosen by ``autoencoder.stage`` in a training config.

``geodiff train autoencoder`` runs the same loop for every stage (:func:`geodiff.train.loops.train_autoencoder`:
reconstruction loss, optional PatchGAN term, checkpoints, resume); a stage says only which autoencoder the loop
starts from, which of its weights learn, and what is recorded at the end:

============== ======================================================================== =====================
stage          starts from / trains                                                     latent space
============== ======================================================================== =====================
full           a new autoencoder (or ``pretrained``), all of it                         new scale measured
decoder        ``pretrained``; only the decoder (Stable Diffusion's decoder fine-tune)  unchanged
widen-decoder  ``pretrained`` with its decoder doubled in width (exact copy at first)   unchanged
grow-latents   ``pretrained`` plus ``extra_latent_channels`` detail channels; only the  old channels unchanged
               new channels' encoder rows and the decoder train
============== ======================================================================== =====================

A new stage: three functions (``start``, ``freeze``, ``finish``) and a row in :data:`STAGES`; the config check
(:func:`geodiff.train.config.parse_config`) reads what it needs from the row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from geodiff.model import build_autoencoder, load_autoencoder

if TYPE_CHECKING:
    from geodiff.train.config import TrainConfig
    from geodiff.train.dataset import TileDataset


@torch.no_grad()
def posterior_means(vae: Any, ds: TileDataset, device: torch.device, n: int = 32) -> torch.Tensor:
    """Unscaled posterior means (or VQ latents) of the first ``n`` tiles of ``ds``."""
    lats = []
    for i in range(min(n, len(ds))):
        enc = vae.encode(ds[i]["image"].unsqueeze(0).to(device))
        lats.append(enc.latents if hasattr(enc, "latents") else enc.latent_dist.mode())
    return torch.cat(lats).float()


@torch.no_grad()
def latent_scaling_factor(vae: Any, ds: TileDataset, device: torch.device, n: int = 32) -> float:
    """1 / std of the latents, so diffusion sees unit-variance latents (as in Stable Diffusion)."""
    return float(1.0 / posterior_means(vae, ds, device, n).std().clamp_min(1e-6))


# ----------------------------------------------------------------------------------------------------------
# start: the autoencoder the stage trains (before it moves to the device)
# ----------------------------------------------------------------------------------------------------------


def load_pretrained(cfg: TrainConfig) -> Any:
    """``autoencoder.pretrained``: a folder (relative to the working directory) or a hub id."""
    sec = cfg.autoencoder
    ref = cfg.resolve(sec.pretrained)
    return load_autoencoder(
        ref if Path(ref).exists() else sec.pretrained, subfolder=sec.pretrained_subfolder or None
    )


def start_full(cfg: TrainConfig, train_ds: TileDataset, fresh: bool) -> Any:
    return load_pretrained(cfg) if cfg.autoencoder.pretrained else build_autoencoder(cfg.model)


def start_decoder(cfg: TrainConfig, train_ds: TileDataset, fresh: bool) -> Any:
    return load_pretrained(cfg)


def start_widen_decoder(cfg: TrainConfig, train_ds: TileDataset, fresh: bool) -> Any:
    from geodiff.train.surgery.widen import widen_decoder

    return widen_decoder(load_pretrained(cfg), seed=cfg.run.seed)


def start_grow_latents(cfg: TrainConfig, train_ds: TileDataset, fresh: bool) -> Any:
    """The pretrained autoencoder with ``extra_latent_channels`` more; a fresh run starts their encoder rows
    from the detail its reconstructions miss on 128 crops, a resumed one loads its trained rows instead."""
    from geodiff.train.surgery.detail import add_latent_channels

    vae, seed = load_pretrained(cfg), cfg.run.seed
    # crops from a generator of their own: the training batches stay those of an uninitialised run
    crops = train_ds.sample(128, torch.Generator().manual_seed(seed + 1))["image"] if fresh else None
    return add_latent_channels(vae.float(), cfg.autoencoder.extra_latent_channels, seed=seed, images=crops)


# ----------------------------------------------------------------------------------------------------------
# freeze: what does not learn (after vae.train())
# ----------------------------------------------------------------------------------------------------------


def freeze_nothing(vae: Any, cfg: TrainConfig) -> None:
    return None


def freeze_encoder(vae: Any, cfg: TrainConfig) -> None:
    """The latent space stays exactly as it is: encoder (and quant_conv) frozen and kept in eval mode."""
    for part in (vae.encoder, getattr(vae, "quant_conv", None)):
        if part is not None:
            part.requires_grad_(False).eval()


def freeze_old_latents(vae: Any, cfg: TrainConfig) -> None:
    """The encoder frozen but for the new channels' rows."""
    from geodiff.train.surgery.detail import freeze_old_channels

    freeze_encoder(vae, cfg)
    freeze_old_channels(vae, _old_channels(vae, cfg))


# ----------------------------------------------------------------------------------------------------------
# finish: what the stage records in the autoencoder's config after training
# ----------------------------------------------------------------------------------------------------------


def finish_measure_scale(vae: Any, cfg: TrainConfig, train_ds: TileDataset, device: torch.device) -> None:
    """Record the latent scale in the autoencoder's own config, where diffusers keeps it."""
    vae.register_to_config(scaling_factor=latent_scaling_factor(vae, train_ds, device))


def finish_keep_scale(vae: Any, cfg: TrainConfig, train_ds: TileDataset, device: torch.device) -> None:
    """A decoder fine-tune keeps the pretrained scale: the latents (and a diffusion model on them) are unchanged."""
    return None


def finish_match_new_channels(
    vae: Any, cfg: TrainConfig, train_ds: TileDataset, device: torch.device
) -> None:
    """The new channels get the old ones' spread, so the one scaling factor fits them all."""
    from geodiff.train.surgery.detail import match_new_channel_scale

    match_new_channel_scale(vae, _old_channels(vae, cfg), posterior_means(vae, train_ds, device))


def _old_channels(vae: Any, cfg: TrainConfig) -> int:
    return int(vae.config.latent_channels) - cfg.autoencoder.extra_latent_channels


@dataclass(frozen=True)
class AutoencoderStage:
    name: str
    summary: str
    needs_pretrained: bool
    start: Callable[[TrainConfig, TileDataset, bool], Any]
    """The autoencoder to train: ``(cfg, train split, fresh)``; ``fresh`` is false when a checkpoint is resumed."""
    freeze: Callable[[Any, TrainConfig], None]
    finish: Callable[[Any, TrainConfig, TileDataset, torch.device], None]


STAGES: dict[str, AutoencoderStage] = {
    s.name: s
    for s in (
        AutoencoderStage(
            "full",
            "train the whole autoencoder (new, or from `pretrained`)",
            False,
            start_full,
            freeze_nothing,
            finish_measure_scale,
        ),
        AutoencoderStage(
            "decoder",
            "fine-tune only the decoder of `pretrained`; the latents do not change",
            True,
            start_decoder,
            freeze_encoder,
            finish_keep_scale,
        ),
        AutoencoderStage(
            "widen-decoder",
            "double the decoder of `pretrained` in width (geodiff.train.surgery.widen), then fine-tune it",
            True,
            start_widen_decoder,
            freeze_encoder,
            finish_keep_scale,
        ),
        AutoencoderStage(
            "grow-latents",
            "add `extra_latent_channels` detail channels to `pretrained` (geodiff.train.surgery.detail) and "
            "train their encoder rows and the decoder",
            True,
            start_grow_latents,
            freeze_old_latents,
            finish_match_new_channels,
        ),
    )
}
