"""Extra latent channels for detail, added to a trained ``AutoencoderKL`` without changing the latents it has.

A decoder can only be as sharp as its latents allow: every decoder fine-tune of the shipped autoencoder traded
PSNR for sharpness along one line (the model card). Retraining the autoencoder would change the latent space and
throw away the diffusion model trained on it. Instead ``add_latent_channels`` grows the latent from ``c`` to
``c + k`` channels, function-preserving at the start:

- the encoder trunk and its ``c`` old channels are copied and stay frozen (:func:`freeze_old_channels`), so the
  old latents are bit-identical; the ``k`` new channels are fresh output rows reading the trunk's last features,
  which hold far more than ``c`` channels' worth of the tile;
- the decoder reads the new channels through zero weights, so it decodes exactly as before until training
  teaches it to use them.

The diffusion U-Net grows the same way (:func:`add_unet_latent_channels`): zero input weights for the new
channels, so it predicts the old channels exactly as before and learns the new ones on top.
:func:`match_new_channel_scale` finally rescales the new channels (and undoes it in the decoder) to the old
channels' spread, so the one ``scaling_factor`` diffusers keeps fits them all.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel

from geodiff.errors import ModelError

# posterior log-variance the new channels start with: a little noise (std ~0.02) regularises them the way the
# KL posterior does for the old ones, without drowning what they carry
_NEW_LOGVAR = -8.0


def _check_kl(vae: Any) -> AutoencoderKL:
    if type(vae) is not AutoencoderKL:
        raise ModelError(f"latent channels can only be added to an AutoencoderKL, not a {type(vae).__name__}")
    c = vae.config
    if not (getattr(c, "use_quant_conv", True) and getattr(c, "use_post_quant_conv", True)):
        raise ModelError(
            "latent channels can only be added to an autoencoder with quant_conv and post_quant_conv"
        )
    if getattr(c, "shift_factor", None) is not None or getattr(c, "latents_mean", None) is not None:
        raise ModelError(
            "latent channels can only be added to an autoencoder without a latent shift (shift_factor / latents_mean)"
        )
    return vae


def _moment_rows(c: int, k: int) -> tuple[list[int], list[int]]:
    """Where the old mean and log-variance rows go among ``2 (c + k)`` moments ([means..., logvars...])."""
    return list(range(c)), [c + k + i for i in range(c)]


@torch.no_grad()
def _informative_rows(vae: AutoencoderKL, images: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder output rows (``[k, C, 3, 3]`` weights, ``[k]`` biases) whose channels are the ``k`` principal
    components of what a linear map of the trunk's last features predicts of ``vae``'s reconstruction error.

    Random rows carry little the decoder can pick up, and it learns to read them only slowly; these carry the
    most predictable part of the missing detail from the first step.
    """
    conv = vae.encoder.conv_out
    seen: dict[str, torch.Tensor] = {}
    handle = conv.register_forward_hook(lambda m, i, o: seen.__setitem__("f", i[0]))
    try:
        z = vae.encode(images).latent_dist.mode()
    finally:
        handle.remove()
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    residual = F.pixel_unshuffle(images - vae.decode(z).sample, f).permute(0, 2, 3, 1).flatten(0, 2)
    feats = F.unfold(seen["f"], conv.kernel_size, padding=conv.padding).transpose(1, 2).flatten(0, 1)
    a = torch.cat([feats, torch.ones(len(feats), 1)], 1).double()
    gram = a.T @ a
    ridge = 1e-4 * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    w = torch.linalg.solve(gram + ridge, a.T @ residual.double())  # features -> predicted residual
    pred = a @ w
    _, _, vh = torch.linalg.svd(pred - pred.mean(0), full_matrices=False)
    proj = w @ vh[:k].T  # features -> the k principal components
    proj = proj / (a @ proj).std(0).clamp_min(1e-8)  # unit spread; the caller sets the scale
    proj[-1] -= (a @ proj).mean(0)  # centred
    weight = proj[:-1].T.reshape(k, *conv.weight.shape[1:])
    return weight.float(), proj[-1].float()


