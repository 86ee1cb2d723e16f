"""The fast sampler: a distilled student U-Net kept beside the teacher in a model folder.

A model folder may hold ``student/`` next to the teacher's parts::

    student/unet/            UNet2DConditionModel with ``time_cond_proj_dim`` (the guidance-weight embedding)
    student/scheduler/       its sampler (LCMScheduler, or DDIM with trailing timesteps)
    student/student.json     method, default steps, guidance range it was trained on, teacher, training time

The student shares the teacher's autoencoder and map encoder, so only its U-Net is stored. It predicts the
*guided* noise in one pass: classifier-free guidance is folded in through a guidance-weight embedding (the
latent consistency models' w-conditioning), so a step costs one U-Net pass instead of two.

Its sampler is LCM's multistep one: the clean estimate of each step is re-noised to the next timestep. That
noise comes from the caller (``step_noise`` of :class:`geodiff.pipeline.GeodiffPipeline`), which
:mod:`geodiff.synth` keys by place like the initial noise, so the window blending, strip-wise runs and resumes
behave as with DPM-Solver++. The deterministic alternative (DDIM, ``eta = 0``, ``sampler="ddim"``) needs no
step noise but carries each step's error on to the next (measured in ``bench/results/distill_pilot/``).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, LCMScheduler, UNet2DConditionModel

from geodiff.errors import ModelError
from geodiff.model.folder import STUDENT_INFO

STUDENT_DIR = STUDENT_INFO.parent.name


@dataclass
class StudentInfo:
    """What ``student/student.json`` records."""

    method: str = "lcm"
    """``lcm``: latent consistency distillation with w-conditioning (Luo et al. 2023)."""
    steps: int = 4
    """Default sampling steps (one U-Net pass each)."""
    guidance_min: float = 1.0
    guidance_max: float = 3.0
    """Guidance scales (``p_null + s (p_map - p_null)`` of the teacher) the student was trained to reproduce."""
    teacher: str = ""
    train_steps: int = 0
    train_seconds: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentInfo:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def guidance_embedding(scale: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``[B, dim]`` of the guidance scale, as diffusers' LCM pipelines embed ``w``
    (``(scale - 1) * 1000``, so "no guidance" embeds as zero frequency phase)."""
    w = (scale.float() - 1.0) * 1000.0
    half = dim // 2
    freq = torch.exp(
        torch.arange(half, dtype=torch.float32, device=w.device) * -(math.log(10000.0) / (half - 1))
    )
    emb = w[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


def make_student_unet(teacher: UNet2DConditionModel, embed_dim: int) -> UNet2DConditionModel:
    """A copy of ``teacher`` that also reads a guidance embedding of ``embed_dim``; the new projection starts
    at zero, so the untrained student predicts exactly what the teacher does (its conditional output)."""
    cfg = {k: v for k, v in teacher.config.items() if not k.startswith("_")}
    student = UNet2DConditionModel.from_config({**cfg, "time_cond_proj_dim": embed_dim})
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or set(missing) != {"time_embedding.cond_proj.weight"}:
        raise ModelError(f"cannot start the student from the teacher: {missing} {unexpected}")
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    student.to(teacher.device)
    # .half()/.float(), as diffusers' .to(dtype) warns about float32-only modules even when there are none
    return student.half() if teacher.dtype == torch.float16 else student.float()


def make_student_scheduler(
    scheduler_config: dict[str, Any], sampler: str | None = None
) -> LCMScheduler | DDIMScheduler:
    """The student's sampler on the teacher's noise schedule: ``"lcm"`` (LCMScheduler, the consistency
    model's multistep sampler) or ``"ddim"`` (deterministic, trailing timesteps so the first step starts at pure
    noise, as the student was trained); ``None``: the one ``scheduler_config`` names (a saved student's).
    Neither clips (latents are not in [-1, 1])."""
    if sampler is None:
        sampler = "ddim" if scheduler_config.get("_class_name") == "DDIMScheduler" else "lcm"
    if sampler == "lcm":
        # without the DDPM-only key (diffusers would warn that LCMScheduler ignores it)
        cfg = {k: v for k, v in scheduler_config.items() if k != "variance_type"}
        return LCMScheduler.from_config(cfg, clip_sample=False, thresholding=False)
    if sampler != "ddim":
        raise ModelError(f"unknown student sampler {sampler!r}: use 'lcm' or 'ddim'")
    return DDIMScheduler.from_config(
        scheduler_config,
        timestep_spacing="trailing",
        set_alpha_to_one=True,
        clip_sample=False,
        thresholding=False,
    )


def has_student(root: str | Path) -> bool:
    return (Path(root) / STUDENT_INFO).is_file()


def save_student(
    root: str | Path,
    unet: UNet2DConditionModel,
    scheduler_config: dict[str, Any],
    info: StudentInfo,
    half: bool = True,
    sampler: str = "lcm",
) -> Path:
    """Write ``<root>/student/`` (replacing an older one whole: a reader never sees half a student)."""
    from geodiff.io import staged_folder

    root = Path(root)
    dest = root / STUDENT_DIR
    with staged_folder(dest) as tmp:
        tmp.mkdir()
        stored = copy.deepcopy(unet).to("cpu")
        (stored.half() if half else stored.float()).save_pretrained(
            tmp / "unet", safe_serialization=True, max_shard_size="15MB"
        )
        make_student_scheduler(scheduler_config, sampler).save_pretrained(tmp / "scheduler")
        (tmp / STUDENT_INFO.name).write_text(json.dumps(asdict(info), indent=2) + "\n")
    return dest


def load_student(
    root: str | Path, dtype: torch.dtype = torch.float32
) -> tuple[UNet2DConditionModel, dict[str, Any], StudentInfo]:
    """The student's U-Net, scheduler config and :class:`StudentInfo` from ``<root>/student/``."""
    from geodiff.model.core import _LOAD, _quiet_loading

    folder = Path(root) / STUDENT_DIR
    if not has_student(root):
        raise ModelError(
            f"{root} has no fast sampler (no {STUDENT_INFO.as_posix()}): use quality='full', or distill one "
            "with `geodiff train distill --config configs/cpu_distill.toml`"
        )
    try:
        info = StudentInfo.from_dict(json.loads((folder / STUDENT_INFO.name).read_text()))
        with _quiet_loading():
            unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype, **_LOAD)
        sched = dict(LCMScheduler.load_config(folder, subfolder="scheduler"))
    except Exception as exc:
        raise ModelError(f"cannot load the fast sampler in {folder}: {exc}") from exc
    if not unet.config.time_cond_proj_dim:
        raise ModelError(f"{folder}/unet has no guidance embedding (time_cond_proj_dim); re-distill it")
    return unet.eval().requires_grad_(False), sched, info
