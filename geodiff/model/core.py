"""``GeodiffModel``: autoencoder + map conditioner + U-Net + noise schedule, saved as one folder."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (
    AsymmetricAutoencoderKL,
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DConditionModel,
    VQModel,
)
from torch import nn

from geodiff.classes import CLASSES
from geodiff.errors import ModelError
from geodiff.model.conditioning import Conditioning, MapConditioner
from geodiff.model.config import ModelConfig
from geodiff.model.folder import model_folder
from geodiff.model.onnx_runtime import OnnxParts, check_runtime
from geodiff.model.student import (
    StudentInfo,
    guidance_embedding,
    load_student,
    make_student_scheduler,
)
from geodiff.options import check_quality

SUBFOLDERS = ("vae", "unet", "map_encoder", "scheduler")


class AncestralScheduler(DDIMScheduler):
    """The ``ddpm`` reference sampler: DDIM with eta = 1, which is DDPM's ancestral step (the posterior mean and
    its variance beta-tilde; Song et al. 2021, sec. 4.1), with the step's noise given by the caller
    (``variance_noise``) instead of drawn inside, so :mod:`geodiff.synth` keys it by place like the initial
    noise (diffusers' DDPMScheduler draws it from a generator for the whole canvas)."""

    takes_step_noise = True
    """:class:`geodiff.pipeline.GeodiffPipeline` passes its ``step_noise(i)`` as ``variance_noise``."""

    def step(self, model_output: Any, timestep: Any, sample: Any, eta: float = 1.0, **kwargs: Any) -> Any:
        return super().step(model_output, timestep, sample, eta=eta, **kwargs)


MAX_SHARD_SIZE = "15MB"

_HOW_TO_GET = (
    "Use the shipped model (`geodiff models` lists it), pass --model with a complete model folder, "
    "or train one: `geodiff dataset build ...`, `geodiff train autoencoder --config configs/<x>.toml`, then "
    "`geodiff train diffusion --config configs/<x>.toml`."
)


# low_cpu_mem_usage needs `accelerate` (not a dependency); asking for it would print a warning on every load
_LOAD: dict[str, Any] = {"low_cpu_mem_usage": False}


class _DropDerivedAsymKeys:
    """AsymmetricAutoencoderKL registers two keys it derives itself (``block_out_channels``, ``force_upcast``),
    so reloading its own config.json warns that they "are not expected". Drop exactly that message: a config
    with any other unexpected key still warns."""

    _MESSAGE = re.compile(
        r"The config attributes \{'block_out_channels': \[[\d, ]*\], 'force_upcast': (True|False)\} "
        r"were passed to AsymmetricAutoencoderKL"
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not self._MESSAGE.match(record.getMessage())


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide diffusers' "Loading checkpoint shards" bar (geodiff reports its own progress) and its spurious
    warning on reloading an AsymmetricAutoencoderKL."""
    from diffusers.utils import logging as dlog

    enabled = dlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    config_log = dlog.get_logger("diffusers.configuration_utils")
    drop = _DropDerivedAsymKeys()
    config_log.addFilter(drop)
    try:
        yield
    finally:
        config_log.removeFilter(drop)
        if enabled:
            dlog.enable_progress_bar()


# ----------------------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------------------


Autoencoder = AutoencoderKL | AsymmetricAutoencoderKL | VQModel


def build_autoencoder(cfg: ModelConfig) -> Autoencoder:
    """A fresh (untrained) autoencoder as described by ``cfg`` (``vq`` / ``asym_kl``: experimental, see
    :class:`~geodiff.model.config.ModelConfig`; only ``kl`` is trained from scratch by any config)."""
    n = len(cfg.vae_block_channels)
    # diffusers names the block options differently for the asymmetric autoencoder; the rest is shared
    shared: dict[str, Any] = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.vae_norm_groups,
        sample_size=cfg.tile_size,
        scaling_factor=1.0,
    )
    if cfg.vae_type == "asym_kl":  # its mid-block always has attention
        return AsymmetricAutoencoderKL(
            down_block_out_channels=tuple(cfg.vae_block_channels),
            layers_per_down_block=cfg.vae_layers_per_block,
            up_block_out_channels=tuple(cfg.vae_decoder_channels),
            layers_per_up_block=cfg.vae_layers_per_block,
            **shared,
        )
    common: dict[str, Any] = dict(
        block_out_channels=tuple(cfg.vae_block_channels),
        layers_per_block=cfg.vae_layers_per_block,
        mid_block_add_attention=cfg.vae_mid_attention,
        **shared,
    )
    if cfg.vae_type == "vq":
        return VQModel(
            num_vq_embeddings=cfg.vae_num_vq_embeddings, vq_embed_dim=cfg.latent_channels, **common
        )
    return AutoencoderKL(**common)


def load_autoencoder(
    path_or_id: str | os.PathLike[str],
    subfolder: str | None = None,
    dtype: torch.dtype | None = None,
) -> Autoencoder:
    """Load any diffusers-format ``AutoencoderKL`` / ``AsymmetricAutoencoderKL`` / ``VQModel`` from a local folder or a hub id.

    Parameters
    ----------
    path_or_id
        A folder holding ``config.json`` + weights (or its parent with ``subfolder``), or a hub repo id such as
        ``"CompVis/ldm-super-resolution-4x-openimages"`` (needs internet).
    subfolder
        Sub-folder inside the folder/repo, e.g. ``"vqvae"`` or ``"vae"``.
    """
    kwargs: dict[str, Any] = dict(_LOAD)
    if subfolder:
        kwargs["subfolder"] = subfolder
    try:
        config = AutoencoderKL.load_config(
            str(path_or_id), **{k: v for k, v in kwargs.items() if k in ("subfolder",)}
        )
    except Exception as exc:  # diffusers raises OSError/EnvironmentError/HF errors
        raise ModelError(
            f"cannot read an autoencoder config from {path_or_id!s}"
            f"{' (subfolder ' + subfolder + ')' if subfolder else ''}: {exc}"
        ) from exc
    name = config.get("_class_name", "AutoencoderKL")
    classes = {
        "AutoencoderKL": AutoencoderKL,
        "AsymmetricAutoencoderKL": AsymmetricAutoencoderKL,
        "VQModel": VQModel,
    }
    if name not in classes:
        raise ModelError(
            f"{path_or_id!s}: autoencoder class {name!r} is not supported; use one of {', '.join(classes)}"
        )
    try:
        with _quiet_loading():
            return classes[name].from_pretrained(str(path_or_id), torch_dtype=dtype, **kwargs)
    except Exception as exc:
        raise ModelError(f"cannot load the autoencoder weights from {path_or_id!s}: {exc}") from exc


def build_unet(cfg: ModelConfig, in_extra: int) -> UNet2DConditionModel:
    """The denoiser for ``cfg``; ``in_extra`` map channels are concatenated to the latent."""
    xattn = cfg.uses_xattn
    levels = [bool(a) and xattn for a in cfg.unet_attention_levels]
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels))
    return UNet2DConditionModel(
        sample_size=cfg.tile_size // cfg.latent_factor,
        in_channels=cfg.latent_channels + in_extra,
        out_channels=cfg.latent_channels,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn" if xattn else "UNetMidBlock2D",
        block_out_channels=tuple(cfg.unet_block_channels),
        layers_per_block=cfg.unet_layers_per_block,
        norm_num_groups=cfg.unet_norm_groups,
        cross_attention_dim=cfg.context_dim,
        attention_head_dim=cfg.attention_head_dim,
    )


def build_map_conditioner(cfg: ModelConfig) -> MapConditioner:
    return MapConditioner(
        num_classes=cfg.num_classes,
        latent_factor=cfg.latent_factor,
        conditioning=cfg.conditioning,
        map_embedding=cfg.map_embedding,
        map_embed_dim=cfg.map_embed_dim,
        encoder_channels=tuple(cfg.map_encoder_channels),
        cond_channels=cfg.map_cond_channels,
        context_dim=cfg.context_dim,
        context_pool=cfg.context_pool,
        pos_grid=max(1, -(-cfg.tile_size // cfg.latent_factor // cfg.context_pool)),
    )


def build_scheduler_config(cfg: ModelConfig) -> dict[str, Any]:
    """DDPM config with the betas written out, so every sampler is built from the very same numbers."""
    base = DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
    )
    sched = DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        trained_betas=base.betas.double().numpy().tolist(),
        prediction_type=cfg.prediction_type,
        clip_sample=False,
        timestep_spacing="trailing",
    )
    return dict(sched.config)


# ----------------------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------------------


class GeodiffModel(nn.Module):
    """A map-conditioned latent diffusion model (one class for all five conditioning variants).

    Parameters
    ----------
    config
        The :class:`ModelConfig`.
    vae, unet, map_encoder
        Pre-built parts; each is built fresh from ``config`` when ``None``.
    scheduler_config
        The saved DDPM scheduler config (with ``trained_betas``); built from ``config`` when ``None``.

    Notes
    -----
    The contract other modules rely on (docs/ARCHITECTURE.md, "Model contract"): ``from_pretrained``,
    ``save_pretrained``, ``condition``, ``predict_noise``, ``decode_latents``, ``encode_images``,
    ``make_scheduler``, ``config.resolution_m``, ``config.tile_size`` and ``latent_factor``.
    """

    def __init__(
        self,
        config: ModelConfig,
        vae: Autoencoder | None = None,
        unet: UNet2DConditionModel | None = None,
        map_encoder: MapConditioner | None = None,
        scheduler_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.name_or_path: str | None = None
        """Where :meth:`from_pretrained` loaded it from (None for a model built in memory), as in diffusers."""
        self.vae = vae if vae is not None else build_autoencoder(config)
        self.map_encoder = map_encoder if map_encoder is not None else build_map_conditioner(config)
        self.unet = unet if unet is not None else build_unet(config, self.map_encoder.feat_channels)
        self.scheduler_config = dict(scheduler_config or build_scheduler_config(config))
        self.student: StudentInfo | None = None
        """Set when the U-Net is the distilled fast sampler (``quality="fast"``, :mod:`geodiff.model.student`)."""
        self.student_scheduler_config: dict[str, Any] | None = None
        self.onnx: OnnxParts | None = None
        """Set when the U-Net and decoder run on ONNX Runtime (:meth:`with_runtime`)."""

    # -- properties -----------------------------------------------------------------------------------------
    @property
    def latent_factor(self) -> int:
        """Pixels per latent cell along one axis (4 for an f4 autoencoder)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def window_multiple(self) -> int:
        """Window sizes (pixels) must be multiples of this."""
        return self.latent_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def quality(self) -> str:
        """``"fast"`` when the U-Net is the distilled student, else ``"full"``."""
        return "full" if self.student is None else "fast"

    @property
    def default_steps(self) -> int:
        """Sampling steps of the model's own sampler: 20 DPM-Solver++ steps, or the student's (e.g. 4)."""
        return 20 if self.student is None else int(self.student.steps)

    def use_student(
        self, unet: UNet2DConditionModel, scheduler_config: dict[str, Any], info: StudentInfo
    ) -> None:
        """Sample with a distilled student U-Net from now on (the teacher's U-Net is dropped)."""
        if unet.dtype != self.dtype:
            unet = {torch.float16: unet.half, torch.bfloat16: unet.bfloat16}.get(self.dtype, unet.float)()
        self.unet = unet.to(self.device)
        self.student, self.student_scheduler_config = info, dict(scheduler_config)

    @property
    def runtime(self) -> str:
        """``"onnx"`` when the U-Net and decoder run on ONNX Runtime, else ``"torch"``."""
        return "torch" if self.onnx is None else "onnx"

    def with_runtime(self, runtime: str, cache_dir: str | os.PathLike[str] | None = None) -> GeodiffModel:
        """This model sampling on ``runtime``: itself for its own, else a shallow copy sharing the weights.

        ``"onnx"`` exports the U-Net and decoder to ``<cache_dir>/onnx`` on first use (default: the settings'
        cache folder; :mod:`geodiff.model.onnx_runtime`).
        """
        check_runtime(runtime, self.device)
        if runtime == self.runtime:
            return self
        # shares the submodules (and the dicts holding them): weights are not copied; swap parts (use_student)
        # before choosing the runtime, as loading does
        other = copy.copy(self)
        if runtime == "torch":
            other.onnx = None
        else:
            from geodiff.settings import get_settings

            other.onnx = OnnxParts(self.unet, self.vae, cache_dir or get_settings().cache_dir)
        return other

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def set_autoencoder(self, vae: Autoencoder) -> None:
        """Swap in another (e.g. pretrained) autoencoder; config fields describing it are updated."""
        self.vae = vae
        c = self.config
        if isinstance(vae, AsymmetricAutoencoderKL):
            c.vae_type = "asym_kl"
            c.vae_block_channels = list(vae.config.down_block_out_channels)
            c.vae_decoder_channels = list(vae.config.up_block_out_channels)
            c.vae_layers_per_block = int(vae.config.layers_per_down_block)
            c.vae_mid_attention = True  # diffusers always builds it
        else:
            c.vae_type = "vq" if isinstance(vae, VQModel) else "kl"
            c.vae_block_channels = list(vae.config.block_out_channels)
            c.vae_decoder_channels = []
            c.vae_layers_per_block = int(vae.config.layers_per_block)
            c.vae_mid_attention = bool(getattr(vae.config, "mid_block_add_attention", True))
        c.latent_channels = int(vae.config.latent_channels)

    # -- inference API ----------------------------------------------------------------------------------------
    def condition(self, class_map: torch.Tensor | np.ndarray) -> Conditioning:
        """Encode a class map (``[B, H, W]`` or ``[H, W]`` ids ``0..C-1``; 255 = no class) once per window."""
        if isinstance(class_map, np.ndarray):
            class_map = torch.from_numpy(class_map.astype(np.int64))
        class_map = class_map.to(self.device)
        if class_map.ndim == 2:
            class_map = class_map.unsqueeze(0)
        h, w = class_map.shape[-2:]
        m = self.window_multiple
        if h % m or w % m:
            raise ModelError(
                f"class map of {h}x{w} px: window sides must be multiples of {m} px for this model"
            )
        cond = self.map_encoder(class_map)
        return cond.to(dtype=self.dtype)

    def predict_noise(
        self,
        latents: torch.Tensor,
        t: torch.Tensor | int | float,
        cond: Conditioning,
        guidance_scale: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """The U-Net output (epsilon, or v for ``prediction_type="v_prediction"``) for noisy ``latents`` at ``t``.

        ``guidance_scale``: for a U-Net with a guidance embedding (the distilled student) the guided prediction
        at that scale (a float or one per sample; default ``config.guidance_scale``); ignored by the teacher,
        whose guidance needs two passes (:class:`geodiff.pipeline.GeodiffPipeline` combines them).
        """
        cond = cond.expand(latents.shape[0])
        x = latents.to(self.dtype)
        if cond.concat is not None:
            x = torch.cat([x, cond.concat.to(x.dtype)], dim=1)
        if not torch.is_tensor(t):
            t = torch.tensor(t, device=x.device)
        t = t.to(x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        t_cond = None
        dim = self.unet.config.time_cond_proj_dim
        if dim:
            s = self.config.guidance(None) if guidance_scale is None else guidance_scale
            s = torch.as_tensor(s, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
            t_cond = guidance_embedding(s, dim).to(x.dtype)
        if self.onnx is not None:
            return self.onnx.unet(x, t, cond.context, t_cond)
        return self.unet(x, t, encoder_hidden_states=cond.context.to(x.dtype), timestep_cond=t_cond).sample

    def _scale_shift(self) -> tuple[float, float]:
        scale = float(getattr(self.vae.config, "scaling_factor", 1.0) or 1.0)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return scale, float(shift)

    def encode_posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images in ``[-1, 1]`` ``[B, 3, H, W]`` -> scaled posterior ``(mean, std)`` ``[B, c, H/f, W/f]``.

        ``std`` is ``None`` for a VQ autoencoder (deterministic latents).
        """
        scale, shift = self._scale_shift()
        vdtype = next(self.vae.parameters()).dtype
        out = self.vae.encode(images.to(self.device, vdtype))
        if isinstance(self.vae, VQModel):
            return (out.latents - shift) * scale, None
        dist = out.latent_dist
        return (dist.mean - shift) * scale, dist.std * scale

    def encode_images(
        self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Images in ``[-1, 1]`` ``[B, 3, H, W]`` -> scaled latents (the posterior mode, or a draw if ``sample``)."""
        mean, std = self.encode_posterior(images)
        if not sample or std is None:
            return mean
        from diffusers.utils.torch_utils import randn_tensor  # a CPU generator also works for CUDA latents

        return mean + std * randn_tensor(
            mean.shape, generator=generator, device=mean.device, dtype=mean.dtype
        )

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images ``[B, 3, H, W]`` in ``[-1, 1]``."""
        scale, shift = self._scale_shift()
        vdtype = next(self.vae.parameters()).dtype
        z = latents.to(vdtype) / scale + shift
        img = self.onnx.decode(z) if self.onnx is not None else self.vae.decode(z).sample
        return img.clamp(-1, 1)

    def noise_scheduler(self) -> DDPMScheduler:
        """The forward (noising) process the model was trained with: ``add_noise``, ``alphas_cumprod``."""
        return DDPMScheduler.from_config(self.scheduler_config)

    def make_scheduler(self, kind: str | None = None, **overrides: Any) -> Any:
        """A fresh diffusers scheduler from the saved config (same betas as training).

        ``None``: the model's own sampler (``"dpm"``, or ``"lcm"`` for ``quality="fast"``);
        ``"dpm"``: DPM-Solver++ 2M (default sampler, ~20 steps); ``"ddpm"``: the 1000-step ancestral reference;
        ``"lcm"``: the distilled student's few-step sampler (only with the student loaded).
        """
        if self.student_scheduler_config is not None:
            if kind not in (None, "lcm"):  # the teacher's samplers on the student would sample garbage
                raise ModelError(
                    f"sampler {kind!r} is the full model's; this model samples with its distilled student: "
                    "load it with quality='full' to use it"
                )
            return make_student_scheduler({**self.student_scheduler_config, **overrides})
        if kind == "lcm":
            raise ModelError("sampler 'lcm' is the fast student's: load the model with quality='fast'")
        kind = kind or "dpm"
        if kind == "ddpm":
            return AncestralScheduler.from_config(self.scheduler_config, **overrides)
        if kind == "dpm":
            opts = dict(algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True)
            opts.update(overrides)
            return DPMSolverMultistepScheduler.from_config(self.scheduler_config, **opts)
        raise ModelError(
            f"unknown sampler {kind!r}: use 'dpm' (DPM-Solver++ 2M) or 'ddpm' (1000-step reference)"
        )

    # -- persistence ----------------------------------------------------------------------------------------
    def save_pretrained(
        self,
        path: str | os.PathLike[str],
        max_shard_size: str = MAX_SHARD_SIZE,
        extra_files: dict[str, str | bytes] | None = None,
    ) -> Path:
        """Write a complete model folder: ``config.json``, ``classes.json``, ``vae/``, ``unet/``,
        ``map_encoder/``, ``scheduler/`` (safetensors shards <= ``max_shard_size``).

        The folder is written beside the target and swapped in at the end, so a reader never sees half a model.
        Files in the old folder that are not model parts (a README.md model card, images) are kept.
        """
        if self.student is not None:
            raise ModelError(
                "this model samples with its distilled student: save the teacher (load it with quality='full'); "
                "the student is written by geodiff.model.student.save_student"
            )
        from geodiff.io import staged_folder

        path = Path(path)
        with staged_folder(path) as tmp:  # written beside, swapped in whole
            tmp.mkdir()
            half = self.config.storage_dtype == "float16"
            for name in ("vae", "unet", "map_encoder"):
                module = getattr(self, name)
                if name == "map_encoder" and not module.has_parameters:
                    continue
                # a copy so the live model keeps its dtype; .half()/.float(), as diffusers 0.42's .to(dtype)
                # warns about float32-only modules even when a model has none
                stored = copy.deepcopy(module).to("cpu")
                (stored.half() if half else stored.float()).save_pretrained(
                    tmp / name, safe_serialization=True, max_shard_size=max_shard_size
                )
            DDPMScheduler.from_config(self.scheduler_config).save_pretrained(tmp / "scheduler")
            self.config.save(tmp / "config.json")
            classes = [
                {"id": c.id, "name": c.name, "color": list(c.color), "description": c.description}
                for c in CLASSES
            ]
            (tmp / "classes.json").write_text(
                json.dumps({"classes": classes, "ignore": 255}, indent=2) + "\n"
            )
            for name, content in (extra_files or {}).items():
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content if isinstance(content, bytes) else content.encode())
            if path.exists():
                for item in path.iterdir():  # keep the model card and friends (and a distilled student/)
                    if item.name not in SUBFOLDERS and item.name not in ("config.json", "classes.json"):
                        dest = tmp / item.name
                        if not dest.exists():
                            (shutil.copytree if item.is_dir() else shutil.copy2)(item, dest)
        return path

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike[str],
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        quality: str = "full",
    ) -> GeodiffModel:
        """Load a model folder written by :meth:`save_pretrained` (or a hub id holding one).

        ``quality="fast"`` samples with the folder's distilled student (``student/``, a few guided steps of one
        U-Net pass each) instead of the teacher (:mod:`geodiff.model.student`).

        Raises
        ------
        geodiff.errors.ModelError
            When the folder is missing or incomplete (the message lists what is missing and how to get a model).
        """
        check_quality(quality)
        root = model_folder(path_or_hub_id)
        cfg_path = root / "config.json"
        missing = [] if cfg_path.is_file() else ["config.json"]
        if missing:
            raise ModelError(f"{root} is not a geodiff model folder (no config.json). {_HOW_TO_GET}")
        try:
            cfg = ModelConfig.load(cfg_path)
        except Exception as exc:
            raise ModelError(f"{cfg_path} is not a valid geodiff model config: {exc}. {_HOW_TO_GET}") from exc
        need = ["classes.json", "scheduler/scheduler_config.json", "vae/config.json", "unet/config.json"]
        probe = build_map_conditioner(cfg)
        if probe.has_parameters:
            need.append("map_encoder/config.json")
        missing = [n for n in need if not (root / n).is_file()]
        for sub in ("vae", "unet") + (("map_encoder",) if probe.has_parameters else ()):
            if (
                (root / sub).is_dir()
                and not any((root / sub).glob("*.safetensors"))
                and not any((root / sub).glob("*.bin"))
            ):
                missing.append(f"{sub}/ weights (*.safetensors)")
        if missing:
            raise ModelError(
                f"model folder {root} is incomplete: missing {', '.join(missing)}. {_HOW_TO_GET}"
            )
        _check_classes(root / "classes.json", cfg)
        load_dtype = dtype or torch.float32
        try:
            vae = load_autoencoder(root, subfolder="vae", dtype=load_dtype)
            with _quiet_loading():
                unet = UNet2DConditionModel.from_pretrained(
                    root, subfolder="unet", torch_dtype=load_dtype, **_LOAD
                )
                if probe.has_parameters:
                    menc = MapConditioner.from_pretrained(
                        root, subfolder="map_encoder", torch_dtype=load_dtype, **_LOAD
                    )
                else:
                    menc = probe
            sched = dict(DDPMScheduler.load_config(root, subfolder="scheduler"))
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot load the model in {root}: {exc}. {_HOW_TO_GET}") from exc
        model = cls(cfg, vae=vae, unet=unet, map_encoder=menc, scheduler_config=sched)
        model.name_or_path = str(path_or_hub_id)
        if quality == "fast":
            model.use_student(*load_student(root, dtype=load_dtype))
        model.eval().requires_grad_(False)
        if device is not None:
            model.to(device)
        return model


def _check_classes(path: Path, cfg: ModelConfig) -> None:
    try:
        saved = json.loads(path.read_text())["classes"]
        names = [c["name"] for c in saved]
    except Exception as exc:
        raise ModelError(f"{path} is not a valid class table: {exc}") from exc
    ours = [c.name for c in CLASSES]
    if names != ours[: len(names)] or len(names) != cfg.num_classes:
        raise ModelError(
            f"{path}: the model was trained on classes {names}, this geodiff uses {ours}; "
            "use a model trained with this class table"
        )
