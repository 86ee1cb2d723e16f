"""Training loops for the autoencoder and the map-conditioned diffusion model.

Both are resumable (``checkpoint.pt`` in the run folder holds weights, optimizer, EMA, step and RNG states),
log one CSV row per ``log_every`` steps, honour a wall-clock budget (``max_minutes``) by saving and stopping,
and use bf16 autocast on CUDA.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel

from geodiff.errors import ConfigError, DataError, ModelError
from geodiff.model import GeodiffModel, build_autoencoder, load_autoencoder
from geodiff.model.conditioning import ignore_fraction
from geodiff.progress import ProgressCallback, report
from geodiff.train.config import TrainConfig
from geodiff.train.dataset import TileDataset, check_num_classes

AE_DIR = "autoencoder"
DIFF_DIR = "diffusion"


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            'run.device asks for cuda but no CUDA GPU is available; use device = "auto" or "cpu"'
        )
    return torch.device(name)


def _setup(cfg: TrainConfig) -> torch.device:
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    np.random.seed(cfg.run.seed)
    return pick_device(cfg.run.device)


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda" and cfg.run.mixed_precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _batches(
    ds: TileDataset, batch_size: int, num_workers: int, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled batches (a new epoch starts when one ends)."""
    from torch.utils.data import DataLoader

    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        ds,
        batch_size=min(batch_size, len(ds)),
        shuffle=True,
        drop_last=True,  # type: ignore[arg-type]
        num_workers=num_workers,
        generator=g,
        persistent_workers=num_workers > 0,
    )
    while True:
        yield from loader


class CsvLog:
    """Appends rows to ``log.csv`` (header written once, so a resumed run continues the same file)."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns = path, columns
        if not path.exists():
            with path.open("w", newline="") as fh:
                csv.writer(fh).writerow(columns)

    def write(self, **row: Any) -> None:
        with self.path.open("a", newline="") as fh:
            csv.writer(fh).writerow([row.get(c, "") for c in self.columns])


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])


def _lr_lambda(warmup: int) -> Any:
    return lambda step: min(1.0, (step + 1) / max(1, warmup))


# ----------------------------------------------------------------------------------------------------------
# autoencoder
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_autoencoder(
    vae: Any, ds: TileDataset, device: torch.device, max_tiles: int = 64
) -> dict[str, float]:
    """Reconstruction PSNR (dB) and SSIM on ``ds`` (images in [0, 1]), at most ``max_tiles`` tiles."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    vae.eval()
    psnr, ssim, n = 0.0, 0.0, 0
    idx = np.linspace(0, len(ds) - 1, min(max_tiles, len(ds))).round().astype(int)
    for i in idx:
        x = ds[int(i)]["image"].unsqueeze(0).to(device)
        enc = vae.encode(x)
        lat = enc.latents if hasattr(enc, "latents") else enc.latent_dist.mode()
        y = vae.decode(lat).sample.clamp(-1, 1)
        a, b = (y + 1) / 2, (x + 1) / 2
        psnr += float(peak_signal_noise_ratio(a, b, data_range=1.0))
        ssim += float(structural_similarity_index_measure(a, b, data_range=1.0))
        n += 1
    return {"psnr_db": round(psnr / n, 3), "ssim": round(ssim / n, 4), "tiles": n}


@torch.no_grad()
def latent_scaling_factor(vae: Any, ds: TileDataset, device: torch.device, n: int = 32) -> float:
    """1 / std of the latents, so diffusion sees unit-variance latents (as in Stable Diffusion)."""
    lats = []
    for i in range(min(n, len(ds))):
        enc = vae.encode(ds[i]["image"].unsqueeze(0).to(device))
        lats.append(enc.latents if hasattr(enc, "latents") else enc.latent_dist.mode())
    return float(1.0 / torch.cat(lats).float().std().clamp_min(1e-6))


def _run_folder(cfg: TrainConfig, name: str, resume: bool) -> tuple[Path, Path]:
    """``<run.dir>/<name>`` and its checkpoint path; an existing checkpoint needs ``resume``."""
    out = cfg.run_dir / name
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists() and not resume:
        raise ConfigError(
            f"{ckpt_path} exists: pass --resume to continue that run, or choose another run.dir"
        )
    return out, ckpt_path


