"""Training loops for the autoencoder and the map-conditioned diffusion model.

Both are resumable (``checkpoint.pt`` in the run folder holds weights, optimizer, EMA, step and RNG states, and
loads with ``torch.load(weights_only=True)``, so a crafted file cannot run code), log one CSV row per
``log_every`` steps, honour a time budget (``max_minutes``, wall or CPU time: ``run.budget_clock``) by saving and
stopping, and use bf16 autocast on CUDA. Batches (tiles, crops, orientations, noise, timesteps) come from one
seeded CPU generator whose state is checkpointed, so a resumed run continues exactly as an uninterrupted one
would. What each call ends with is also kept as ``<part>/exports/step-NNNNNNN`` (part = ``autoencoder`` or
``diffusion``), since resuming rewrites the run's outputs and an earlier end point may be the better model.

The recipe for little compute (all optional in the TOML config; the defaults reproduce the plain recipe):
the autoencoder gets a PatchGAN hinge term with an adaptive weight (``autoencoder.disc_*``); the diffusion loss
gets Min-SNR-gamma weighting (``diffusion.snr_gamma``), latents encoded once per tile and orientation and
cropped in latent space (``diffusion.latent_cache``), and map dropout for classifier-free guidance
(``diffusion.cond_drop``).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel, compute_snr
from diffusers.utils.torch_utils import randn_tensor

from geodiff.classes import IGNORE
from geodiff.errors import ConfigError, DataError, InputNotFoundError, InvalidParameterError, ModelError
from geodiff.io import atomic_path
from geodiff.model import GeodiffModel, load_autoencoder
from geodiff.model.conditioning import ignore_fraction
from geodiff.progress import ProgressCallback, report
from geodiff.train.config import TrainConfig
from geodiff.train.dataset import TileDataset, check_num_classes
from geodiff.train.discriminator import Adversary
from geodiff.train.latents import LatentCache
from geodiff.train.stages import STAGES
from geodiff.train.surgery.detail import use_grown_autoencoder

AE_DIR = "autoencoder"
DIFF_DIR = "diffusion"


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def pick_device(name: str) -> torch.device:
    """``run.device`` -> a torch device (:func:`geodiff.models.resolve_device`, errors as config errors)."""
    from geodiff.models import resolve_device

    try:
        return torch.device(resolve_device(name))
    except InvalidParameterError as exc:
        raise ConfigError(f"run.device: {exc}") from exc


def _setup(cfg: TrainConfig) -> torch.device:
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    np.random.seed(cfg.run.seed)
    return pick_device(cfg.run.device)


def budget_clock(cfg: TrainConfig) -> Any:
    """The clock ``max_minutes`` counts (``run.budget_clock``): CPU time gives runs that share cores an equal
    budget, which wall time would not."""
    return time.process_time if cfg.run.budget_clock == "cpu" else time.monotonic


def prior_seconds(record: dict[str, Any] | None, cfg: TrainConfig, where: Path) -> float:
    """The seconds earlier invocations of a run trained (a checkpoint's or time.json's ``seconds``), refused
    when they were counted on another clock than ``run.budget_clock`` (wall and CPU seconds do not add up)."""
    if record is None:
        return 0.0
    made = record.get("clock", "wall")  # runs from before the setting counted wall time
    if made != cfg.run.budget_clock:
        raise ConfigError(
            f"{where} counted its budget in {made} time but run.budget_clock is {cfg.run.budget_clock!r}: "
            f"resume with budget_clock = {made!r}, or start a new run.dir"
        )
    return float(record.get("seconds", 0.0))


def resumed_seconds(time_file: Path, resume: bool, cfg: TrainConfig) -> float:
    """:func:`prior_seconds` of a part's ``time.json`` (0 for a fresh run)."""
    record = json.loads(time_file.read_text()) if resume and time_file.exists() else None
    return prior_seconds(record, cfg, time_file)


