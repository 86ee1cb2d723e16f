"""A wider decoder for a trained ``AutoencoderKL`` that starts out decoding exactly as the original.

The sharpness an autoencoder reaches is bounded by its decoder's width; retraining a wider autoencoder would
change the latent space and with it the diffusion model. Instead the encoder is copied unchanged and the
decoder is widened Net2Net-style (Chen et al., 2016): every hidden channel ``c`` becomes the two channels
``2c`` and ``2c + 1``, each an exact copy, and the layer reading them gets the original weight split into
``w/2 + e`` and ``w/2 - e``. The copies are equal, so the sum is ``w``: the widened decoder computes the
same image, while ``e`` makes the two copies receive different gradients and learn different features.

Neighbouring copies land in the same GroupNorm group (a group of 2k channels holds k original channels,
each twice), so group means and variances, and thus the output, are unchanged with the same number of
groups. The result is a diffusers ``AsymmetricAutoencoderKL`` (separate encoder and decoder widths); its
blocks always have mid-block attention, which the copy turns into the identity (zero output projection: the
residual passes the input through) where the original has none.
"""

from __future__ import annotations

import torch
from diffusers import AsymmetricAutoencoderKL, AutoencoderKL

from geodiff.errors import ModelError

# the symmetry-breaking split, relative to each weight's scale: small enough that fp32 decoding is unchanged
# to rounding, large enough that the two copies drift apart within a few hundred steps
_SPLIT_NOISE = 1e-2


def _widen_tensor(old: torch.Tensor, new_shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """``old`` mapped onto ``new_shape`` where some of dims 0 (outputs) and 1 (inputs) doubled."""
    t = old
    if t.shape[0] * 2 == new_shape[0]:  # output channels: each one twice, side by side
        t = t.repeat_interleave(2, dim=0)
    if t.dim() > 1 and t.shape[1] * 2 == new_shape[1]:  # input channels: the weight split between copies
        half = t / 2
        e = torch.randn(half.shape, generator=gen) * half.std() * _SPLIT_NOISE
        w = half.repeat_interleave(2, dim=1)
        w[:, 0::2] += e
        w[:, 1::2] -= e
        t = w
    if t.shape != new_shape:
        raise ModelError(f"cannot widen a tensor of shape {tuple(old.shape)} to {tuple(new_shape)}")
    return t


def widen_decoder(vae: AutoencoderKL, seed: int = 0) -> AsymmetricAutoencoderKL:
    """``vae`` with its decoder twice as wide, decoding (to rounding) exactly as ``vae`` does.

    The encoder, ``quant_conv``, ``post_quant_conv`` and the scaling factor are copied unchanged, so the
    latents, and a diffusion model trained on them, stay valid.
    """
    if type(vae) is not AutoencoderKL:
        raise ModelError(
            f"only an AutoencoderKL decoder can be widened, not a {type(vae).__name__}; "
            "widen the shipped KL autoencoder (or train a wider one from scratch)"
        )
    c = vae.config
    if any(t != "DownEncoderBlock2D" for t in c.down_block_types) or any(
        t != "UpDecoderBlock2D" for t in c.up_block_types
    ):
        raise ModelError("only DownEncoderBlock2D / UpDecoderBlock2D autoencoders can be widened")
    if getattr(c, "shift_factor", None) is not None or getattr(c, "latents_mean", None) is not None:
        # AsymmetricAutoencoderKL has only a scale: a shifted latent space would silently change
        raise ModelError(
            "only an autoencoder without a latent shift (shift_factor / latents_mean) can be widened"
        )
    if not (getattr(c, "use_quant_conv", True) and getattr(c, "use_post_quant_conv", True)):
        raise ModelError("only an autoencoder with quant_conv and post_quant_conv can be widened")
    if getattr(c, "mid_block_add_attention", True):
        # duplicated channels double the attention logits: the copy would not decode the same
        raise ModelError("only an autoencoder without mid-block attention can be widened")
    wide = AsymmetricAutoencoderKL(
        in_channels=c.in_channels,
        out_channels=c.out_channels,
        down_block_types=tuple(c.down_block_types),
        down_block_out_channels=tuple(c.block_out_channels),
        layers_per_down_block=c.layers_per_block,
        up_block_types=tuple(c.up_block_types),
        up_block_out_channels=tuple(2 * ch for ch in c.block_out_channels),
        layers_per_up_block=c.layers_per_block,
        act_fn=c.act_fn,
        latent_channels=c.latent_channels,
        norm_num_groups=c.norm_num_groups,
        sample_size=c.sample_size,
        scaling_factor=c.scaling_factor,
    )
    gen = torch.Generator().manual_seed(seed)
    old_enc, old_dec = vae.encoder.state_dict(), vae.decoder.state_dict()
    enc = wide.encoder.state_dict()
    for name in enc:
        if name in old_enc:
            enc[name] = old_enc[name].clone()
        elif ".attentions." in name and "to_out" in name:  # attention the original lacks: identity
            enc[name] = torch.zeros_like(enc[name])
    wide.encoder.load_state_dict(enc)
    dec = wide.decoder.state_dict()
    for name in dec:
        if name in old_dec:
            dec[name] = _widen_tensor(old_dec[name], dec[name].shape, gen)
        elif ".attentions." in name and "to_out" in name:
            dec[name] = torch.zeros_like(dec[name])
    wide.decoder.load_state_dict(dec)
    wide.quant_conv.load_state_dict(vae.quant_conv.state_dict())
    wide.post_quant_conv.load_state_dict(vae.post_quant_conv.state_dict())
    return wide
