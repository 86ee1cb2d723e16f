"""Latent consistency distillation (LCD, Luo et al. 2023) of a fast student from a trained geodiff model.

The student is a copy of the teacher's U-Net that also reads a guidance-scale embedding
(:func:`geodiff.model.student.make_student_unet`). Each training step, as in diffusers'
``examples/consistency_distillation/train_lcm_distill_sd_wds.py``:

1. noise a training latent to a timestep ``t`` of the teacher's DDIM grid (``1000 / distill.solver_steps`` apart)
   and draw a guidance scale ``w`` per sample;
2. the frozen teacher takes one guided DDIM step ``t -> t - k`` (conditional and unconditional passes in one
   batch, combined at ``w``): a point on the same probability-flow trajectory;
3. the student's clean-latent estimate at ``t`` is pulled towards the target network's (an EMA of the student)
   at ``t - k`` (pseudo-Huber loss).

So the student learns to jump from any point of the guided trajectory to its end in one pass; sampled with a
few DDIM steps (:func:`geodiff.model.student.make_student_scheduler`), a window costs ``sample_steps`` U-Net
passes instead of 2 x 20. The autoencoder and map encoder are the teacher's and stay frozen. Resumable like
:func:`geodiff.train.loops.train_diffusion`: ``<run.dir>/distill/checkpoint.pt`` holds student, target,
optimizer, step and RNG states; batches come from one checkpointed CPU generator.
"""

from __future__ import annotations

import copy
import hashlib
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from geodiff.classes import IGNORE
from geodiff.errors import ConfigError, ModelError
from geodiff.model import Conditioning, GeodiffModel
from geodiff.model.student import STUDENT_DIR, StudentInfo, make_student_unet, save_student
from geodiff.progress import ProgressCallback, report
from geodiff.train.config import DistillSection, TrainConfig
from geodiff.train.dataset import TileDataset, check_num_classes
from geodiff.train.loops import (
    CsvLog,
    _autocast,
    _lr_lambda,
    _pretrained_model,
    _rng_state,
    _run_folder,
    _save_checkpoint,
    _set_rng_state,
    _setup,
    _write_json,
    budget_clock,
    keep_snapshot,
    load_checkpoint,
    resumed_seconds,
    time_record,
)

DISTILL_DIR = "distill"


def boundary_scalings(
    t: torch.Tensor, sigma_data: float = 0.5, scale: float = 10.0
) -> tuple[torch.Tensor, ...]:
    """LCM's ``c_skip, c_out``: the consistency function is the identity at ``t = 0``. With ``scale = 10``
    ``c_skip`` is below 1e-5 from ``t = 19`` on, so sampling may use the plain clean-latent estimate."""
    st = scale * t.float()
    c_skip = sigma_data**2 / (st**2 + sigma_data**2)
    c_out = st / (st**2 + sigma_data**2).sqrt()
    return c_skip.view(-1, 1, 1, 1), c_out.view(-1, 1, 1, 1)


def x0_and_eps(
    pred: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, kind: str
) -> tuple[torch.Tensor, ...]:
    """The clean latent and noise a U-Net output implies at noisy ``x`` (``alpha``: cumulative, ``[B,1,1,1]``)."""
    a, s = alpha.sqrt(), (1 - alpha).sqrt()
    if kind == "v_prediction":
        return a * x - s * pred, a * pred + s * x
    return (x - s * pred) / a, pred


