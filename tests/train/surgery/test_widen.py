"""Widening a trained decoder: an exact copy to start with, then a decoder-only fine-tune that keeps the latents."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AsymmetricAutoencoderKL, AutoencoderKL

from geodiff.errors import ConfigError, ModelError
from geodiff.model import GeodiffModel, ModelConfig, build_autoencoder, load_autoencoder
from geodiff.train.config import load_config
from geodiff.train.loops import train_autoencoder
from geodiff.train.surgery.widen import widen_decoder

from tiny_model import TINY, trained_looking_vae, write_config


def test_widened_decoder_decodes_exactly_as_the_original() -> None:
    vae = trained_looking_vae()
    wide = widen_decoder(vae).eval()
    assert isinstance(wide, AsymmetricAutoencoderKL)
    assert list(wide.config.up_block_out_channels) == [16, 16, 16]
    assert list(wide.config.down_block_out_channels) == [8, 8, 8]
    assert wide.config.scaling_factor == vae.config.scaling_factor
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        assert torch.allclose(wide.encode(x).latent_dist.mode(), z, atol=1e-5)
        ref = vae.decode(z).sample
        assert torch.allclose(wide.decode(z).sample, ref, atol=1e-5)
        assert ref.abs().mean() > 0.05  # a decoder that outputs ~0 would pass trivially
    dec = sum(p.numel() for n, p in wide.decoder.named_parameters() if "condition_encoder" not in n)
    assert dec > 3 * sum(p.numel() for p in vae.decoder.parameters())


def test_the_copies_learn_different_features() -> None:
    """Each channel's two copies get different gradients (the split is not exactly half and half)."""
    wide = widen_decoder(trained_looking_vae()).train()
    opt = torch.optim.SGD(wide.decoder.parameters(), lr=0.5)
    z = torch.randn(2, 4, 8, 8)
    for _ in range(3):
        loss = (wide.decode(z).sample - 0.5).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = wide.decoder.conv_in.weight.detach()  # output channel c of the original is 2c and 2c+1 here
    assert (w[0::2] - w[1::2]).abs().max() > 1e-4


def test_only_kl_autoencoders_without_attention_widen() -> None:
    with pytest.raises(ModelError, match="AutoencoderKL"):
        widen_decoder(build_autoencoder(ModelConfig(**{**TINY, "vae_type": "vq"})))
    with pytest.raises(ModelError, match="mid-block attention"):
        widen_decoder(build_autoencoder(ModelConfig(**{**TINY, "vae_mid_attention": True})))
    shifted = build_autoencoder(ModelConfig(**TINY))
    shifted.register_to_config(shift_factor=0.1)  # e.g. a hub autoencoder with a latent shift
    with pytest.raises(ModelError, match="latent shift"):
        widen_decoder(shifted)
    bare = AutoencoderKL(**{**dict(shifted.config), "shift_factor": None, "use_quant_conv": False})
    with pytest.raises(ModelError, match="quant_conv"):
        widen_decoder(bare)


def test_widened_decoder_fine_tune_keeps_the_latents_and_ships_in_a_model(
    tmp_path: Path,
    dataset: Path,  # noqa: F811
) -> None:
    base_path = write_config(tmp_path, dataset)
    base = load_config(base_path)
    vae_dir = train_autoencoder(base)
    text = base_path.read_text().replace(str(tmp_path / "run"), str(tmp_path / "wide"))
    text = text.replace("[autoencoder]\n", f'[autoencoder]\npretrained = "{vae_dir}"\ndecoder_only = true\n'
                        "widen_decoder = true\ndisc_weight = 0.5\ndisc_start = 0\ndisc_channels = 8\ndisc_layers = 2\n")  # fmt: skip
    (tmp_path / "wide.toml").write_text(text)
    tuned_dir = train_autoencoder(load_config(tmp_path / "wide.toml"))

    before, after = load_autoencoder(vae_dir), load_autoencoder(tuned_dir)
    assert isinstance(after, AsymmetricAutoencoderKL)
    assert after.config.scaling_factor == before.config.scaling_factor
    enc_b, enc_a = before.encoder.state_dict(), after.encoder.state_dict()
    assert all(torch.equal(enc_b[k], enc_a[k]) for k in enc_b)  # the latents are the diffusion model's
    # trained: no longer the exact copy of the original decoder
    copy = widen_decoder(before).decoder.state_dict()
    assert any(not torch.equal(copy[k], v) for k, v in after.decoder.state_dict().items())

    # swapped into a model, saved in float16 and loaded back: the config says what it is
    model = GeodiffModel(ModelConfig(**{**TINY, "storage_dtype": "float16"}))
    model.set_autoencoder(after)
    loaded = GeodiffModel.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.config.vae_type == "asym_kl" and loaded.config.vae_decoder_channels == [16, 16, 16]
    assert isinstance(loaded.vae, AsymmetricAutoencoderKL)
    with torch.no_grad():
        assert loaded.decode_latents(torch.randn(1, 4, 8, 8)).shape == (1, 3, 32, 32)


def test_widen_decoder_needs_decoder_only(tmp_path: Path, dataset: Path) -> None:  # noqa: F811
    path = write_config(tmp_path, dataset)
    path.write_text(path.read_text().replace("[autoencoder]\n", "[autoencoder]\nwiden_decoder = true\n"))
    with pytest.raises(ConfigError, match="widen_decoder needs decoder_only"):
        load_config(path)


def test_a_widened_autoencoder_reloads_without_a_config_warning(tmp_path: Path) -> None:
    """diffusers' AsymmetricAutoencoderKL warns on reloading its own config (two keys it registers itself);
    geodiff hides exactly that message, and a config with a genuinely unexpected key still warns."""
    import io
    import json
    import logging

    from diffusers.utils import logging as dlog

    widen_decoder(trained_looking_vae()).save_pretrained(tmp_path / "vae")
    seen = io.StringIO()
    handler = logging.StreamHandler(seen)
    dlog.get_logger("diffusers").addHandler(handler)
    try:
        assert isinstance(load_autoencoder(tmp_path / "vae"), AsymmetricAutoencoderKL)
        assert "not expected" not in seen.getvalue()
        cfg_file = tmp_path / "vae" / "config.json"
        cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "bogus_key": 1}))
        load_autoencoder(tmp_path / "vae")
        assert "bogus_key" in seen.getvalue()
    finally:
        dlog.get_logger("diffusers").removeHandler(handler)