def train_autoencoder(
    cfg: TrainConfig, resume: bool = False, progress: ProgressCallback | None = None
) -> Path:
    """Train (or fine-tune) the autoencoder; returns the folder of the saved diffusers autoencoder.

    Writes ``<run.dir>/autoencoder/{checkpoint.pt, log.csv, vae/, metrics.json}``.
    """
    device = _setup(cfg)
    sec = cfg.autoencoder
    out, ckpt_path = _run_folder(cfg, AE_DIR, resume)
    train_ds = TileDataset(cfg.resolve(cfg.data.path), "train", crop=sec.crop or cfg.data.crop)
    check_num_classes(train_ds.manifest)
    try:
        val_ds = TileDataset(cfg.resolve(cfg.data.path), "val", crop=None, augment=False)
    except DataError:
        val_ds = TileDataset(cfg.resolve(cfg.data.path), "train", crop=None, augment=False)
    if sec.pretrained:
        vae = load_autoencoder(
            cfg.resolve(sec.pretrained) if Path(cfg.resolve(sec.pretrained)).exists() else sec.pretrained,
            subfolder=sec.pretrained_subfolder or None,
        )
    else:
        vae = build_autoencoder(cfg.model)
    vae.to(device).train()
    is_vq = vae.__class__.__name__ == "VQModel"
    opt = torch.optim.AdamW(vae.parameters(), lr=sec.lr, weight_decay=0.0)
    step = 0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        _set_rng_state(state["rng"])
    log = CsvLog(out / "log.csv", ["step", "loss", "l1", "mse", "reg", "lr", "elapsed_s"])
    batches = _batches(train_ds, sec.batch_size, cfg.data.num_workers, cfg.run.seed + step)
    start = time.monotonic()

    def checkpoint() -> None:
        _save_checkpoint(
            ckpt_path,
            {
                "model": vae.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "rng": _rng_state(),
                "config": cfg.to_dict(),
            },
        )

    while step < sec.steps:
        x = next(batches)["image"].to(device)
        with _autocast(cfg, device):
            if is_vq:
                enc = vae.encode(x).latents
                dec = vae.decode(enc)
                y, reg = (
                    dec.sample,
                    dec.commit_loss.mean() if dec.commit_loss is not None else x.new_zeros(()),
                )
            else:
                post = vae.encode(x).latent_dist
                y = vae.decode(post.sample()).sample
                reg = post.kl().mean() * sec.kl_weight
        l1 = F.l1_loss(y.float(), x)
        mse = F.mse_loss(y.float(), x)
        loss = l1 + sec.l2_weight * mse + reg.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        elapsed = time.monotonic() - start
        if step % cfg.run.log_every == 0 or step == sec.steps:
            log.write(
                step=step,
                loss=f"{loss.item():.5f}",
                l1=f"{l1.item():.5f}",
                mse=f"{mse.item():.5f}",
                reg=f"{reg.item():.6f}",
                lr=sec.lr,
                elapsed_s=round(elapsed, 1),
            )
        report(progress, step / sec.steps, f"autoencoder step {step}/{sec.steps} loss {loss.item():.4f}")
        if step % cfg.run.checkpoint_every == 0:
            checkpoint()
        if sec.max_minutes and elapsed > sec.max_minutes * 60:
            break
    checkpoint()
    vae.eval()
    # record the latent scale in the autoencoder's own config, where diffusers keeps it
    vae.register_to_config(scaling_factor=latent_scaling_factor(vae, train_ds, device))
    metrics = evaluate_autoencoder(vae, val_ds, device, sec.eval_tiles)
    metrics.update(
        step=step,
        train_minutes=round((time.monotonic() - start) / 60, 2),
        scaling_factor=vae.config.scaling_factor,
        split="val",
    )
    vae.to("cpu").save_pretrained(out / "vae", safe_serialization=True, max_shard_size="15MB")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    report(progress, 1.0, f"autoencoder saved: PSNR {metrics['psnr_db']} dB, SSIM {metrics['ssim']}")
    return out / "vae"


# ----------------------------------------------------------------------------------------------------------
# diffusion
# ----------------------------------------------------------------------------------------------------------


def _trainable(model: GeodiffModel) -> list[torch.nn.Parameter]:
    return [p for m in (model.unet, model.map_encoder) for p in m.parameters()]


def diffusion_loss(
    model: GeodiffModel, latents: torch.Tensor, class_map: torch.Tensor, scheduler: Any, generator: Any = None
) -> torch.Tensor:
    """The denoising loss (MSE on epsilon or v), down-weighted where the map is unlabeled (255)."""
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    t = torch.randint(
        0, scheduler.config.num_train_timesteps, (b,), device=latents.device, generator=generator
    )
    noisy = scheduler.add_noise(latents, noise, t)
    cond = model.map_encoder(class_map)
    pred = model.predict_noise(noisy, t, cond)
    target = (
        noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, t)
    )
    weight = 1.0 - ignore_fraction(class_map, model.latent_factor)
    err = (pred.float() - target.float()).pow(2) * weight
    return err.sum() / (weight.sum() * latents.shape[1]).clamp_min(1.0)


def _ae_folder(cfg: TrainConfig) -> Path:
    folder = cfg.run_dir / AE_DIR / "vae"
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"no trained autoencoder at {folder}: run `geodiff train autoencoder --config {cfg.source}` first "
            "(or set autoencoder.pretrained and steps = 0)"
        )
    return folder


def export_model(model: GeodiffModel, ema: EMAModel | None, output: Path, card: dict[str, Any]) -> None:
    """save_pretrained with the EMA weights (the live weights are restored afterwards) + model card."""
    from geodiff.train.card import write_model_card

    params = _trainable(model)
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    try:
        model.save_pretrained(output)
        write_model_card(output, model, card)
    finally:
        if ema is not None:
            ema.restore(params)