def add_latent_channels(
    vae: AutoencoderKL, extra: int, seed: int = 0, images: torch.Tensor | None = None
) -> AutoencoderKL:
    """``vae`` (float32) with ``extra`` more latent channels; its old channels and its decoding are unchanged.

    With ``images`` (``[N, 3, H, W]`` in ``[-1, 1]``, a few dozen training crops) the new channels start as the
    principal components of the detail the old latents miss (:func:`_informative_rows`); otherwise at random.
    """
    _check_kl(vae)
    if extra < 1:
        raise ModelError(f"extra latent channels must be at least 1, got {extra}")
    cfg = dict(vae.config)
    c = int(cfg["latent_channels"])
    k = extra
    cfg = {key: v for key, v in cfg.items() if not key.startswith("_")}
    cfg["latent_channels"] = c + k
    grown = AutoencoderKL(**cfg)
    state = {name: t.clone() for name, t in vae.state_dict().items()}
    new = grown.state_dict()
    gen = torch.Generator().manual_seed(seed)
    mean_rows, logvar_rows = _moment_rows(c, k)
    old_rows = mean_rows + logvar_rows
    new_mean = list(range(c, c + k))
    new_logvar = list(range(2 * c + k, 2 * (c + k)))

    # encoder.conv_out: old rows copied; new mean rows at the old rows' scale; new log-variances constant
    w_old, b_old = state["encoder.conv_out.weight"], state["encoder.conv_out.bias"]
    w, b = torch.zeros_like(new["encoder.conv_out.weight"]), torch.zeros_like(new["encoder.conv_out.bias"])
    w[old_rows], b[old_rows] = w_old, b_old
    if images is None:
        w[new_mean] = torch.randn(w[new_mean].shape, generator=gen) * w_old[:c].std()
    else:  # at the old channels' spread (before the old quant_conv, which the new channels skip)
        with torch.no_grad():
            spread = vae.encode(images).latent_dist.mean.std()
        w[new_mean], b[new_mean] = (t * spread for t in _informative_rows(vae, images, k))
    b[new_logvar] = _NEW_LOGVAR
    new["encoder.conv_out.weight"], new["encoder.conv_out.bias"] = w, b

    # quant_conv (1x1 over the moments): old block copied, identity for the new moments, no cross terms
    q_old = state["quant_conv.weight"][:, :, 0, 0]
    q = torch.zeros(2 * (c + k), 2 * (c + k))
    q[torch.tensor(old_rows)[:, None], torch.tensor(old_rows)[None, :]] = q_old
    q[new_mean + new_logvar, new_mean + new_logvar] = 1.0
    qb = torch.zeros(2 * (c + k))
    qb[old_rows] = state["quant_conv.bias"]
    new["quant_conv.weight"], new["quant_conv.bias"] = q[:, :, None, None], qb

    # post_quant_conv (1x1 over the latent): old block copied, identity for the new channels
    p = torch.zeros(c + k, c + k)
    p[:c, :c] = state["post_quant_conv.weight"][:, :, 0, 0]
    p[range(c, c + k), range(c, c + k)] = 1.0
    pb = torch.zeros(c + k)
    pb[:c] = state["post_quant_conv.bias"]
    new["post_quant_conv.weight"], new["post_quant_conv.bias"] = p[:, :, None, None], pb

    # decoder.conv_in reads the new channels through zeros: the decoding is unchanged
    d = torch.zeros_like(new["decoder.conv_in.weight"])
    d[:, :c] = state["decoder.conv_in.weight"]
    new["decoder.conv_in.weight"] = d

    grown_names = {
        "encoder.conv_out.weight", "encoder.conv_out.bias", "quant_conv.weight", "quant_conv.bias",
        "post_quant_conv.weight", "post_quant_conv.bias", "decoder.conv_in.weight",
    }  # fmt: skip
    for name, t in state.items():
        if name not in grown_names:
            new[name] = t
    grown.load_state_dict(new)
    return grown


def freeze_old_channels(vae: AutoencoderKL, old_channels: int) -> list[torch.utils.hooks.RemovableHandle]:
    """Freeze the encoder of a grown autoencoder except the new channels' rows, so the first ``old_channels``
    latent channels stay exactly as they were (the old rows get zero gradients: Adam without weight decay does
    not move them). The decoder stays trainable. Returns the gradient hooks."""
    _check_kl(vae)
    c, total = old_channels, int(vae.config.latent_channels)
    if not 0 < c < total:
        raise ModelError(f"old_channels must be between 1 and {total - 1}, got {c}")
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    mean_rows, logvar_rows = _moment_rows(c, total - c)
    keep = torch.ones(2 * total, dtype=torch.bool)
    keep[mean_rows + logvar_rows] = False
    handles = []
    for param in (
        vae.encoder.conv_out.weight, vae.encoder.conv_out.bias, vae.quant_conv.weight, vae.quant_conv.bias,
    ):  # fmt: skip
        param.requires_grad_(True)
        mask = keep.to(param.device, param.dtype).view(-1, *([1] * (param.dim() - 1)))
        handles.append(param.register_hook(lambda g, m=mask: g * m))
    return handles


