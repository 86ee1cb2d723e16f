"""Detail latent channels: the old latents and decoding exactly kept at the start, only the new channels and the
decoder learn, the new channels' scale matched, and the U-Net grown to predict them on top of the old ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geodiff.errors import ConfigError, ModelError
from geodiff.model import GeodiffModel, ModelConfig, build_autoencoder, load_autoencoder
from geodiff.pipeline import GeodiffPipeline
from geodiff.train.config import load_config
from geodiff.train.loops import train_autoencoder, train_diffusion
from geodiff.train.surgery.detail import (
    add_latent_channels,
    add_unet_latent_channels,
    freeze_old_channels,
    match_new_channel_scale,
    use_grown_autoencoder,
)

from tiny_model import TINY, class_map, trained_looking_vae, write_config


def _images(n: int = 2, size: int = 32, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(
        torch.rand(n, 3, size // 4, size // 4, generator=g) * 2 - 1, size=size, mode="bilinear"
    )


def test_grown_autoencoder_keeps_the_old_latents_and_decoding() -> None:
    vae = trained_looking_vae()
    grown = add_latent_channels(vae, 3).eval()
    assert grown.config.latent_channels == 7 and grown.config.scaling_factor == vae.config.scaling_factor
    x = _images()
    with torch.no_grad():
        old, new = vae.encode(x).latent_dist, grown.encode(x).latent_dist
        assert torch.equal(new.mean[:, :4], old.mean) and torch.equal(new.logvar[:, :4], old.logvar)
        assert new.mean[:, 4:].std() > 1e-3  # the new channels carry something from the start
        ref = vae.decode(old.mean).sample
        assert torch.allclose(grown.decode(new.mean).sample, ref, atol=1e-6)
        assert ref.abs().mean() > 0.05


def _explained(vae, grown, x: torch.Tensor, f: int = 4) -> float:
    """Share of the old autoencoder's reconstruction error (per latent cell) that a least-squares map of the
    grown autoencoder's new channels explains."""
    with torch.no_grad():
        old = vae.encode(x).latent_dist.mode()
        r = F.pixel_unshuffle(x - vae.decode(old).sample, f).permute(0, 2, 3, 1).flatten(0, 2)
        z = grown.encode(x).latent_dist.mode()[:, 4:].permute(0, 2, 3, 1).flatten(0, 2)
    a = torch.cat([z, torch.ones(len(z), 1)], 1).double()
    fit = a @ torch.linalg.lstsq(a, r.double()).solution
    return float(1 - (r - fit).pow(2).sum() / (r - r.mean(0)).pow(2).sum())


def test_informative_channels_start_with_the_missing_detail() -> None:
    vae = trained_looking_vae()
    train, held_out = _images(24, 32), _images(8, 32, seed=4)
    informed = add_latent_channels(vae, 2, images=train).eval()
    random = add_latent_channels(vae, 2).eval()
    with torch.no_grad():
        old, z = vae.encode(train).latent_dist.mean, informed.encode(train).latent_dist.mean
    assert z[:, 4:].std((0, 2, 3)) == pytest.approx([float(old.std())] * 2, rel=1e-3)  # the old spread
    assert z[:, 4:].mean().abs() < 1e-3
    assert torch.equal(z[:, :4], old)
    assert _explained(vae, informed, held_out) > 1.5 * _explained(vae, random, held_out)


