"""Mixing the decoders of two decoder-only fine-tunes of one autoencoder."""

from __future__ import annotations

import copy

import pytest
import torch

from geodiff.errors import InvalidParameterError, ModelError
from geodiff.model import ModelConfig, build_autoencoder
from geodiff.train.surgery.mix import mix_decoders

from tiny_model import TINY


def _fine_tuned_pair():
    """A tiny autoencoder and a copy whose decoder alone moved (what a decoder-only fine-tune leaves)."""
    torch.manual_seed(0)
    a = build_autoencoder(ModelConfig(**TINY)).eval()
    b = copy.deepcopy(a)
    with torch.no_grad():
        for p in list(b.decoder.parameters()) + list(b.post_quant_conv.parameters()):
            p.add_(torch.randn_like(p) * 0.1)
    return a, b


def test_mixed_decoder_lies_between_the_two_and_keeps_the_encoder() -> None:
    a, b = _fine_tuned_pair()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        lat = a.encode(x).latent_dist.mode()
        ends = [mix_decoders(a, b, alpha).decode(lat).sample for alpha in (0.0, 1.0)]
        assert torch.equal(ends[0], a.decode(lat).sample)
        assert torch.allclose(ends[1], b.decode(lat).sample, atol=1e-6)
        half = mix_decoders(a, b, 0.5)
        for name, p in half.decoder.named_parameters():
            expected = (a.decoder.get_parameter(name) + b.decoder.get_parameter(name)) / 2
            assert torch.allclose(p, expected, atol=1e-7), name
        assert torch.equal(half.encode(x).latent_dist.mode(), lat)  # same latent space
    assert not torch.equal(a.decoder.conv_out.weight, half.decoder.conv_out.weight)  # a itself is untouched


def test_autoencoders_with_different_encoders_are_refused() -> None:
    a, b = _fine_tuned_pair()
    with torch.no_grad():
        b.encoder.conv_in.weight.add_(0.01)
    with pytest.raises(ModelError, match="different encoders.*encoder.conv_in.weight"):
        mix_decoders(a, b, 0.5)
    wider = build_autoencoder(ModelConfig(**{**TINY, "vae_block_channels": [8, 16, 16]}))
    with pytest.raises(ModelError, match="different architectures"):
        mix_decoders(a, wider, 0.5)
    with pytest.raises(InvalidParameterError, match="between 0 and 1"):
        mix_decoders(a, a, 1.5)
