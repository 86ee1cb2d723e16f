"""GeodiffModel: the five conditioning variants, save/load round trip, schedulers, autoencoder loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from geodiff.errors import ConfigError, ModelError
from geodiff.model import (
    CONDITIONING_VARIANTS,
    GeodiffModel,
    ModelConfig,
    build_autoencoder,
    load_autoencoder,
)
from geodiff.settings import DEFAULT_MODEL_DIR, DEFAULT_RESOLUTION_M

from tiny_model import TINY, build_tiny_model, class_map

# one thread: the 2 shared cores are usually busy, and OpenMP threads spin badly under contention
torch.set_num_threads(1)


@pytest.mark.parametrize("variant", CONDITIONING_VARIANTS)
def test_each_variant_builds_and_predicts(variant: str) -> None:
    model = build_tiny_model(end_to_end=False, conditioning=variant)
    cond = model.condition(class_map())
    lat = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        eps = model.predict_noise(lat, torch.tensor([10, 900]), cond)
    assert eps.shape == lat.shape and torch.isfinite(eps).all()
    if variant == "none":
        assert cond.concat is None
    else:
        assert cond.concat is not None and cond.concat.shape[-2:] == (8, 8)
    if variant.endswith("xattn"):
        assert cond.context.shape == (2, 16, 8)  # 8x8 latent cells pooled by 2
    else:
        assert cond.context.shape[1] == 1
    # the map must matter for conditioned variants
    other = model.condition(torch.zeros(2, 32, 32, dtype=torch.long))
    with torch.no_grad():
        eps2 = model.predict_noise(lat, torch.tensor([10, 900]), other)
    assert torch.equal(eps, eps2) == (variant == "none")


def test_contract_properties() -> None:
    model = build_tiny_model(end_to_end=False)
    assert model.latent_factor == 4
    assert model.config.tile_size == 32
    assert model.config.resolution_m == DEFAULT_RESOLUTION_M
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        lat = model.encode_images(images)
        assert lat.shape == (1, 4, 8, 8)
        out = model.decode_latents(lat)
    assert out.shape == (1, 3, 32, 32) and out.min() >= -1 and out.max() <= 1


def test_schedulers_share_betas() -> None:
    model = build_tiny_model(end_to_end=False)
    dpm, ddpm = model.make_scheduler("dpm"), model.make_scheduler("ddpm")
    assert torch.equal(dpm.betas.double(), ddpm.betas.double())
    assert len(ddpm.betas) == 1000
    assert dpm.config.algorithm_type == "dpmsolver++" and dpm.config.solver_order == 2
    with pytest.raises(ModelError, match="unknown sampler"):
        model.make_scheduler("euler")


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    model = build_tiny_model(end_to_end=False)
    path = model.save_pretrained(tmp_path / "m")
    for sub in ("vae", "unet", "map_encoder", "scheduler"):
        assert (path / sub).is_dir()
    assert json.loads((path / "classes.json").read_text())["classes"][1]["name"] == "building"
    loaded = GeodiffModel.from_pretrained(path)
    assert loaded.config == model.config
    cm = class_map()
    lat = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        a = model.predict_noise(lat, 500, model.condition(cm))
        b = loaded.predict_noise(lat, 500, loaded.condition(cm))
        assert torch.equal(a, b)
        assert torch.equal(model.decode_latents(lat), loaded.decode_latents(lat))
    assert torch.equal(model.make_scheduler("dpm").betas, loaded.make_scheduler("dpm").betas)


def test_fp16_storage_and_shards(tmp_path: Path) -> None:
    model = build_tiny_model(end_to_end=False, storage_dtype="float16")
    path = model.save_pretrained(tmp_path / "m", max_shard_size="20KB")
    shards = list((path / "unet").glob("*.safetensors"))
    assert len(shards) > 1 and all(p.stat().st_size < 40_000 for p in shards)
    loaded = GeodiffModel.from_pretrained(path)
    assert loaded.dtype == torch.float32
    p0 = next(model.unet.parameters())
    assert torch.allclose(next(loaded.unet.parameters()), p0.half().float())


def test_missing_or_incomplete_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist.*train"):
        GeodiffModel.from_pretrained(tmp_path / "nope")
    path = build_tiny_model(end_to_end=False).save_pretrained(tmp_path / "m")
    for f in (path / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelError, match="unet/ weights"):
        GeodiffModel.from_pretrained(path)
    (path / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(ModelError, match="scheduler"):
        GeodiffModel.from_pretrained(path)


def test_bad_model_config() -> None:
    with pytest.raises(ConfigError, match="conditioning"):
        ModelConfig(conditioning="concat_magic")
    with pytest.raises(ConfigError, match="unknown key"):
        ModelConfig.from_dict({"colour": 3})
    with pytest.raises(ConfigError, match="unet_attention_levels"):
        ModelConfig(**{**TINY, "unet_attention_levels": [True]})
    with pytest.raises(ConfigError, match="vae_decoder_channels.*one decoder width per block"):
        ModelConfig(**{**TINY, "vae_type": "asym_kl", "vae_decoder_channels": [16, 16]})


@pytest.mark.parametrize("vae_type", ["kl", "vq", "asym_kl"])
def test_load_diffusers_autoencoder_from_local_folder(tmp_path: Path, vae_type: str) -> None:
    wide = {"vae_decoder_channels": [16, 16, 16]} if vae_type == "asym_kl" else {}
    cfg = ModelConfig(**{**TINY, "vae_type": vae_type, **wide})
    vae = build_autoencoder(cfg)
    vae.save_pretrained(tmp_path / "repo" / "vqvae")
    loaded = load_autoencoder(tmp_path / "repo", subfolder="vqvae")
    assert type(loaded) is type(vae)
    model = build_tiny_model(end_to_end=False)
    model.set_autoencoder(loaded)
    assert model.config.vae_type == vae_type
    assert model.config.vae_decoder_channels == wide.get("vae_decoder_channels", [])
    with torch.no_grad():
        lat = model.encode_images(torch.zeros(1, 3, 32, 32))
        assert model.decode_latents(lat).shape == (1, 3, 32, 32)
    with pytest.raises(ModelError, match="cannot read an autoencoder"):
        load_autoencoder(tmp_path / "empty")


def test_window_size_checked() -> None:
    with pytest.raises(ModelError, match="multiples of 8"):
        build_tiny_model(end_to_end=False).condition(torch.zeros(1, 36, 36, dtype=torch.long))


def test_shipped_default_model() -> None:
    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        pytest.skip(f"no shipped model in {DEFAULT_MODEL_DIR}")
    model = GeodiffModel.from_pretrained(DEFAULT_MODEL_DIR)
    assert model.config.resolution_m == DEFAULT_RESOLUTION_M
    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file())
    assert size <= 64 * 2**20
    assert all(p.stat().st_size <= 15_000_000 for p in DEFAULT_MODEL_DIR.rglob("*.safetensors"))
    assert (DEFAULT_MODEL_DIR / "README.md").exists()
