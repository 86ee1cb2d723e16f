"""The training recipe for little compute: GAN autoencoder, Min-SNR weighting, latent cache, exact resume."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.training_utils import compute_snr
from diffusers.utils.torch_utils import randn_tensor

from geodiff.errors import ConfigError, InputNotFoundError
from geodiff.model import GeodiffModel, ModelConfig
from geodiff.train.config import load_config
from geodiff.train.dataset import TileDataset
from geodiff.train.discriminator import PatchDiscriminator, adaptive_weight, high_pass, hinge_d_loss
from geodiff.train.latents import LatentCache
from geodiff.train.loops import diffusion_loss, lowpass_l1, train_autoencoder, train_diffusion
from geodiff.train.symmetry import NUM_DIHEDRAL, dihedral

from tiny_model import TINY, write_config

GAN = "disc_weight = 0.5\ndisc_start = 2\ndisc_channels = 8\ndisc_layers = 2\n"
RECIPE = "snr_gamma = 5.0\nlatent_cache = true\ncond_drop = 0.5\n"


def _config(tmp_path: Path, data: Path, name: str, ae_steps: int, diff_steps: int):
    text = write_config(tmp_path, data).read_text()
    text = text.replace("[autoencoder]\nsteps = 4", f"[autoencoder]\nsteps = {ae_steps}\n{GAN}")
    text = text.replace("[diffusion]\nsteps = 4", f"[diffusion]\nsteps = {diff_steps}\n{RECIPE}")
    text = text.replace(str(tmp_path / "run"), str(tmp_path / name))
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return load_config(path)


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _ckpt(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_gan_autoencoder_trains_and_resumes_to_the_same_state(tmp_path: Path, dataset: Path) -> None:  # noqa: F811
    full = _config(tmp_path, dataset, "full", ae_steps=4, diff_steps=4)
    train_autoencoder(full)
    rows = list(csv.DictReader((full.run_dir / "autoencoder" / "log.csv").open()))
    assert [r["g_loss"] == "" for r in rows] == [True, True, False, False]  # GAN on from disc_start
    assert all(math.isfinite(float(r[k])) for r in rows[2:] for k in ("g_loss", "d_loss", "d_weight"))

    # the same run stopped after 2 steps and resumed: bit-identical autoencoder, discriminator and optimizers
    part = _config(tmp_path, dataset, "part", ae_steps=2, diff_steps=4)
    train_autoencoder(part)
    part_log = part.run_dir / "autoencoder" / "log.csv"
    with part_log.open("a") as fh:  # a row an interrupted invocation logged after its last checkpoint
        fh.write("3,9.9,9.9,9.9,9.9,,,,0.001,1.0\n")
    part.autoencoder.steps = 4
    train_autoencoder(part, resume=True)
    # the log has one row per step, as the uninterrupted run's, with the same losses
    part_rows = list(csv.DictReader(part_log.open()))
    assert [r["step"] for r in part_rows] == [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["l1"] for r in part_rows] == [r["l1"] for r in rows]
    a, b = (
        _ckpt(full.run_dir / "autoencoder" / "checkpoint.pt"),
        _ckpt(part.run_dir / "autoencoder" / "checkpoint.pt"),
    )
    assert a["step"] == b["step"] == 4
    assert _states_equal(a["model"], b["model"]) and _states_equal(a["disc"], b["disc"])
    assert not _states_equal(a["disc"], PatchDiscriminator(3, 8, 2).state_dict())  # it did learn


def test_a_run_continues_an_earlier_runs_discriminator(tmp_path: Path, dataset: Path) -> None:  # noqa: F811
    earlier = _config(tmp_path, dataset, "earlier", ae_steps=4, diff_steps=4)
    train_autoencoder(earlier)
    earlier_ckpt = earlier.run_dir / "autoencoder" / "checkpoint.pt"
    later = _config(tmp_path, dataset, "later", ae_steps=0, diff_steps=4)
    later.autoencoder.disc_pretrained = str(earlier_ckpt)
    train_autoencoder(later)
    a, b = _ckpt(earlier_ckpt), _ckpt(later.run_dir / "autoencoder" / "checkpoint.pt")
    assert _states_equal(a["disc"], b["disc"])
    assert a["disc_optimizer"]["state"][0]["step"] == b["disc_optimizer"]["state"][0]["step"] == 2

    plain = _config(tmp_path, dataset, "plain", ae_steps=0, diff_steps=4)
    plain.autoencoder.disc_weight = 0.0
    train_autoencoder(plain)  # a run without a discriminator: nothing to continue from
    bad = _config(tmp_path, dataset, "bad", ae_steps=0, diff_steps=4)
    bad.autoencoder.disc_pretrained = str(plain.run_dir / "autoencoder" / "checkpoint.pt")
    with pytest.raises(ConfigError, match="holds no discriminator"):
        train_autoencoder(bad)
    bad.autoencoder.disc_pretrained = str(earlier_ckpt)
    bad.autoencoder.disc_channels = 16
    with pytest.raises(ConfigError, match="disc_channels"):
        train_autoencoder(bad)
    bad.autoencoder.disc_pretrained = str(tmp_path / "missing.pt")
    with pytest.raises(InputNotFoundError, match="does not exist"):
        train_autoencoder(bad)


def test_during_the_discriminator_warmup_only_the_discriminator_learns(tmp_path: Path, dataset: Path) -> None:  # noqa: F811
    plain = _config(tmp_path, dataset, "plain", ae_steps=4, diff_steps=4)
    plain.autoencoder.disc_weight = 0.0
    train_autoencoder(plain)
    warm = _config(tmp_path, dataset, "warm", ae_steps=4, diff_steps=4)
    warm.autoencoder.disc_warmup = 2  # disc_start 2 + 2: the decoder never gets the adversarial term here
    warm.autoencoder.disc_highpass = True
    train_autoencoder(warm)
    a, b = (
        _ckpt(plain.run_dir / "autoencoder" / "checkpoint.pt"),
        _ckpt(warm.run_dir / "autoencoder" / "checkpoint.pt"),
    )
    assert _states_equal(a["model"], b["model"])  # the autoencoder trained as if there were no discriminator
    assert not _states_equal(b["disc"], PatchDiscriminator(3, 8, 2, highpass=True).state_dict())  # D learned
    rows = list(csv.DictReader((warm.run_dir / "autoencoder" / "log.csv").open()))
    assert [(r["d_loss"] != "", r["g_loss"] != "") for r in rows] == [(False, False)] * 2 + [
        (True, False)
    ] * 2


def test_highpass_discriminator_judges_pixel_detail() -> None:
    torch.manual_seed(0)
    disc = PatchDiscriminator(3, 8, 2, highpass=True)
    assert disc.net[0].in_channels == 6
    flat = torch.full((1, 3, 32, 32), 0.3)
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 0.2 - 0.1).expand(1, 3, 32, 32)
    assert torch.allclose(high_pass(flat), torch.zeros_like(flat), atol=1e-6)  # no detail in a flat image
    assert high_pass(flat + checker).abs().mean() > 0.08  # zero-mean pixel detail passes
    with torch.no_grad():
        disc.net[0].weight[:, :3] = 0  # blind to the image itself: only its high-pass is left
        assert not torch.allclose(disc(flat + checker), disc(flat))


def test_lowpass_l1_counts_colour_and_shading_not_texture() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 0.6 - 0.3  # zero mean per block
    assert lowpass_l1(x + checker, x, 8).item() < 1e-6
    assert lowpass_l1(x + 0.1, x, 8).item() == pytest.approx(0.1, abs=1e-5)  # a colour cast counts in full
    ramp = torch.linspace(-0.2, 0.2, 32).repeat(32, 1)  # shading across blocks counts, within them not
    assert (
        0.09 < lowpass_l1(x + ramp, x, 8).item() < 0.11
    )  # the block means of |ramp|: 0.15, 0.05, 0.05, 0.15


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_lowpass_term_enters_the_autoencoder_loss(tmp_path: Path, dataset: Path, weight: float) -> None:  # noqa: F811
    path = write_config(tmp_path, dataset)
    path.write_text(
        path.read_text().replace(
            "[autoencoder]\n", f"[autoencoder]\nlowpass_weight = {weight}\nlowpass_block = 4\n"
        )
    )
    cfg = load_config(path)
    train_autoencoder(cfg)
    rows = list(csv.DictReader((cfg.run_dir / "autoencoder" / "log.csv").open()))
    # without the GAN, loss = l1 + l2_weight * mse + reg + lowpass_weight * lowpass_l1
    extra = [float(r["loss"]) - float(r["l1"]) - float(r["mse"]) - float(r["reg"]) for r in rows]
    assert len(rows) == 4
    assert all(e > 1e-3 for e in extra) if weight else all(abs(e) < 1e-4 for e in extra)


def test_diffusion_recipe_trains_and_resumes_to_the_same_state(tmp_path: Path, dataset: Path) -> None:  # noqa: F811
    full = _config(tmp_path, dataset, "full", ae_steps=2, diff_steps=4)
    train_autoencoder(full)
    train_diffusion(full)
    assert (full.run_dir / "diffusion" / "latents.safetensors").is_file()
    rows = list(csv.DictReader((full.run_dir / "diffusion" / "log.csv").open()))
    assert len(rows) == 4 and all(math.isfinite(float(r["loss"])) for r in rows)

    part = _config(tmp_path, dataset, "part", ae_steps=2, diff_steps=2)
    train_autoencoder(part)
    train_diffusion(part)
    part.diffusion.steps = 4
    train_diffusion(part, resume=True)  # reuses the saved latent cache
    a, b = (
        _ckpt(full.run_dir / "diffusion" / "checkpoint.pt"),
        _ckpt(part.run_dir / "diffusion" / "checkpoint.pt"),
    )
    assert _states_equal(a["unet"], b["unet"]) and _states_equal(a["map_encoder"], b["map_encoder"])
    assert all(
        torch.equal(x, y) for x, y in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"], strict=True)
    )


def _loss_inputs(prediction_type: str = "epsilon"):
    torch.manual_seed(0)
    model = GeodiffModel(ModelConfig(**{**TINY, "prediction_type": prediction_type}))
    sched = model.noise_scheduler()
    latents = torch.randn(6, 4, 8, 8)
    cmap = torch.randint(0, 5, (6, 32, 32))
    return model, sched, latents, cmap


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weighting_matches_its_definition(prediction_type: str) -> None:
    model, sched, latents, cmap = _loss_inputs(prediction_type)
    gamma = 5.0
    with torch.no_grad():
        got = diffusion_loss(model, latents, cmap, sched, torch.Generator().manual_seed(3), snr_gamma=gamma)
        # replay the loss's draws from the same generator and weight each sample by hand
        g = torch.Generator().manual_seed(3)
        noise = randn_tensor(latents.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (6,), generator=g)
        pred = model.predict_noise(sched.add_noise(latents, noise, t), t, model.map_encoder(cmap))
        v = prediction_type == "v_prediction"
        target = sched.get_velocity(latents, noise, t) if v else noise
        snr = compute_snr(sched, t)
        w = torch.minimum(snr, torch.full_like(snr, gamma)) / (snr + 1 if v else snr)
        want = ((pred - target).pow(2).mean(dim=(1, 2, 3)) * w).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    # gamma = 0 is the plain loss, which differs
    with torch.no_grad():
        plain = diffusion_loss(model, latents, cmap, sched, torch.Generator().manual_seed(3))
    assert plain.item() == pytest.approx(((pred - target).pow(2)).mean().item(), rel=1e-5)
    assert plain.item() != pytest.approx(got.item(), rel=1e-3)


def test_cond_drop_one_sample_sees_the_null_map() -> None:
    model, sched, latents, cmap = _loss_inputs()
    seen: list[torch.Tensor] = []
    encoder = model.map_encoder
    hook = encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        with torch.no_grad():
            diffusion_loss(model, latents, cmap, sched, torch.Generator().manual_seed(0), cond_drop=0.5)
    finally:
        hook.remove()
    maps = seen[0]
    dropped = (maps == 255).flatten(1).all(1)
    assert 0 < int(dropped.sum()) < 6  # some maps nulled, the others untouched
    assert torch.equal(maps[~dropped], cmap[~dropped])


def test_latent_cache_matches_encoding_on_the_fly(dataset: Path) -> None:  # noqa: F811
    torch.manual_seed(0)
    model = GeodiffModel(ModelConfig(**{**TINY, "tile_size": 64})).eval()
    ds = TileDataset(dataset, "train", crop=None, augment=False)
    cache = LatentCache.build(model, ds, batch_tiles=1)
    assert cache.mean.shape == (len(ds), NUM_DIHEDRAL, 4, 16, 16)
    for i in range(len(ds)):
        image = ds[i]["image"]
        for k in range(NUM_DIHEDRAL):
            with torch.no_grad():
                mean, std = model.encode_posterior(dihedral(image, k)[None])
            torch.testing.assert_close(cache.mean[i, k].float(), mean[0], atol=2e-3, rtol=2e-3)
            torch.testing.assert_close(cache.std[i, k].float(), std[0], atol=2e-3, rtol=2e-3)
            # a crop in latent space carries the pixels of the same place in the class map
            lat_mean, _, cmap = cache.crop(i, k, 3, 5, 8)
            assert torch.equal(lat_mean, cache.mean[i, k, :, 3:11, 5:13])
            want = dihedral(torch.from_numpy(ds.masks[i]), k)[12:44, 20:52]
            assert torch.equal(cmap, want)
    latents, maps = cache.sample(3, 32, torch.Generator().manual_seed(0))
    assert latents.shape == (3, 4, 8, 8) and maps.shape == (3, 32, 32)
    assert set(np.unique(maps.numpy())) <= set(np.unique(ds.masks))


def test_dihedral_gives_eight_distinct_symmetries() -> None:
    x = torch.arange(9.0).view(3, 3)
    views = {tuple(dihedral(x, k).flatten().tolist()) for k in range(NUM_DIHEDRAL)}
    assert len(views) == 8
    with pytest.raises(ValueError):
        dihedral(x, 8)


def test_gan_losses() -> None:
    real, fake = torch.full((2, 1, 3, 3), 2.0), torch.full((2, 1, 3, 3), -2.0)
    assert hinge_d_loss(real, fake).item() == 0.0  # both beyond the margins
    assert hinge_d_loss(-real, -fake).item() == pytest.approx(3.0)
    w = torch.nn.Parameter(torch.ones(3))
    assert adaptive_weight((w * 2).sum(), (w * 0.5).sum(), w).item() == pytest.approx(4.0, rel=1e-3)


def test_decoder_only_fine_tune_keeps_the_latent_space(tmp_path: Path, dataset: Path) -> None:  # noqa: F811
    base = _config(tmp_path, dataset, "base", ae_steps=2, diff_steps=2)
    vae_dir = train_autoencoder(base)
    tune = _config(tmp_path, dataset, "tune", ae_steps=3, diff_steps=2)
    tune.autoencoder.pretrained = str(vae_dir)
    tune.autoencoder.stage = "decoder"
    tune.autoencoder.disc_start = 0
    tuned_dir = train_autoencoder(tune)
    from geodiff.model import load_autoencoder

    before, after = load_autoencoder(vae_dir), load_autoencoder(tuned_dir)
    assert after.config.scaling_factor == before.config.scaling_factor
    enc_b, enc_a = before.encoder.state_dict(), after.encoder.state_dict()
    assert all(torch.equal(enc_b[k], enc_a[k]) for k in enc_b)  # the encoder (so the latents) did not move
    dec_b, dec_a = before.decoder.state_dict(), after.decoder.state_dict()
    assert any(not torch.equal(dec_b[k], dec_a[k]) for k in dec_b)  # the decoder did


def test_max_minutes_is_the_runs_total_across_resumes(tmp_path: Path, dataset: Path) -> None:  # noqa: F811
    import json

    cfg = _config(tmp_path, dataset, "budget", ae_steps=2, diff_steps=2)
    train_autoencoder(cfg)
    train_diffusion(cfg)
    # pretend both stages already trained for an hour: a resume with a 30 min budget trains no further step
    # (rerunning a whole recipe leaves finished stages as they are)
    ae_ckpt = cfg.run_dir / "autoencoder" / "checkpoint.pt"
    state = _ckpt(ae_ckpt)
    assert state["seconds"] > 0
    torch.save({**state, "seconds": 3600.0}, ae_ckpt)
    time_file = cfg.run_dir / "diffusion" / "time.json"
    time_file.write_text(json.dumps({**json.loads(time_file.read_text()), "seconds": 3600.0}))
    cfg.autoencoder.steps = cfg.diffusion.steps = 10
    cfg.autoencoder.max_minutes = cfg.diffusion.max_minutes = 30
    train_autoencoder(cfg, resume=True)
    train_diffusion(cfg, resume=True)
    assert _ckpt(ae_ckpt)["step"] == 2 and _ckpt(ae_ckpt)["seconds"] >= 3600
    assert _ckpt(cfg.run_dir / "diffusion" / "checkpoint.pt")["step"] == 2
    # a budget not yet spent still trains on: the total counts across resumes
    cfg.autoencoder.max_minutes = cfg.diffusion.max_minutes = 120
    cfg.autoencoder.steps = cfg.diffusion.steps = 3
    train_autoencoder(cfg, resume=True)
    train_diffusion(cfg, resume=True)
    assert _ckpt(ae_ckpt)["step"] == 3 and _ckpt(cfg.run_dir / "diffusion" / "checkpoint.pt")["step"] == 3


def test_cpu_budget_clock_counts_the_processs_cpu_not_wall_time(
    tmp_path: Path,
    dataset: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    import geodiff.train.loops as loops

    # a CPU clock that advances 10 min a reading: a 15 min CPU budget stops the run after a step or two, while
    # the same budget in wall time (seconds here) lets the same run train all its steps
    ticks = iter(range(0, 10**6, 600))
    monkeypatch.setattr(loops.time, "process_time", lambda: float(next(ticks)))
    for clock in ("cpu", "wall"):
        cfg = _config(tmp_path, dataset, f"{clock}_budget", ae_steps=1, diff_steps=6)
        cfg.diffusion.max_minutes = 15
        cfg.run.budget_clock = clock
        train_autoencoder(cfg)
        train_diffusion(cfg)
        state = json.loads((cfg.run_dir / "diffusion" / "time.json").read_text())
        if clock == "cpu":
            assert state["step"] < 6 and state["seconds"] >= 15 * 60
            cfg.run.budget_clock = (
                "wall"  # CPU seconds and wall seconds do not add up: a resume must keep the clock
            )
            for stage in (train_autoencoder, train_diffusion):
                with pytest.raises(ConfigError, match="counted its budget in cpu time.*budget_clock = 'cpu'"):
                    stage(cfg, resume=True)
        else:
            assert state["step"] == 6 and state["seconds"] < 15 * 60


def _finetune_config(
    tmp_path: Path, data: Path, pretrained: Path, steps: int, model_section: str = ""
) -> Path:
    """A diffusion-only config that trains on from ``pretrained`` (no [model] section unless given)."""
    path = tmp_path / f"finetune{steps}.toml"
    path.write_text(
        f'[data]\npath = "{data}"\ncrop = 32\n{model_section}'
        f'[diffusion]\nsteps = {steps}\nbatch_size = 2\npretrained = "{pretrained}"\n'
        f'[run]\ndir = "{tmp_path / f"ft{steps}"}"\nthreads = 1\nlog_every = 1\ncheckpoint_every = 2\n'
    )
    return path


def test_diffusion_trains_on_from_a_pretrained_model(tmp_path: Path, dataset: Path) -> None:  # noqa: F811
    from geodiff.errors import ConfigError

    from tiny_model import make_tiny_model

    base = make_tiny_model(tmp_path / "base", seed=3, resolution_m=1.0, guidance_scale=1.5)
    ref = GeodiffModel.from_pretrained(base)

    # 0 steps: the exported model is the pretrained one, weights and settings, with no autoencoder stage run
    out0 = train_diffusion(load_config(_finetune_config(tmp_path, dataset, base, steps=0)))
    same = GeodiffModel.from_pretrained(out0)
    assert not (tmp_path / "ft0" / "autoencoder").exists()
    assert same.config == ref.config
    for part in ("unet", "map_encoder", "vae"):
        assert _states_equal(getattr(same, part).state_dict(), getattr(ref, part).state_dict()), part

    # a few steps: U-Net trained on, autoencoder untouched, the card says where it started
    out2 = train_diffusion(load_config(_finetune_config(tmp_path, dataset, base, steps=2)))
    tuned = GeodiffModel.from_pretrained(out2)
    assert _states_equal(tuned.vae.state_dict(), ref.vae.state_dict())
    assert not _states_equal(tuned.unet.state_dict(), ref.unet.state_dict())
    assert f"started from | `{base}`" in (out2 / "README.md").read_text()

    # resuming with another starting model would pair a U-Net with another autoencoder's latents
    cfg = load_config(
        _finetune_config(tmp_path, dataset, make_tiny_model(tmp_path / "b2", resolution_m=1.0), 2)
    )
    cfg.run.dir = str(tmp_path / "ft2")
    with pytest.raises(ConfigError, match="was trained with diffusion.pretrained"):
        train_diffusion(cfg, resume=True)
    cfg.diffusion.pretrained, cfg.diffusion.steps = str(base), 3
    train_diffusion(cfg, resume=True)  # the same one resumes

    with pytest.raises(ConfigError, match="remove the \\[model\\] section"):
        load_config(_finetune_config(tmp_path, dataset, base, 2, model_section="[model]\ntile_size = 64\n"))
    other = make_tiny_model(tmp_path / "at2m", resolution_m=2.0)  # the model's resolution, not a default
    with pytest.raises(ConfigError, match="dataset resolution 1.0 m/px differs"):
        train_diffusion(load_config(_finetune_config(tmp_path, dataset, other, steps=1)))