def time_record(cfg: TrainConfig, seconds: float, step: int) -> dict[str, Any]:
    """What time.json (and the autoencoder checkpoint) keeps of a run's budget."""
    return {"seconds": seconds, "step": step, "clock": cfg.run.budget_clock}


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda" and cfg.run.mixed_precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class CsvLog:
    """Appends rows to ``log.csv`` (header written once, so a resumed run continues the same file).

    ``from_step``: the step the run (re)starts at; rows logged after it by an interrupted invocation are
    dropped, because the resumed run logs those steps again.
    """

    def __init__(self, path: Path, columns: list[str], from_step: int = 0) -> None:
        self.path, self.columns = path, columns
        lines: list[list[str]] = []
        if path.exists():
            with path.open(newline="") as fh:
                lines = list(csv.reader(fh))
        if not lines:
            with path.open("w", newline="") as fh:
                csv.writer(fh).writerow(columns)
            return
        kept = [lines[0]] + [r for r in lines[1:] if r and int(r[0]) <= from_step]
        if len(kept) < len(lines):  # rewrite only to drop rows; atomically, so a kill here keeps the old log
            with atomic_path(path, overwrite=True) as tmp, tmp.open("w", newline="") as fh:
                csv.writer(fh).writerows(kept)

    def write(self, **row: Any) -> None:
        with self.path.open("a", newline="") as fh:
            csv.writer(fh).writerow([row.get(c, "") for c in self.columns])


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path, overwrite=True) as tmp:  # a full disk: one line, the old checkpoint kept
        torch.save(state, tmp)


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """A checkpoint written by this module; tensors and plain values only (``weights_only``), so a crafted
    file cannot execute code."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot resume from {path}: not a geodiff training checkpoint ({(str(exc).splitlines() or ['empty file'])[0]}); "
            "move it away and start a new run"
        ) from exc


def _rng_state(batches: torch.Generator) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "batches": batches.get_state()}


def _set_rng_state(state: dict[str, Any], batches: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    batches.set_state(state["batches"])


def _lr_lambda(warmup: int) -> Any:
    return lambda step: min(1.0, (step + 1) / max(1, warmup))


# ----------------------------------------------------------------------------------------------------------
# autoencoder
# ----------------------------------------------------------------------------------------------------------


def lowpass_l1(y: torch.Tensor, x: torch.Tensor, block: int) -> torch.Tensor:
    """L1 between ``block``-px block averages: colour and shading errors count, texture within a block
    does not (so it anchors colours without fighting the adversarial term's detail)."""
    return F.l1_loss(F.avg_pool2d(y, block), F.avg_pool2d(x, block))


def spread_tiles(ds: TileDataset, n: int) -> np.ndarray:
    """Indices of at most ``n`` tiles spread evenly over ``ds`` (the autoencoder's fixed evaluation set)."""
    return np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int)


@torch.no_grad()
def reconstruct(vae: Any, x: torch.Tensor) -> torch.Tensor:
    """Encode (posterior mode, or VQ latents) and decode ``x``; float, clamped to [-1, 1]."""
    enc = vae.encode(x)
    lat = enc.latents if hasattr(enc, "latents") else enc.latent_dist.mode()
    return vae.decode(lat).sample.float().clamp(-1, 1)


