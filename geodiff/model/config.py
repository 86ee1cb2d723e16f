"""The JSON-serialisable configuration of a :class:`geodiff.model.GeodiffModel`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from geodiff.classes import NUM_CLASSES
from geodiff.errors import ConfigError
from geodiff.settings import DEFAULT_RESOLUTION_M, TILE_SIZE

#: The five conditioning variants of the seed paper, as configurations of one model.
CONDITIONING_VARIANTS: tuple[str, ...] = (
    "none",
    "concat_down",
    "concat_encoded",
    "concat_down_xattn",
    "concat_encoded_xattn",
)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`GeodiffModel` (weights aside).

    Attributes
    ----------
    resolution_m, tile_size
        Ground resolution (metres/pixel) of the training data and the window size the model samples.
    num_classes
        Number of semantic classes of the map (``geodiff.classes``); ids ``0..num_classes-1``, 255 = ignore.
    conditioning
        One of :data:`CONDITIONING_VARIANTS`.
    map_embedding
        ``"onehot"`` (class fractions) or ``"learned"`` (a learned embedding per class, ``map_embed_dim`` wide).
    vae_type, vae_block_channels, vae_layers_per_block, latent_channels, vae_norm_groups, vae_mid_attention
        Autoencoder architecture (``"kl"`` = ``AutoencoderKL``, ``"vq"`` = ``VQModel``, ``"asym_kl"`` =
        ``AsymmetricAutoencoderKL``: a KL autoencoder whose decoder is ``vae_decoder_channels`` wide and which
        always has mid-block attention); the downsampling factor is ``2 ** (len(vae_block_channels) - 1)`` (f4
        with three blocks). ``"vq"`` and ``"asym_kl"`` are experimental as training targets: no config trains one
        from scratch; they stay because such autoencoders load (hub VQ models; ``asym_kl`` is what the
        ``widen-decoder`` training stage makes) and a model must describe them.
    vae_decoder_channels
        Decoder widths of an ``"asym_kl"`` autoencoder (one per block, as many as ``vae_block_channels``).
    vae_num_vq_embeddings
        Codebook size for ``vae_type="vq"``.
    unet_block_channels, unet_layers_per_block, unet_attention_levels, unet_norm_groups, attention_head_dim
        U-Net architecture; ``unet_attention_levels[i]`` says whether down level ``i`` (and its mirrored up level)
        has transformer blocks (used for cross-attention variants only).
    map_encoder_channels, map_cond_channels
        The learned map encoder ("encoded" variants): conv widths and output channels at latent resolution.
    context_dim, context_pool
        Cross-attention token width, and the pooling factor of the token grid (1 = one token per latent cell).
    num_train_timesteps, beta_schedule, beta_start, beta_end, prediction_type
        DDPM noise schedule; the betas themselves are saved in ``scheduler/``.
    storage_dtype
        ``"float16"`` or ``"float32"``: dtype of the saved weights (loaded back as float32 unless asked).
    guidance_scale
        Default classifier-free guidance scale when sampling (1 = off); above 1 only for a model trained with
        map dropout (``diffusion.cond_drop``), set from its evaluation.
    """

    resolution_m: float = DEFAULT_RESOLUTION_M
    tile_size: int = TILE_SIZE
    num_classes: int = NUM_CLASSES
    conditioning: str = "concat_encoded_xattn"
    map_embedding: str = "onehot"
    map_embed_dim: int = 8
    # autoencoder
    vae_type: str = "kl"
    vae_block_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    vae_layers_per_block: int = 1
    latent_channels: int = 4
    vae_norm_groups: int = 16
    vae_mid_attention: bool = False
    vae_decoder_channels: list[int] = field(default_factory=list)
    vae_num_vq_embeddings: int = 1024
    # denoiser
    unet_block_channels: list[int] = field(default_factory=lambda: [64, 128, 192])
    unet_layers_per_block: int = 1
    unet_attention_levels: list[bool] = field(default_factory=lambda: [False, True, True])
    unet_norm_groups: int = 16
    attention_head_dim: int = 32
    # map conditioning
    map_encoder_channels: list[int] = field(default_factory=lambda: [32, 64])
    map_cond_channels: int = 8
    context_dim: int = 64
    context_pool: int = 2
    # noise schedule
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction_type: str = "epsilon"
    storage_dtype: str = "float16"
    # sampling default
    guidance_scale: float = 1.0

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------------------------------
    @property
    def latent_factor(self) -> int:
        return 2 ** (len(self.vae_block_channels) - 1)

    def guidance(self, scale: float | None = None) -> float:
        """The classifier-free guidance scale to sample with: ``scale`` if given, else this model's default."""
        return float(self.guidance_scale if scale is None else scale)

    @property
    def uses_concat(self) -> bool:
        return self.conditioning != "none"

    @property
    def uses_encoder(self) -> bool:
        return self.conditioning.startswith("concat_encoded")

    @property
    def uses_xattn(self) -> bool:
        return self.conditioning.endswith("_xattn")

    def validate(self) -> None:
        """Raise :class:`geodiff.errors.ConfigError` naming the first bad value."""

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"model.{name} = {getattr(self, name)!r}: {why}")

        if self.conditioning not in CONDITIONING_VARIANTS:
            raise bad("conditioning", f"must be one of {', '.join(CONDITIONING_VARIANTS)}")
        if self.map_embedding not in ("onehot", "learned"):
            raise bad("map_embedding", "must be 'onehot' or 'learned'")
        if self.vae_type not in ("kl", "vq", "asym_kl"):
            raise bad(
                "vae_type",
                "must be 'kl' (AutoencoderKL), 'vq' (VQModel) or 'asym_kl' (AsymmetricAutoencoderKL)",
            )
        if self.storage_dtype not in ("float16", "float32"):
            raise bad("storage_dtype", "must be 'float16' or 'float32'")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise bad("prediction_type", "must be 'epsilon' or 'v_prediction'")
        if not (isinstance(self.resolution_m, (int, float)) and self.resolution_m > 0):
            raise bad("resolution_m", "must be a positive number of metres per pixel")
        for name in (
            "tile_size",
            "num_classes",
            "latent_channels",
            "context_dim",
            "context_pool",
            "map_cond_channels",
            "num_train_timesteps",
            "unet_layers_per_block",
            "vae_layers_per_block",
            "attention_head_dim",
            "vae_norm_groups",
            "unet_norm_groups",
            "map_embed_dim",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "must be a positive integer")
        for name in ("vae_block_channels", "unet_block_channels", "map_encoder_channels"):
            value = getattr(self, name)
            if (
                not isinstance(value, (list, tuple))
                or not value
                or not all(isinstance(v, int) and v > 0 for v in value)
            ):
                raise bad(name, "must be a non-empty list of positive integers")
        for c in self.vae_block_channels:
            if c % self.vae_norm_groups:
                raise bad(
                    "vae_block_channels",
                    f"every width must be divisible by vae_norm_groups={self.vae_norm_groups}",
                )
        if self.vae_type == "asym_kl":
            dec = self.vae_decoder_channels
            if (
                not isinstance(dec, (list, tuple))
                or len(dec) != len(self.vae_block_channels)
                or not all(isinstance(v, int) and v > 0 and v % self.vae_norm_groups == 0 for v in dec)
            ):
                raise bad(
                    "vae_decoder_channels",
                    f"an 'asym_kl' autoencoder needs one decoder width per block ({len(self.vae_block_channels)}, "
                    f"as in vae_block_channels), each divisible by vae_norm_groups={self.vae_norm_groups}",
                )
        elif self.vae_decoder_channels:
            raise bad("vae_decoder_channels", "only an 'asym_kl' autoencoder has its own decoder widths")
        for c in self.unet_block_channels:
            if c % self.unet_norm_groups:
                raise bad(
                    "unet_block_channels",
                    f"every width must be divisible by unet_norm_groups={self.unet_norm_groups}",
                )
        if len(self.unet_attention_levels) != len(self.unet_block_channels):
            raise bad("unet_attention_levels", "needs one true/false per entry of unet_block_channels")
        if self.tile_size % (self.latent_factor * 2 ** (len(self.unet_block_channels) - 1)):
            raise bad(
                "tile_size", "must be divisible by the autoencoder factor times the U-Net's downsampling"
            )
        if not 0 < self.beta_start < self.beta_end < 1:
            raise bad("beta_start", "need 0 < beta_start < beta_end < 1")
        if not (isinstance(self.guidance_scale, (int, float)) and self.guidance_scale >= 1):
            raise bad("guidance_scale", "must be a number >= 1 (1 = no classifier-free guidance)")

    # ------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model config") -> ModelConfig:
        """Build from a dict, refusing unknown keys with a clear :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are {', '.join(sorted(known))}"
            )
        try:
            return cls(**data)
        except TypeError as exc:  # pragma: no cover - dataclass signature errors
            raise ConfigError(f"{where}: {exc}") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"_class_name": "GeodiffModel", **self.to_dict()}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        data = json.loads(Path(path).read_text())
        data = {k: v for k, v in data.items() if not k.startswith("_")}
        return cls.from_dict(data, where=str(path))
