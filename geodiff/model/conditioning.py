"""Map conditioning: class map -> channels concatenated to the latent, and cross-attention tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from geodiff.classes import IGNORE


@dataclass
class Conditioning:
    """What the denoiser needs from a class map, computed once per map and reused at every step.

    Attributes
    ----------
    concat
        ``[B, k, h, w]`` channels concatenated to the noisy latent (``None`` for the unconditional variant).
    context
        ``[B, N, context_dim]`` cross-attention tokens (one zero token for variants without cross-attention).
    """

    concat: torch.Tensor | None
    context: torch.Tensor

    def to(self, *args: object, **kwargs: object) -> Conditioning:
        return Conditioning(
            None if self.concat is None else self.concat.to(*args, **kwargs),  # type: ignore[arg-type]
            self.context.to(*args, **kwargs),  # type: ignore[arg-type]
        )

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        """Concatenate conditionings along the batch (e.g. map and null map for classifier-free guidance)."""
        concat = None if parts[0].concat is None else torch.cat([p.concat for p in parts])  # type: ignore[misc]
        return Conditioning(concat, torch.cat([p.context for p in parts]))

    def expand(self, batch: int) -> Conditioning:
        """Repeat a batch-1 conditioning to ``batch`` (one map, several noise samples)."""
        if self.context.shape[0] == batch:
            return self
        if self.context.shape[0] != 1:
            raise ValueError(f"conditioning has batch {self.context.shape[0]}, latents have {batch}")
        concat = None if self.concat is None else self.concat.expand(batch, -1, -1, -1)
        return Conditioning(concat, self.context.expand(batch, -1, -1))


def one_hot(class_map: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[B, H, W]`` class ids -> ``[B, C, H, W]`` one-hot; ignore (255) and out-of-range ids give all zeros."""
    classes = torch.arange(num_classes, device=class_map.device).view(1, -1, 1, 1)
    return (class_map.long().unsqueeze(1) == classes).to(dtype)


class MapConditioner(ModelMixin, ConfigMixin):
    """Turns a class map into the concatenated channels and cross-attention tokens of one variant.

    ``down`` variants area-downsample the map's per-class fractions to latent size; ``encoded`` variants run a
    small strided conv encoder (trained with the U-Net). ``_xattn`` variants additionally project those
    features to ``context_dim`` tokens, average-pooled by ``context_pool``, plus a learned positional embedding.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        num_classes: int = 5,
        latent_factor: int = 4,
        conditioning: str = "concat_encoded_xattn",
        map_embedding: str = "onehot",
        map_embed_dim: int = 8,
        encoder_channels: tuple[int, ...] = (32, 64),
        cond_channels: int = 8,
        context_dim: int = 64,
        context_pool: int = 2,
        pos_grid: int = 32,
    ) -> None:
        super().__init__()
        self.embed = None
        in_ch = num_classes
        if map_embedding == "learned":
            # index num_classes is the "no class" (ignore) row, kept at zero
            self.embed = nn.Embedding(num_classes + 1, map_embed_dim, padding_idx=num_classes)
            in_ch = map_embed_dim
        self.encoder = None
        feat_ch = in_ch
        if conditioning.startswith("concat_encoded"):
            steps = int(round(math.log2(latent_factor)))
            chans = list(encoder_channels)
            layers: list[nn.Module] = [nn.Conv2d(in_ch, chans[0], 3, padding=1), nn.SiLU()]
            c = chans[0]
            for i in range(steps):
                nxt = chans[min(i + 1, len(chans) - 1)]
                layers += [nn.Conv2d(c, nxt, 3, stride=2, padding=1), nn.SiLU()]
                c = nxt
            layers += [nn.Conv2d(c, c, 3, padding=1), nn.SiLU(), nn.Conv2d(c, cond_channels, 3, padding=1)]
            self.encoder = nn.Sequential(*layers)
            feat_ch = cond_channels
        self.feat_channels = feat_ch if conditioning != "none" else 0
        self.to_tokens = None
        if conditioning.endswith("_xattn"):
            self.to_tokens = nn.Conv2d(feat_ch, context_dim, 1)
            self.pos = nn.Parameter(torch.randn(1, context_dim, pos_grid, pos_grid) * 0.02)
            self.token_mlp = nn.Sequential(
                nn.LayerNorm(context_dim),
                nn.Linear(context_dim, context_dim),
                nn.SiLU(),
                nn.Linear(context_dim, context_dim),
            )

    @property
    def has_parameters(self) -> bool:
        return any(True for _ in self.parameters())

    def features(self, class_map: torch.Tensor) -> torch.Tensor:
        """Map features at latent resolution, ``[B, feat_channels, H/f, W/f]``."""
        cfg = self.config
        dtype = next(self.parameters()).dtype if self.has_parameters else torch.float32
        if self.embed is not None:
            ids = class_map.long()
            ids = torch.where((ids < 0) | (ids >= cfg.num_classes), cfg.num_classes, ids)
            x = self.embed(ids).permute(0, 3, 1, 2).to(dtype)
        else:
            x = one_hot(class_map, cfg.num_classes, dtype)
        if self.encoder is not None:
            return self.encoder(x)
        h, w = class_map.shape[-2] // cfg.latent_factor, class_map.shape[-1] // cfg.latent_factor
        return F.interpolate(x, size=(h, w), mode="area")  # per-class area fractions

    def forward(self, class_map: torch.Tensor) -> Conditioning:
        cfg = self.config
        if class_map.ndim == 2:
            class_map = class_map.unsqueeze(0)
        b = class_map.shape[0]
        if cfg.conditioning == "none":
            context = torch.zeros(b, 1, cfg.context_dim, device=class_map.device)
            return Conditioning(None, context)
        feats = self.features(class_map)
        if self.to_tokens is None:
            context = torch.zeros(b, 1, cfg.context_dim, device=feats.device, dtype=feats.dtype)
            return Conditioning(feats, context)
        tok = self.to_tokens(feats)
        if cfg.context_pool > 1:
            tok = F.avg_pool2d(tok, cfg.context_pool, ceil_mode=True)
        # the positional table covers one full tile; other window sizes see it resampled
        pos = (
            self.pos
            if tok.shape[-2:] == self.pos.shape[-2:]
            else F.interpolate(self.pos, size=tok.shape[-2:], mode="bilinear", align_corners=False)
        )
        tok = (tok + pos).flatten(2).transpose(1, 2)
        return Conditioning(feats, tok + self.token_mlp(tok))


def ignore_fraction(class_map: torch.Tensor, factor: int) -> torch.Tensor:
    """Fraction of ignore pixels per latent cell, ``[B, 1, H/f, W/f]`` (to mask losses)."""
    ign = (class_map == IGNORE).float().unsqueeze(1)
    return F.avg_pool2d(ign, factor)