@torch.no_grad()
def evaluate_autoencoder(
    vae: Any, ds: TileDataset, device: torch.device, max_tiles: int = 64
) -> dict[str, float]:
    """Reconstruction PSNR (dB), SSIM and sharpness on ``ds`` (whole tiles, as uint8 images), at most
    ``max_tiles`` tiles spread over the split."""
    from geodiff.evaluate.reconstruction import reconstruction_metrics

    was_training = vae.training
    vae.eval()
    idx = spread_tiles(ds, max_tiles)
    out = []
    for i in idx:
        y = reconstruct(vae, ds[int(i)]["image"].unsqueeze(0).to(device))
        out.append(((y[0] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())
    vae.train(was_training)
    m = reconstruction_metrics(ds.images[idx], np.stack(out))
    return {"psnr_db": round(m["psnr_db"], 3), "ssim": round(m["ssim"], 4),
            "sharpness": round(m["sharpness"], 3), "tiles": len(idx)}  # fmt: skip


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


def _write_json(path: Path, value: Any) -> None:
    """A run folder's JSON file (metrics, time), replaced atomically: an interruption keeps the old one."""
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(value, indent=2) + "\n")


def _save_vae(vae: Any, folder: Path) -> None:
    """The autoencoder's folder, written beside its name and swapped in whole (never half a model there)."""
    from geodiff.io import staged_folder

    with staged_folder(folder) as tmp:
        vae.to("cpu").save_pretrained(tmp, safe_serialization=True, max_shard_size="15MB")


def keep_snapshot(part: Path, step: int, items: dict[str, Path]) -> Path:
    """Copy ``items`` (name -> file or folder) to ``<part>/exports/step-NNNNNNN``, published whole or not at all
    (the same step again, a rerun of a finished run, replaces the old copy whole)."""
    from geodiff.io import staged_folder

    dest = part / "exports" / f"step-{step:07d}"
    with staged_folder(dest) as tmp:
        tmp.mkdir()
        for name, src in items.items():
            if src.is_dir():
                shutil.copytree(src, tmp / name)
            else:
                shutil.copy2(src, tmp / name)
    return dest


def _continue_discriminator(path: str | Path, adversary: Adversary, device: torch.device) -> None:
    """Load the discriminator and its optimizer state from an earlier autoencoder run's checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(
            f"autoencoder.disc_pretrained: {path} does not exist (point it at an autoencoder run's checkpoint.pt)"
        )
    state = load_checkpoint(path, device)
    if "disc" not in state:
        raise ConfigError(
            f"autoencoder.disc_pretrained: {path} holds no discriminator (its run had disc_weight = 0); "
            "remove disc_pretrained to start a fresh one"
        )
    try:
        adversary.disc.load_state_dict(state["disc"])
    except RuntimeError as exc:
        raise ConfigError(
            f"autoencoder.disc_pretrained: the discriminator in {path} has another shape; set disc_channels "
            f"and disc_layers as in that run ({str(exc).splitlines()[0]})"
        ) from exc
    adversary.opt.load_state_dict(state["disc_optimizer"])


def _reconstruction(
    vae: Any, x: torch.Tensor, gen: torch.Generator, kl_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reconstruction of ``x`` from a sampled latent, and the latent's regulariser (weighted KL)."""
    if vae.__class__.__name__ == "VQModel":
        # experimental: no config trains a VQ autoencoder (vae_type = "vq"); kept so a pretrained one can be tuned
        dec = vae.decode(vae.encode(x).latents)
        return dec.sample, dec.commit_loss.mean() if dec.commit_loss is not None else x.new_zeros(())
    post = vae.encode(x).latent_dist
    return vae.decode(post.sample(gen)).sample, post.kl().mean() * kl_weight


def train_autoencoder(
    cfg: TrainConfig, resume: bool = False, progress: ProgressCallback | None = None
) -> Path:
    """Run the autoencoder stage ``autoencoder.stage`` (:mod:`geodiff.train.stages`); returns the folder of the
    saved diffusers autoencoder.

    Loss: L1 + ``l2_weight`` MSE + KL, plus ``lowpass_weight`` block-average L1, plus, from step ``disc_start``
    when ``disc_weight > 0``, a PatchGAN hinge term weighted adaptively (:class:`~geodiff.train.discriminator.Adversary`).
    Writes ``<run.dir>/autoencoder/{checkpoint.pt, log.csv, vae/, metrics.json}``.
    """
    device = _setup(cfg)
    sec = cfg.autoencoder
    stage = STAGES[sec.stage]
    out, ckpt_path = _run_folder(cfg, AE_DIR, resume)
    train_ds = TileDataset(cfg.resolve(cfg.data.path), "train", crop=sec.crop or cfg.data.crop)
    check_num_classes(train_ds.manifest)
    try:
        val_ds = TileDataset(cfg.resolve(cfg.data.path), "val", crop=None, augment=False)
    except DataError:
        val_ds = TileDataset(cfg.resolve(cfg.data.path), "train", crop=None, augment=False)
    resuming = resume and ckpt_path.exists()
    vae = stage.start(cfg, train_ds, not resuming)
    vae.to(device).train()
    stage.freeze(vae, cfg)
    mask_branch = getattr(vae.decoder, "condition_encoder", None)
    if mask_branch is not None:  # AsymmetricAutoencoderKL's inpainting branch: geodiff decodes without a mask
        mask_branch.requires_grad_(False)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=sec.lr, weight_decay=0.0)
    adversary = Adversary(sec, device) if sec.disc_weight > 0 else None
    last_layer = vae.decoder.conv_out.weight
    gen = torch.Generator().manual_seed(cfg.run.seed)
    step = 0
    prior = 0.0  # training seconds of earlier invocations: max_minutes is the run's total
    if adversary is not None and sec.disc_pretrained and not resuming:
        _continue_discriminator(cfg.resolve(sec.disc_pretrained), adversary, device)
    if resuming:
        state = load_checkpoint(ckpt_path, device)
        prior = prior_seconds(state, cfg, ckpt_path)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if adversary is not None and "disc" in state:  # a run may switch the GAN on when resumed
            adversary.load_state_dict(state)
        step = state["step"]
        _set_rng_state(state["rng"], gen)
    log = CsvLog(
        out / "log.csv",
        ["step", "loss", "l1", "mse", "reg", "g_loss", "d_loss", "d_weight", "lr", "elapsed_s"],
        from_step=step,
    )
    clock = budget_clock(cfg)
    start = clock()

    def checkpoint() -> None:
        state = {
            "model": vae.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            **time_record(cfg, prior + clock() - start, step),
            "rng": _rng_state(gen),
            "config": cfg.to_dict(),
        }
        if adversary is not None:
            state.update(adversary.state_dict())
        _save_checkpoint(ckpt_path, state)

    spent = (
        bool(sec.max_minutes) and prior >= sec.max_minutes * 60
    )  # a rerun of a finished run trains no step
    while step < sec.steps and not spent:
        x = train_ds.sample(sec.batch_size, gen)["image"].to(device)
        d_on = adversary is not None and adversary.learns(step)
        gan_on = adversary is not None and d_on and adversary.judges(step)  # the decoder's adversarial term
        with _autocast(cfg, device):
            y, reg = _reconstruction(vae, x, gen, sec.kl_weight)
            if gan_on:
                g_loss = adversary.generator_loss(y)  # type: ignore[union-attr]
        l1 = F.l1_loss(y.float(), x)
        mse = F.mse_loss(y.float(), x)
        rec = l1 + sec.l2_weight * mse
        loss = rec + reg.float()
        if sec.lowpass_weight > 0:
            loss = loss + sec.lowpass_weight * lowpass_l1(y.float(), x, sec.lowpass_block)
        d_weight = d_loss = torch.zeros(())
        if gan_on:
            d_weight = adversary.term_weight(rec, g_loss.float(), last_layer)  # type: ignore[union-attr]
            loss = loss + d_weight * g_loss.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        if d_on:
            d_loss = adversary.step(x, y, _autocast(cfg, device))  # type: ignore[union-attr]
        step += 1
        value = loss.item()
        if not math.isfinite(value):
            raise ModelError(
                f"autoencoder loss became {value} at step {step}; lower autoencoder.lr and resume"
            )
        elapsed = clock() - start
        if step % cfg.run.log_every == 0 or step == sec.steps:
            log.write(
                step=step,
                loss=f"{value:.5f}",
                l1=f"{l1.item():.5f}",
                mse=f"{mse.item():.5f}",
                reg=f"{reg.item():.6f}",
                g_loss=f"{g_loss.item():.4f}" if gan_on else "",
                d_loss=f"{d_loss.item():.4f}" if d_on else "",
                d_weight=f"{d_weight.item():.4f}" if gan_on else "",
                lr=sec.lr,
                elapsed_s=round(prior + elapsed, 1),
            )
        report(progress, step / sec.steps, f"autoencoder step {step}/{sec.steps} loss {value:.4f}")
        if step % cfg.run.checkpoint_every == 0:
            checkpoint()
        if sec.max_minutes and prior + elapsed > sec.max_minutes * 60:
            break
    checkpoint()
    vae.eval()
    stage.finish(vae, cfg, train_ds, device)
    metrics = evaluate_autoencoder(vae, val_ds, device, sec.eval_tiles)
    metrics.update(
        step=step,
        train_minutes=round((prior + clock() - start) / 60, 2),
        scaling_factor=vae.config.scaling_factor,
        split=val_ds.split,
    )
    _save_vae(vae, out / "vae")
    _write_json(out / "metrics.json", metrics)
    keep_snapshot(out, step, {"vae": out / "vae", "metrics.json": out / "metrics.json"})
    report(
        progress,
        1.0,
        f"autoencoder saved: PSNR {metrics['psnr_db']} dB, SSIM {metrics['ssim']}, "
        f"sharpness {metrics['sharpness']}",
    )
    return out / "vae"