def test_only_the_new_rows_and_the_decoder_learn() -> None:
    vae = trained_looking_vae()
    grown = add_latent_channels(vae, 2).train()
    freeze_old_channels(grown, 4)
    before = {k: v.clone() for k, v in grown.state_dict().items()}
    opt = torch.optim.AdamW([p for p in grown.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    x = _images()
    for _ in range(4):
        loss = F.l1_loss(grown(x, sample_posterior=False).sample, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = grown.state_dict()
    with torch.no_grad():  # the old channels are exactly the old encoder's
        assert torch.equal(grown.encode(x).latent_dist.mean[:, :4], vae.encode(x).latent_dist.mean)
    w0, w1 = before["encoder.conv_out.weight"], after["encoder.conv_out.weight"]
    assert torch.equal(w0[:4], w1[:4]) and torch.equal(w0[6:10], w1[6:10])  # old means and log-variances
    assert not torch.equal(w0[4:6], w1[4:6])  # the new means learn
    assert torch.equal(before["encoder.down_blocks.0.resnets.0.conv1.weight"],
                       after["encoder.down_blocks.0.resnets.0.conv1.weight"])  # fmt: skip
    assert not torch.equal(before["decoder.conv_in.weight"][:, 4:], after["decoder.conv_in.weight"][:, 4:])


def test_matching_the_new_channels_scale_keeps_the_decoding() -> None:
    grown = add_latent_channels(trained_looking_vae(), 2).eval()
    with torch.no_grad():
        grown.decoder.conv_in.weight[:, 4:] = torch.randn_like(
            grown.decoder.conv_in.weight[:, 4:]
        )  # "trained"
        x = _images(4)
        before = grown.encode(x).latent_dist
        before_img = grown.decode(before.mean).sample
        factors = match_new_channel_scale(grown, 4, before.mean)
        after = grown.encode(x).latent_dist
        assert len(factors) == 2 and all(abs(f - 1) > 1e-3 for f in factors)
        for ch, f in zip((4, 5), factors, strict=True):
            assert after.mean[:, ch].std() == pytest.approx(float(before.mean[:, :4].std()), rel=1e-4)
            assert torch.allclose(after.std[:, ch], before.std[:, ch] * f, rtol=1e-4)  # the noise scales too
        assert torch.allclose(grown.decode(after.mean).sample, before_img, atol=1e-5)
        assert torch.equal(after.mean[:, :4], before.mean[:, :4])


def test_grown_unet_predicts_the_old_channels_as_before() -> None:
    torch.manual_seed(0)
    model = GeodiffModel(ModelConfig(**TINY)).eval()
    grown = add_unet_latent_channels(model.unet, 4, 3).eval()
    cond = model.map_encoder(class_map())
    lat = torch.randn(2, 4, 8, 8)
    extra = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model.predict_noise(lat, 500, cond)
        model.unet = grown
        out = model.predict_noise(torch.cat([lat, extra], 1), 500, cond)
    assert out.shape == (2, 7, 8, 8)
    assert torch.allclose(out[:, :4], ref, atol=1e-5)
    assert torch.equal(out[:, 4:], torch.zeros_like(out[:, 4:]))
    with pytest.raises(ModelError, match="predicts 7 latent channels"):
        add_unet_latent_channels(grown, 4, 1)


def test_use_grown_autoencoder_refuses_other_latents() -> None:
    torch.manual_seed(0)
    model = GeodiffModel(ModelConfig(**TINY)).eval()
    other = build_autoencoder(ModelConfig(**TINY))  # another encoder, same shape and scale
    with pytest.raises(ModelError, match="not the model's latents"):
        use_grown_autoencoder(model, add_latent_channels(other, 2))
    scaled = add_latent_channels(model.vae, 2)
    scaled.register_to_config(scaling_factor=0.5)
    with pytest.raises(ModelError, match="latent scale"):
        use_grown_autoencoder(model, scaled)
    with pytest.raises(ModelError, match="AutoencoderKL"):
        add_latent_channels(build_autoencoder(ModelConfig(**{**TINY, "vae_type": "vq"})), 2)
    use_grown_autoencoder(model, add_latent_channels(model.vae, 2))
    assert model.latent_channels == 6 and model.config.latent_channels == 6
    assert model.unet.config.out_channels == 6


def _grown_configs(tmp_path: Path, dataset: Path) -> tuple[Path, Path, Path]:  # noqa: F811
    """Train a tiny model, then the two detail stages' configs on top of it."""
    base_path = write_config(tmp_path, dataset)
    base = load_config(base_path)
    train_autoencoder(base)
    model_dir = train_diffusion(base)
    text = base_path.read_text()
    ae_text = text.replace(str(tmp_path / "run"), str(tmp_path / "detail")).replace(
        "[autoencoder]\n",
        f'[autoencoder]\npretrained = "{model_dir}"\npretrained_subfolder = "vae"\ndecoder_only = true\n'
        "extra_latent_channels = 2\ndisc_weight = 0.5\ndisc_start = 2\ndisc_channels = 8\ndisc_layers = 2\n",
    )
    (tmp_path / "detail.toml").write_text(ae_text)
    head, model_sec = text.replace(str(tmp_path / "run"), str(tmp_path / "detail_diff")).split("[model]", 1)
    rest = model_sec[model_sec.index("\n[") :]  # drop [model]: the pretrained model's settings are used
    vae_dir = tmp_path / "detail" / "autoencoder" / "vae"
    diff_text = (head + rest).replace(
        "[diffusion]\n", f'[diffusion]\npretrained = "{model_dir}"\nautoencoder = "{vae_dir}"\n'
    )
    (tmp_path / "detail_diff.toml").write_text(diff_text)
    return model_dir, tmp_path / "detail.toml", tmp_path / "detail_diff.toml"


def test_detail_stages_train_and_ship_a_model(tmp_path: Path, dataset: Path) -> None:  # noqa: F811
    model_dir, ae_cfg, diff_cfg = _grown_configs(tmp_path, dataset)
    vae_dir = train_autoencoder(load_config(ae_cfg))
    grown = load_autoencoder(vae_dir)
    base = GeodiffModel.from_pretrained(model_dir)
    assert grown.config.latent_channels == 6
    assert grown.config.scaling_factor == base.vae.config.scaling_factor
    x = _images()
    with torch.no_grad():  # the diffusion model's latents are untouched
        assert torch.allclose(grown.encode(x).latent_dist.mean[:, :4], base.vae.encode(x).latent_dist.mean)

    out = train_diffusion(load_config(diff_cfg))
    model = GeodiffModel.from_pretrained(out)
    assert model.latent_channels == 6 and model.unet.config.in_channels == base.unet.config.in_channels + 2
    assert "detail channels" in (out / "README.md").read_text()
    pipe = GeodiffPipeline(model, model.make_scheduler("dpm"))
    out = pipe(class_map(1, 64)[0], num_inference_steps=2, generator=torch.Generator().manual_seed(0),
               return_latents=True)  # fmt: skip
    assert out.latents.shape[1] == 6 and np.asarray(out.images).shape[-3:] == (64, 64, 3)
    # resuming with another autoencoder is refused: the U-Net learned these latents
    other = diff_cfg.read_text().replace(f'autoencoder = "{vae_dir}"', f'autoencoder = "{model_dir / "vae"}"')
    diff_cfg.write_text(other)
    with pytest.raises(ConfigError, match="diffusion.autoencoder"):
        train_diffusion(load_config(diff_cfg), resume=True)


def test_detail_options_need_their_partners(tmp_path: Path, dataset: Path) -> None:  # noqa: F811
    path = write_config(tmp_path, dataset)
    text = path.read_text()
    path.write_text(text.replace("[autoencoder]\n", "[autoencoder]\nextra_latent_channels = 2\n"))
    with pytest.raises(ConfigError, match="extra_latent_channels needs decoder_only"):
        load_config(path)
    path.write_text(text.replace("[diffusion]\n", '[diffusion]\nautoencoder = "x"\n'))
    with pytest.raises(ConfigError, match="set pretrained too"):
        load_config(path)
