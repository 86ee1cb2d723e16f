"""Training: losses go down, configs are validated, runs resume and end in a loadable model folder."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from geodiff.cli import main
from geodiff.errors import ConfigError
from geodiff.model import GeodiffModel, ModelConfig, build_autoencoder
from geodiff.train.config import load_config, parse_config
from geodiff.train.loops import diffusion_loss, train_diffusion

from tiny_model import TINY, write_config

# one thread: the 2 shared cores are usually busy, and OpenMP threads spin badly under contention
torch.set_num_threads(1)


def test_autoencoder_loss_decreases() -> None:
    torch.manual_seed(0)
    vae = build_autoencoder(ModelConfig(**TINY))
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    # smooth images, like aerial photos at this scale (pure noise is incompressible)
    x = F.interpolate(torch.rand(2, 3, 4, 4) * 2 - 1, size=32, mode="bilinear")
    losses = []
    for _ in range(12):
        y = vae(x, sample_posterior=False).sample
        loss = F.l1_loss(y, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("variant", ["concat_encoded_xattn", "concat_down"])
def test_diffusion_loss_decreases(variant: str) -> None:
    torch.manual_seed(0)
    model = GeodiffModel(ModelConfig(**{**TINY, "conditioning": variant}))
    params = list(model.unet.parameters()) + list(model.map_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3)
    sched = model.noise_scheduler()
    latents = torch.randn(4, 4, 8, 8)
    cmap = torch.randint(0, 5, (4, 32, 32))

    def loss_at(seed: int) -> torch.Tensor:
        return diffusion_loss(model, latents, cmap, sched, generator=torch.Generator().manual_seed(seed))

    with torch.no_grad():
        before = sum(loss_at(s).item() for s in range(3))
    for i in range(15):
        loss = loss_at(i % 3)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = sum(loss_at(s).item() for s in range(3))
    assert after < 0.8 * before


def test_end_to_end_resume_and_cli(tmp_path: Path, dataset: Path) -> None:
    cfg_path = write_config(tmp_path, dataset)
    assert main(["train", "autoencoder", "--config", str(cfg_path), "--progress", "none"]) == 0
    assert (tmp_path / "run" / "autoencoder" / "vae" / "config.json").exists()
    assert "psnr_db" in (tmp_path / "run" / "autoencoder" / "metrics.json").read_text()
    # a second start without --resume is refused: it would overwrite the run
    assert (
        main(["train", "autoencoder", "--config", str(cfg_path), "--progress", "none"])
        == ConfigError.exit_code
    )
    cfg = load_config(cfg_path)
    out = train_diffusion(cfg)
    model = GeodiffModel.from_pretrained(out)
    assert (out / "README.md").exists() and "CC0" in (out / "README.md").read_text()
    record = json.loads((out / "training.json").read_text())  # the card's source, kept with the model
    assert record["step"] == 4 and record["config"] == cfg.to_dict()
    rows = list(csv.DictReader((tmp_path / "run" / "diffusion" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    # resume continues from the checkpoint up to the new step count
    cfg.diffusion.steps = 6
    train_diffusion(cfg, resume=True)
    rows = list(csv.DictReader((tmp_path / "run" / "diffusion" / "log.csv").open()))
    assert [int(r["step"]) for r in rows][-2:] == [5, 6]
    # each call's end point is kept as a model folder of its own; the resume did not replace step 4's
    exports = tmp_path / "run" / "diffusion" / "exports"
    assert sorted(p.name for p in exports.iterdir()) == ["step-0000004", "step-0000006"]
    at4 = GeodiffModel.from_pretrained(exports / "step-0000004")
    at6 = GeodiffModel.from_pretrained(exports / "step-0000006")
    final = GeodiffModel.from_pretrained(out)
    for (name, b), c in zip(at6.unet.state_dict().items(), final.unet.state_dict().values(), strict=True):
        assert torch.equal(b, c), name
    assert any(
        not torch.equal(a, b) for a, b in zip(at4.unet.parameters(), at6.unet.parameters(), strict=True)
    )
    ae_exports = tmp_path / "run" / "autoencoder" / "exports"
    assert (ae_exports / "step-0000004" / "vae" / "config.json").exists()
    assert (ae_exports / "step-0000004" / "metrics.json").exists()
    assert model.config.resolution_m == cfg.model.resolution_m
    # a rerun of a run whose time budget is spent trains no further step (scripts rerun whole recipes)
    cfg.diffusion.steps, cfg.diffusion.max_minutes = 100, 1e-6
    train_diffusion(cfg, resume=True)
    rows = list(csv.DictReader((tmp_path / "run" / "diffusion" / "log.csv").open()))
    assert int(rows[-1]["step"]) == 6
    again = GeodiffModel.from_pretrained(out)
    for (name, b), c in zip(final.unet.state_dict().items(), again.unet.state_dict().values(), strict=True):
        assert torch.equal(b, c), name


def test_diffusion_needs_an_autoencoder(tmp_path: Path, dataset: Path) -> None:
    cfg = load_config(write_config(tmp_path, dataset))
    with pytest.raises(Exception, match="train autoencoder"):
        train_diffusion(cfg)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("[optimizer]\nlr = 1\n", "unknown section"),
        ("", None),
    ],
)
def test_config_sections(tmp_path: Path, dataset: Path, extra: str, match: str | None) -> None:
    path = write_config(tmp_path, dataset, extra)
    if match is None:
        assert load_config(path).model.tile_size == 64
    else:
        with pytest.raises(ConfigError, match=match):
            load_config(path)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"data": {"path": "x"}, "diffusion": {"stepz": 3}}, "unknown key.*stepz"),
        ({"data": {"path": "x"}, "diffusion": {"steps": "many"}}, "diffusion.steps.*expected a int"),
        ({"data": {"path": "x"}, "diffusion": {"lr": -1.0}}, "negative"),
        ({"data": {"path": "x"}, "model": {"conditioning": "magic"}}, "conditioning"),
        ({"data": {"path": "x"}, "model": {"unet_blocks": 3}}, "unknown key"),
        ({"data": {"path": "x"}, "run": {"device": "tpu"}}, "run.device"),
        (
            {"data": {"path": "x"}, "run": {"budget_clock": "sundial"}},
            "run.budget_clock must be .wall. or .cpu.",
        ),
        ({"data": {}}, "data.path is required"),
        ({"data": {"path": "x", "crop": 30}}, "crop"),
        (
            {"data": {"path": "x"}, "autoencoder": {"lowpass_weight": 1.0, "lowpass_block": 1}},
            "lowpass_block must be at least 2",
        ),
        (
            {"data": {"path": "x", "crop": 32}, "autoencoder": {"lowpass_weight": 1.0, "lowpass_block": 12}},
            "divide the autoencoder crop \\(32\\), got 12",
        ),
        (
            {"data": {"path": "x"}, "autoencoder": {"disc_pretrained": "run/autoencoder/checkpoint.pt"}},
            "disc_pretrained needs disc_weight > 0",
        ),
        (
            {"data": {"path": "x"}, "autoencoder": {"disc_highpass": True}},
            "disc_warmup and disc_highpass need disc_weight > 0",
        ),
        (
            {"data": {"path": "x"}, "autoencoder": {"disc_weight": 1.0, "disc_warmup": -1}},
            "disc_warmup = -1: must not be negative",
        ),
    ],
)
def test_bad_configs(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(data, "test.toml")


def test_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[data\npath = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    for path in sorted([*root.glob("configs/*.toml"), *root.glob("experiments/configs/*.toml")]):
        load_config(path)


def test_finalize_card_only_rewrites_the_card_from_recorded_metrics(tmp_path: Path, dataset: Path) -> None:
    from tiny_model import build_tiny_model

    folder = tmp_path / "model"
    build_tiny_model().save_pretrained(folder)
    (folder / "card_notes.md").write_text("## Hand-written\n\nEdited after the measurement.\n")
    cmd = [
        sys.executable,
        "-c",
        "import sys; from geodiff.cli import main; sys.exit(main(sys.argv[1:]))",
        "model",
        "finalize",
        str(folder),
        str(dataset),
        "--card-only",
        "--run-dir",
        str(tmp_path / "no-run"),
    ]
    missing = subprocess.run(cmd, capture_output=True, text=True)
    assert missing.returncode != 0 and "run without --card-only" in missing.stderr
    assert not (folder / "README.md").exists()
    recorded = {
        "autoencoder PSNR (val, dB)": 21.5,
        "autoencoder SSIM (val)": 0.61,
        "autoencoder sharpness (val; 1.0 = as sharp as the real tiles)": 0.42,
        "validation tiles": 3,
        "command": "geodiff model finalize ...",
    }
    (folder / "metrics.json").write_text(json.dumps(recorded))
    no_run = subprocess.run(cmd, capture_output=True, text=True)  # the card's training rows come from the run
    assert no_run.returncode != 0 and "--run-dir" in no_run.stderr
    no_record = subprocess.run(cmd[:-2], capture_output=True, text=True)  # ... or the model's own record
    assert no_record.returncode != 0 and "training.json is missing" in no_record.stderr
    assert not (folder / "README.md").exists()
    run = tmp_path / "no-run" / "diffusion"
    run.mkdir(parents=True)
    (run / "time.json").write_text(json.dumps({"seconds": 5400.0, "step": 777}))
    torch.save({"config": load_config(write_config(tmp_path, dataset)).to_dict()}, run / "checkpoint.pt")
    subprocess.run(cmd, check=True, capture_output=True)
    card = (folder / "README.md").read_text()
    assert "777 diffusion steps, 90 min" in card
    assert "Edited after the measurement." in card
    assert "21.5 dB / 0.61 / 0.42 on 3 held-out tiles" in card
    assert json.loads((folder / "metrics.json").read_text()) == recorded  # nothing measured again
    # the record travels with the model: once the run's folder is gone, the card is rewritten from it
    assert json.loads((folder / "training.json").read_text())["step"] == 777
    shutil.rmtree(tmp_path / "no-run")
    (folder / "README.md").unlink()
    subprocess.run(cmd[:-2], check=True, capture_output=True)
    assert (folder / "README.md").read_text() == card