# ----------------------------------------------------------------------------------------------------------
# diffusion
# ----------------------------------------------------------------------------------------------------------


def _trainable(model: GeodiffModel) -> list[torch.nn.Parameter]:
    return [p for m in (model.unet, model.map_encoder) for p in m.parameters()]


def diffusion_loss(
    model: GeodiffModel,
    latents: torch.Tensor,
    class_map: torch.Tensor,
    scheduler: Any,
    generator: torch.Generator | None = None,
    snr_gamma: float = 0.0,
    cond_drop: float = 0.0,
) -> torch.Tensor:
    """The denoising loss: MSE on epsilon or v, per latent cell weighted by how much of it the map labels.

    ``snr_gamma > 0`` applies Min-SNR-gamma weighting (Hang et al. 2023): ``min(SNR, gamma) / SNR`` for epsilon,
    ``min(SNR, gamma) / (SNR + 1)`` for v prediction, so the many nearly-noise-free timesteps stop dominating.
    ``cond_drop`` is the probability that a sample's map is replaced by "no class" everywhere (the null map of
    classifier-free guidance); such a sample's loss counts everywhere, since the image is real everywhere.
    Noise, timesteps and the dropout draw come from ``generator`` (a CPU generator works on any device).
    """
    b, device = latents.shape[0], latents.device
    noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator).to(device)
    noisy = scheduler.add_noise(latents, noise, t)
    mask = 1.0 - ignore_fraction(class_map, model.latent_factor)
    if cond_drop > 0:
        drop = (torch.rand(b, generator=generator) < cond_drop).to(device)
        class_map = torch.where(drop[:, None, None], torch.full_like(class_map, IGNORE), class_map)
        mask = torch.where(drop[:, None, None, None], torch.ones_like(mask), mask)
    pred = model.predict_noise(noisy, t, model.map_encoder(class_map))
    v_pred = scheduler.config.prediction_type == "v_prediction"
    target = scheduler.get_velocity(latents, noise, t) if v_pred else noise
    weight = mask
    if snr_gamma > 0:
        snr = compute_snr(scheduler, t)
        w_t = snr.clamp(max=snr_gamma) / (snr + 1 if v_pred else snr)
        weight = mask * w_t.view(-1, 1, 1, 1)
    err = (pred.float() - target.float()).pow(2) * weight
    # normalised by the labelled area only: the SNR weights keep their absolute scale across batches
    return err.sum() / (mask.sum() * latents.shape[1]).clamp_min(1.0)