def consistency_loss(
    teacher: GeodiffModel,
    student: GeodiffModel,
    target: GeodiffModel,
    latents: torch.Tensor,
    class_map: torch.Tensor,
    scheduler: Any,
    sec: DistillSection,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One LCD loss on a batch of clean ``latents`` and their ``class_map``; noise, timesteps and guidance
    scales come from ``generator`` (a CPU generator works on any device)."""
    b, dev = latents.shape[0], latents.device
    kind = scheduler.config.prediction_type
    k = scheduler.config.num_train_timesteps // sec.solver_steps
    t = ((torch.randint(0, sec.solver_steps, (b,), generator=generator) + 1) * k - 1).to(dev)
    t_prev = (t - k).clamp_min(0)
    w = sec.guidance_min + (sec.guidance_max - sec.guidance_min) * torch.rand(b, generator=generator)
    w = w.to(dev)
    noise = randn_tensor(latents.shape, generator=generator, device=dev, dtype=latents.dtype)
    x_t = scheduler.add_noise(latents, noise, t)
    alphas = scheduler.alphas_cumprod.to(dev)
    a_t, a_prev = alphas[t].view(-1, 1, 1, 1), alphas[t_prev].view(-1, 1, 1, 1)
    with torch.no_grad():
        cond = teacher.map_encoder(class_map)
        null = teacher.map_encoder(torch.full_like(class_map, IGNORE))
        pred = teacher.predict_noise(torch.cat([x_t, x_t]), torch.cat([t, t]), Conditioning.cat([cond, null]))
        p_cond, p_null = pred.float().chunk(2)
        guided = p_null + w.view(-1, 1, 1, 1) * (p_cond - p_null)
        x0, eps = x0_and_eps(guided, x_t, a_t, kind)
        x_prev = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps  # the teacher's guided DDIM step
        skip, out = boundary_scalings(t_prev)
        tgt = target.predict_noise(x_prev, t_prev, cond, guidance_scale=w).float()
        goal = skip * x_prev + out * x0_and_eps(tgt, x_prev, a_prev, kind)[0]
    skip, out = boundary_scalings(t)
    pred = student.predict_noise(x_t, t, cond, guidance_scale=w).float()
    est = skip * x_t + out * x0_and_eps(pred, x_t, a_t, kind)[0]
    if sec.huber_c > 0:
        return ((est - goal).pow(2) + sec.huber_c**2).sqrt().mean() - sec.huber_c
    return (est - goal).pow(2).mean()


def _digest(folder: Path) -> str:
    """sha256 over a model part's weight files (names and bytes): which teacher a student came from."""
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _place_teacher(teacher_dir: Path, output: Path) -> None:
    """Make ``output`` a copy of the teacher's folder (its own student aside), unless it already is one."""
    if (output / "config.json").is_file() and _digest(output / "unet") == _digest(teacher_dir / "unet"):
        return
    tmp = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(teacher_dir, tmp, ignore=shutil.ignore_patterns(STUDENT_DIR, ".*"))
    if output.exists():
        shutil.rmtree(output)
    tmp.rename(output)


def _view(teacher: GeodiffModel, unet: torch.nn.Module) -> GeodiffModel:
    """A model sharing the teacher's autoencoder and map encoder around another U-Net."""
    return GeodiffModel(
        teacher.config,
        vae=teacher.vae,
        unet=unet,
        map_encoder=teacher.map_encoder,
        scheduler_config=teacher.scheduler_config,
    )


def train_distill(cfg: TrainConfig, resume: bool = False, progress: ProgressCallback | None = None) -> Path:
    """Distil ``distill.teacher`` into a few-step student; returns the output model folder (the teacher's
    files plus ``student/``, loadable with ``quality="fast"``)."""
    from geodiff.models import resolve_model

    device = _setup(cfg)
    sec = cfg.distill
    out, ckpt_path = _run_folder(cfg, DISTILL_DIR, resume)
    teacher = _pretrained_model(sec.teacher)
    teacher_dir = resolve_model(sec.teacher).path
    assert teacher_dir is not None  # _pretrained_model loaded it from a folder
    cfg.model = copy.deepcopy(teacher.config)
    if cfg.data.crop % teacher.window_multiple:
        raise ConfigError(
            f"{cfg.source}: data.crop={cfg.data.crop} must be a multiple of {teacher.window_multiple} for this model"
        )
    ds = TileDataset(cfg.resolve(cfg.data.path), "train", crop=cfg.data.crop)
    check_num_classes(ds.manifest)
    if abs(ds.manifest["resolution_m"] - teacher.config.resolution_m) > 1e-6:
        raise ConfigError(
            f"dataset resolution {ds.manifest['resolution_m']} m/px differs from the teacher's "
            f"{teacher.config.resolution_m} m/px"
        )
    teacher.to(device).eval().requires_grad_(False)
    student_unet = make_student_unet(teacher.unet, sec.embed_dim).train().requires_grad_(True)
    target_unet = copy.deepcopy(student_unet).eval().requires_grad_(False)
    student, target = _view(teacher, student_unet), _view(teacher, target_unet)
    params = list(student_unet.parameters())
    opt = torch.optim.AdamW(params, lr=sec.lr, weight_decay=0.0)
    sched_lr = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(sec.warmup_steps))
    noise_sched = teacher.noise_scheduler()
    teacher_digest = _digest(teacher_dir / "unet")
    gen = torch.Generator().manual_seed(cfg.run.seed)
    step = 0
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, device)
        if state.get("teacher_digest") != teacher_digest:
            raise ConfigError(
                f"{ckpt_path} distils another teacher than distill.teacher = {sec.teacher!r}: set it back to "
                "resume, or choose another run.dir"
            )
        student_unet.load_state_dict(state["student"])
        target_unet.load_state_dict(state["target"])
        opt.load_state_dict(state["optimizer"])
        sched_lr.load_state_dict(state["lr_scheduler"])
        step = state["step"]
        _set_rng_state(state["rng"], gen)
    log = CsvLog(
        out / "log.csv", ["step", "loss", "loss_avg", "lr", "elapsed_s", "s_per_step"], from_step=step
    )
    time_file = out / "time.json"
    prior = resumed_seconds(time_file, resume, cfg)
    clock = budget_clock(cfg)
    start, first_step, avg = clock(), step, None

    def seconds() -> float:
        return prior + clock() - start

    def checkpoint() -> None:
        _save_checkpoint(
            ckpt_path,
            {
                "student": student_unet.state_dict(),
                "target": target_unet.state_dict(),
                "optimizer": opt.state_dict(),
                "lr_scheduler": sched_lr.state_dict(),
                "step": step,
                "rng": _rng_state(gen),
                "config": cfg.to_dict(),
                "teacher_digest": teacher_digest,
            },
        )
        _write_json(time_file, time_record(cfg, seconds(), step))

    def export() -> None:
        info = StudentInfo(
            method="lcm",
            steps=sec.sample_steps,
            guidance_min=sec.guidance_min,
            guidance_max=sec.guidance_max,
            teacher=f"{sec.teacher} (unet sha256 {teacher_digest[:16]})",
            train_steps=step,
            train_seconds=round(seconds(), 1),
        )
        _place_teacher(teacher_dir, cfg.output_dir)
        # the target network is the exported student (an EMA of the online one, as in LCM)
        half = teacher.config.storage_dtype == "float16"
        save_student(cfg.output_dir, target_unet, teacher.scheduler_config, info, half=half)

    target_params = list(target_unet.parameters())
    while step < sec.steps:
        batch = ds.sample(sec.batch_size, gen)
        with torch.no_grad():
            latents = teacher.encode_images(batch["image"].to(device), sample=True, generator=gen).float()
        with _autocast(cfg, device):
            loss = consistency_loss(
                teacher, student, target, latents, batch["class_map"].to(device), noise_sched, sec, gen
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if sec.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, sec.grad_clip)
        opt.step()
        sched_lr.step()
        with torch.no_grad():
            torch._foreach_lerp_(target_params, params, 1.0 - sec.target_decay)
        step += 1
        value = loss.item()
        if not math.isfinite(value):
            raise ModelError(f"distillation loss became {value} at step {step}; lower distill.lr and resume")
        avg = value if avg is None else 0.98 * avg + 0.02 * value
        if step % cfg.run.log_every == 0 or step == sec.steps:
            log.write(
                step=step,
                loss=f"{value:.5f}",
                loss_avg=f"{avg:.5f}",
                lr=f"{sched_lr.get_last_lr()[0]:.2e}",
                elapsed_s=round(seconds(), 1),
                s_per_step=round((clock() - start) / max(1, step - first_step), 3),
            )
        report(progress, step / sec.steps, f"distill step {step}/{sec.steps} loss {avg:.4f}")
        if step % cfg.run.checkpoint_every == 0:
            checkpoint()
        if sec.export_every and step % sec.export_every == 0:
            export()
        if sec.max_minutes and seconds() > sec.max_minutes * 60:
            break
    checkpoint()
    export()
    # this call's end point, kept: a later resume rewrites the output's student
    keep_snapshot(out, step, {STUDENT_DIR: cfg.output_dir / STUDENT_DIR})
    report(progress, 1.0, f"model with its fast student saved to {cfg.output_dir}")
    return cfg.output_dir