@torch.no_grad()
def match_new_channel_scale(vae: AutoencoderKL, old_channels: int, latents: torch.Tensor) -> list[float]:
    """Rescale the channels after ``old_channels`` so that each has the old channels' standard deviation over
    ``latents`` (unscaled posterior means, ``[N, C, h, w]``); the decoder undoes the factor, so decoding is
    unchanged. Returns the factors applied."""
    _check_kl(vae)
    c, total = old_channels, int(vae.config.latent_channels)
    target = latents[:, :c].float().std()
    factors = []
    for ch in range(c, total):
        s = float(target / latents[:, ch].float().std().clamp_min(1e-8))
        factors.append(s)
        lv = total + ch  # its log-variance row
        vae.quant_conv.weight[ch] *= s
        vae.quant_conv.bias[ch] *= s
        vae.quant_conv.bias[lv] += 2 * math.log(s)  # std scales with the mean
        vae.post_quant_conv.weight[:, ch] /= s
    return factors


def add_unet_latent_channels(
    unet: UNet2DConditionModel, old_channels: int, extra: int
) -> UNet2DConditionModel:
    """``unet`` (input = latent channels then map channels) for a latent grown by ``extra`` channels: the new
    inputs enter through zero weights and the new outputs start at zero, so the old channels' predictions are
    unchanged."""
    c, k = old_channels, extra
    if k < 1:
        raise ModelError(f"extra latent channels must be at least 1, got {k}")
    cfg = {key: v for key, v in dict(unet.config).items() if not key.startswith("_")}
    if cfg["out_channels"] != c or cfg["in_channels"] < c:
        raise ModelError(
            f"this U-Net predicts {cfg['out_channels']} latent channels, not {c}: it belongs to another autoencoder"
        )
    cfg["in_channels"] += k
    cfg["out_channels"] += k
    grown = UNet2DConditionModel(**cfg)
    state = {name: t.clone() for name, t in unet.state_dict().items()}
    w_in = state["conv_in.weight"]
    new_in = torch.zeros(w_in.shape[0], w_in.shape[1] + k, *w_in.shape[2:], dtype=w_in.dtype)
    new_in[:, :c] = w_in[:, :c]
    new_in[:, c + k :] = w_in[:, c:]
    state["conv_in.weight"] = new_in
    w_out, b_out = state["conv_out.weight"], state["conv_out.bias"]
    state["conv_out.weight"] = torch.cat([w_out, torch.zeros(k, *w_out.shape[1:], dtype=w_out.dtype)])
    state["conv_out.bias"] = torch.cat([b_out, torch.zeros(k, dtype=b_out.dtype)])
    grown.load_state_dict(state)
    return grown


@torch.no_grad()
def use_grown_autoencoder(model: Any, vae: Any) -> None:
    """Give ``model`` (a :class:`~geodiff.model.GeodiffModel`) the autoencoder ``vae`` whose first channels are
    the model's own latents (same encoder output, same scale), growing the U-Net for the extra channels.

    Raises :class:`~geodiff.errors.ModelError` when ``vae`` has fewer channels, another latent scale, or first
    channels that differ from the model's latents: the U-Net would then denoise latents it never learned.
    """
    old, c = model.vae, model.latent_channels
    total = int(vae.config.latent_channels)
    if total < c:
        raise ModelError(f"the autoencoder has {total} latent channels, fewer than the model's {c}")
    old_scale = float(getattr(old.config, "scaling_factor", 1.0) or 1.0)
    new_scale = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
    if not math.isclose(old_scale, new_scale, rel_tol=1e-4):
        raise ModelError(
            f"the autoencoder's latent scale {new_scale:.6g} differs from the model's {old_scale:.6g}: "
            "use one grown from the model's own autoencoder (autoencoder.extra_latent_channels)"
        )
    probe = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    dev = next(old.parameters()).device
    ours = old.encode(probe.to(dev, next(old.parameters()).dtype)).latent_dist.mean.float().cpu()
    vae.to(dev)
    theirs = vae.encode(probe.to(dev, next(vae.parameters()).dtype)).latent_dist.mean[:, :c].float().cpu()
    # float16 storage of either copy rounds the weights: compare at that precision
    if not torch.allclose(ours, theirs, atol=2e-2 * float(ours.abs().max()) + 1e-4):
        raise ModelError(
            "the autoencoder's first latent channels are not the model's latents (another encoder): use one grown "
            "from the model's own autoencoder (autoencoder.extra_latent_channels)"
        )
    if total > c:
        unet = add_unet_latent_channels(model.unet.float().cpu(), c, total - c)
        model.unet = unet.to(dev)
    model.set_autoencoder(vae)