def _ae_folder(cfg: TrainConfig) -> Path:
    folder = cfg.run_dir / AE_DIR / "vae"
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"no trained autoencoder at {folder}: run `geodiff train autoencoder --config {cfg.source}` first "
            "(or set autoencoder.pretrained and steps = 0)"
        )
    return folder


def _pretrained_model(ref: str) -> GeodiffModel:
    """The model ``diffusion.pretrained`` names (folder, installed name or hub id), in float32 for training."""
    from geodiff.models import resolve_model

    try:
        found = resolve_model(ref)  # a folder that exists wins over a name, as everywhere else
        if found.path is None:  # cannot happen for a name, folder or hub id; keeps the type exact
            raise ModelError("not a model folder")
        return GeodiffModel.from_pretrained(found.path, dtype=torch.float32)
    except ModelError as exc:
        raise ModelError(f"diffusion.pretrained = {ref!r}: {exc}") from exc


def export_model(model: GeodiffModel, ema: EMAModel | None, output: Path, card: dict[str, Any]) -> None:
    """save_pretrained with the EMA weights (the live weights are restored afterwards) + model card.

    The folder is built whole beside ``output`` (weights, card, and the old folder's other files such as the
    card notes) and swapped in at once: an interruption never leaves a half-written model under its name."""
    from geodiff.io import staged_folder
    from geodiff.model.core import SUBFOLDERS
    from geodiff.train.card import write_model_card

    params = _trainable(model)
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    try:
        with staged_folder(output) as tmp:
            model.save_pretrained(tmp)
            if output.is_dir():
                for item in output.iterdir():  # keep the card notes, samples and friends
                    if item.name not in (
                        *SUBFOLDERS,
                        "config.json",
                        "classes.json",
                    ) and not item.name.startswith("."):
                        if not (tmp / item.name).exists():
                            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
            write_model_card(tmp, model, card)
    finally:
        if ema is not None:
            ema.restore(params)