def train_diffusion(cfg: TrainConfig, resume: bool = False, progress: ProgressCallback | None = None) -> Path:
    """Train the U-Net and map encoder on latents of the trained autoencoder; returns the model folder."""
    device = _setup(cfg)
    sec = cfg.diffusion
    out, ckpt_path = _run_folder(cfg, DIFF_DIR, resume)
    ds = TileDataset(cfg.resolve(cfg.data.path), "train", crop=cfg.data.crop)
    check_num_classes(ds.manifest)
    if abs(ds.manifest["resolution_m"] - cfg.model.resolution_m) > 1e-6:
        raise ConfigError(
            f"dataset resolution {ds.manifest['resolution_m']} m/px differs from model.resolution_m "
            f"{cfg.model.resolution_m}; rebuild the dataset or change the config"
        )
    ae_dir = _ae_folder(cfg)
    vae = load_autoencoder(ae_dir)
    model = GeodiffModel(cfg.model, vae=vae)
    model.set_autoencoder(vae)
    model.to(device)
    model.vae.eval().requires_grad_(False)
    model.unet.train()
    model.map_encoder.train()
    params = _trainable(model)
    opt = torch.optim.AdamW(params, lr=sec.lr, weight_decay=sec.weight_decay)
    sched_lr = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(sec.warmup_steps))
    ema = EMAModel(params, decay=sec.ema_decay, use_ema_warmup=True, power=3 / 4)
    noise_sched = model.make_scheduler("ddpm")
    step = 0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.unet.load_state_dict(state["unet"])
        model.map_encoder.load_state_dict(state["map_encoder"])
        opt.load_state_dict(state["optimizer"])
        sched_lr.load_state_dict(state["lr_scheduler"])
        ema.load_state_dict(state["ema"])
        step = state["step"]
        _set_rng_state(state["rng"])
    ema.to(device)
    log = CsvLog(out / "log.csv", ["step", "loss", "loss_avg", "lr", "elapsed_s", "s_per_step"])
    batches = _batches(ds, sec.batch_size, cfg.data.num_workers, cfg.run.seed + step)
    prior = (
        json.loads((out / "time.json").read_text())["seconds"]
        if resume and (out / "time.json").exists()
        else 0.0
    )
    start = time.monotonic()
    avg = None
    ae_metrics = cfg.run_dir / AE_DIR / "metrics.json"
    card: dict[str, Any] = {
        "dataset": ds.manifest,
        "config": cfg.to_dict(),
        "autoencoder_metrics": json.loads(ae_metrics.read_text()) if ae_metrics.exists() else {},
    }

    def checkpoint() -> None:
        _save_checkpoint(
            ckpt_path,
            {
                "unet": model.unet.state_dict(),
                "map_encoder": model.map_encoder.state_dict(),
                "optimizer": opt.state_dict(),
                "lr_scheduler": sched_lr.state_dict(),
                "ema": ema.state_dict(),
                "step": step,
                "rng": _rng_state(),
                "config": cfg.to_dict(),
            },
        )
        (out / "time.json").write_text(
            json.dumps({"seconds": prior + time.monotonic() - start, "step": step})
        )

    def export() -> None:
        card.update(step=step, train_seconds=round(prior + time.monotonic() - start, 1))
        export_model(model, ema, cfg.output_dir, card)

    while step < sec.steps:
        batch = next(batches)
        x, cmap = batch["image"].to(device), batch["class_map"].to(device)
        with torch.no_grad():
            latents = model.encode_images(x, sample=True).float()
        with _autocast(cfg, device):
            loss = diffusion_loss(model, latents, cmap, noise_sched)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if sec.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, sec.grad_clip)
        opt.step()
        sched_lr.step()
        ema.step(params)
        step += 1
        value = loss.item()
        if not math.isfinite(value):
            raise ModelError(f"diffusion loss became {value} at step {step}; lower diffusion.lr and resume")
        avg = value if avg is None else 0.98 * avg + 0.02 * value
        elapsed = time.monotonic() - start
        if step % cfg.run.log_every == 0 or step == sec.steps:
            log.write(
                step=step,
                loss=f"{value:.5f}",
                loss_avg=f"{avg:.5f}",
                lr=f"{sched_lr.get_last_lr()[0]:.2e}",
                elapsed_s=round(prior + elapsed, 1),
                s_per_step=round(elapsed / max(1, step), 3),
            )
        report(progress, step / sec.steps, f"diffusion step {step}/{sec.steps} loss {avg:.4f}")
        if step % cfg.run.checkpoint_every == 0:
            checkpoint()
        early = step == cfg.run.log_every and not (cfg.output_dir / "config.json").exists()
        if early or (sec.export_every and step % sec.export_every == 0):
            export()  # the early export gives integrators a loadable folder within minutes
        if sec.max_minutes and elapsed > sec.max_minutes * 60:
            break
    checkpoint()
    export()
    report(progress, 1.0, f"model saved to {cfg.output_dir}")
    return cfg.output_dir
