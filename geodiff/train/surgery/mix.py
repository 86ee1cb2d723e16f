"""A decoder between two decoder-only fine-tunes of one autoencoder: their weights mixed, no training.

An adversarial decoder fine-tune trades reconstruction PSNR for sharpness. When the fine-tune started from the
other decoder and kept the encoder (so the latent space, and the diffusion model trained on it, are unchanged),
the weights ``(1 - alpha) * A + alpha * B`` decode the same latents, as weight-space ensembles of fine-tunes do
for classifiers (Wortsman et al., 2022, WiSE-FT). Along alpha, PSNR and sharpness lie above the straight line
between the two end points for small alpha and on it from about 0.75 (``bench/results/decoder_interpolation.md``);
which alpha makes the best synthetic images is for ``geodiff evaluate`` to say. ``geodiff model mix-decoders A B
--alpha ALPHA --out DIR`` writes one (:func:`mix_decoder_folders`); ``bench/decoder_interpolation.py`` measures
them along alpha.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import torch

from geodiff.errors import InvalidParameterError, ModelError, OutputError

# a diffusers autoencoder's decoder side; everything else (encoder, quant_conv) defines the latent space
DECODER_PREFIXES = ("decoder.", "post_quant_conv.")


def mix_decoders(a: Any, b: Any, alpha: float) -> Any:
    """A copy of autoencoder ``a`` whose decoder weights are ``(1 - alpha) * a + alpha * b``.

    ``a`` and ``b`` must be one architecture with identical encoders (the decoders may differ): anything else
    raises :class:`ModelError`, since mixing decoders of two latent spaces decodes neither.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InvalidParameterError(
            f"alpha must be between 0 and 1 (the weight of the second decoder), got {alpha}"
        )
    sa, sb = a.state_dict(), b.state_dict()
    if type(a) is not type(b) or sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        raise ModelError("the two autoencoders are different architectures: their decoders cannot be mixed")
    differ = [k for k in sa if not k.startswith(DECODER_PREFIXES) and not torch.equal(sa[k], sb[k])]
    if differ:
        raise ModelError(
            f"the two autoencoders have different encoders ({len(differ)} tensors differ, e.g. {differ[0]}): "
            "only decoder-only fine-tunes of one autoencoder share a latent space"
        )
    mixed = copy.deepcopy(a)
    mixed.load_state_dict(
        {
            k: torch.lerp(sa[k].float(), sb[k].float(), alpha).to(sa[k].dtype)
            for k in sa
            if k.startswith(DECODER_PREFIXES)
        },
        strict=False,
    )
    return mixed


def mix_decoder_folders(a: str | Path, b: str | Path, alpha: float, out: str | Path) -> Path:
    """:func:`mix_decoders` of the diffusers autoencoders in folders (or hub ids) ``a`` and ``b``, saved as a new
    diffusers autoencoder folder ``out`` (published whole: written beside it, then renamed); returns ``out``."""
    from geodiff.model import load_autoencoder

    out = Path(out)
    if out.exists() or out.is_symlink():
        raise OutputError(f"{out} exists: name a new folder for the mixed autoencoder")
    if not out.parent.is_dir():
        raise OutputError(f"output folder {out.parent} does not exist: create it first")
    vae_a = load_autoencoder(a, dtype=torch.float32).eval()
    vae_b = load_autoencoder(b, dtype=torch.float32).eval()
    mixed = mix_decoders(vae_a, vae_b, alpha)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        mixed.save_pretrained(tmp, safe_serialization=True, max_shard_size="15MB")
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