def train_diffusion(cfg: TrainConfig, resume: bool = False, progress: ProgressCallback | None = None) -> Path:
    """Train the U-Net and map encoder on latents of the trained autoencoder; returns the model folder.

    With ``diffusion.latent_cache`` the latents come from a :class:`~geodiff.train.latents.LatentCache`
    (``<run.dir>/diffusion/latents.safetensors``, built once); otherwise every batch is encoded on the fly.
    """
    device = _setup(cfg)
    sec = cfg.diffusion
    out, ckpt_path = _run_folder(cfg, DIFF_DIR, resume)
    pretrained = _pretrained_model(sec.pretrained) if sec.pretrained else None
    if pretrained is not None:  # its settings are the run's, so the card and checkpoints say what was trained
        cfg.model = copy.deepcopy(pretrained.config)
        if cfg.data.crop % pretrained.latent_factor:
            raise ConfigError(
                f"{cfg.source}: data.crop={cfg.data.crop} must be a multiple of {sec.pretrained}'s autoencoder "
                f"factor ({pretrained.latent_factor})"
            )
    ds = TileDataset(
        cfg.resolve(cfg.data.path), "train", crop=cfg.data.crop, map_augment=cfg.data.map_augment()
    )
    check_num_classes(ds.manifest)
    if abs(ds.manifest["resolution_m"] - cfg.model.resolution_m) > 1e-6:
        raise ConfigError(
            f"dataset resolution {ds.manifest['resolution_m']} m/px differs from model.resolution_m "
            f"{cfg.model.resolution_m}; rebuild the dataset or change the config"
        )
    if pretrained is not None:
        model = pretrained
        ae_metrics = None  # measured when that model was made; its card has them
        if sec.autoencoder:
            ae_path = cfg.resolve(sec.autoencoder)
            use_grown_autoencoder(model, load_autoencoder(ae_path))
            cfg.model = copy.deepcopy(model.config)
            ae_metrics = ae_path.parent / "metrics.json"  # written beside it by `geodiff train autoencoder`
    else:
        vae = load_autoencoder(_ae_folder(cfg))
        model = GeodiffModel(cfg.model, vae=vae)
        model.set_autoencoder(vae)
        ae_metrics = cfg.run_dir / AE_DIR / "metrics.json"
    model.to(device)
    model.vae.eval().requires_grad_(False)
    model.unet.train().requires_grad_(True)  # a loaded model comes frozen, for inference
    model.map_encoder.train().requires_grad_(True)
    params = _trainable(model)
    opt = torch.optim.AdamW(params, lr=sec.lr, weight_decay=sec.weight_decay)
    sched_lr = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(sec.warmup_steps))
    ema = EMAModel(params, decay=sec.ema_decay, use_ema_warmup=True, power=3 / 4)
    noise_sched = model.noise_scheduler()
    gen = torch.Generator().manual_seed(cfg.run.seed)
    step = 0
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, device)
        for key in ("pretrained", "autoencoder"):  # its U-Net learned another autoencoder's latents
            if state.get(key, "") != getattr(sec, key):
                raise ConfigError(
                    f"{ckpt_path} was trained with diffusion.{key} = {state.get(key, '')!r}, the config "
                    f"says {getattr(sec, key)!r}: set it back to resume, or choose another run.dir"
                )
        model.unet.load_state_dict(state["unet"])
        model.map_encoder.load_state_dict(state["map_encoder"])
        opt.load_state_dict(state["optimizer"])
        sched_lr.load_state_dict(state["lr_scheduler"])
        ema.load_state_dict(state["ema"])
        step = state["step"]
        _set_rng_state(state["rng"], gen)
    ema.to(device)
    cache = None
    if sec.latent_cache:
        report(progress, 0.0, "encoding the latent cache (once per autoencoder)")
        cache = LatentCache.load_or_build(out / "latents.safetensors", model, ds, progress=progress)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        if cache is not None:
            latents, cmap = cache.sample(sec.batch_size, cfg.data.crop, gen)
            return latents.to(device), cmap.to(device)
        batch = ds.sample(sec.batch_size, gen)
        with torch.no_grad():
            latents = model.encode_images(batch["image"].to(device), sample=True, generator=gen).float()
        return latents, batch["class_map"].to(device)

    log = CsvLog(
        out / "log.csv",
        ["step", "loss", "loss_avg", "lr", "elapsed_s", "s_per_step", "samples_per_s"],
        from_step=step,
    )
    time_file = out / "time.json"
    prior = resumed_seconds(time_file, resume, cfg)
    clock = budget_clock(cfg)
    start = clock()
    first_step = step
    avg = None
    card: dict[str, Any] = {
        "dataset": ds.manifest,
        "config": cfg.to_dict(),
        "autoencoder_metrics": json.loads(ae_metrics.read_text())
        if ae_metrics and ae_metrics.exists()
        else {},
        "pretrained": sec.pretrained,
        "autoencoder": sec.autoencoder,
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
                "rng": _rng_state(gen),
                "config": cfg.to_dict(),
                "pretrained": sec.pretrained,
                "autoencoder": sec.autoencoder,
            },
        )
        _write_json(time_file, time_record(cfg, prior + clock() - start, step))

    def export() -> None:
        card.update(step=step, train_seconds=round(prior + clock() - start, 1))
        export_model(model, ema, cfg.output_dir, card)

    spent = (
        bool(sec.max_minutes) and prior >= sec.max_minutes * 60
    )  # a rerun of a finished run trains no step
    while step < sec.steps and not spent:
        latents, cmap = next_batch()
        with _autocast(cfg, device):
            loss = diffusion_loss(
                model, latents, cmap, noise_sched, gen, snr_gamma=sec.snr_gamma, cond_drop=sec.cond_drop
            )
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
        elapsed = clock() - start
        if step % cfg.run.log_every == 0 or step == sec.steps:
            per_step = elapsed / max(1, step - first_step)
            log.write(
                step=step,
                loss=f"{value:.5f}",
                loss_avg=f"{avg:.5f}",
                lr=f"{sched_lr.get_last_lr()[0]:.2e}",
                elapsed_s=round(prior + elapsed, 1),
                s_per_step=round(per_step, 3),
                samples_per_s=round(sec.batch_size / per_step, 2),
            )
        report(progress, step / sec.steps, f"diffusion step {step}/{sec.steps} loss {avg:.4f}")
        if step % cfg.run.checkpoint_every == 0:
            checkpoint()
        early = step == cfg.run.log_every and not (cfg.output_dir / "config.json").exists()
        if early or (sec.export_every and step % sec.export_every == 0):
            export()  # the early export gives integrators a loadable folder within minutes
        if sec.max_minutes and prior + elapsed > sec.max_minutes * 60:
            break
    checkpoint()
    export()
    # a model folder of its own (loadable with --model), so a later resume does not replace this end point
    keep_snapshot(out, step, {p.name: p for p in cfg.output_dir.iterdir()})
    report(progress, 1.0, f"model saved to {cfg.output_dir}")
    return cfg.output_dir
