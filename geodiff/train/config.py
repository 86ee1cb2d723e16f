"""TOML training configs, validated with clear :class:`geodiff.errors.ConfigError` messages.

A config has the sections ``[data]``, ``[model]`` (:class:`geodiff.model.ModelConfig` fields),
``[autoencoder]``, ``[diffusion]``, ``[distill]`` and ``[run]``; every key is optional except ``data.path``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from geodiff.errors import ConfigError, InputNotFoundError
from geodiff.model.config import ModelConfig
from geodiff.train.map_augment import MapAugment


@dataclass
class DataSection:
    path: str = ""
    """A dataset folder built by ``geodiff dataset build``."""
    crop: int = 128
    """Training crop side in pixels (the U-Net is convolutional; inference uses full tiles)."""
    zoom_prob: float = 0.0
    """Diffusion training: probability of zooming a crop (:mod:`geodiff.train.map_augment`); 0 = off."""
    zoom_min: float = 0.7
    zoom_max: float = 1.6
    """The zoom's source square, as multiples of the crop (log-uniform between them)."""
    osm_style_prob: float = 0.0
    """Diffusion training: probability of redrawing a crop's map the way OSM draws it; 0 = off."""
    drop_prob: float = 0.15
    """In an OSM-style map: probability that a building, water or vegetation feature is left unmapped."""

    def map_augment(self) -> MapAugment:
        return MapAugment(self.zoom_prob, self.zoom_min, self.zoom_max, self.osm_style_prob, self.drop_prob)


@dataclass
class AutoencoderSection:
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    kl_weight: float = 1e-6
    l2_weight: float = 1.0
    """Weight of an MSE term next to L1 (helps PSNR; no perceptual network is needed)."""
    lowpass_weight: float = 0.0
    """Weight of an L1 term on ``lowpass_block``-px block averages of the reconstruction: it anchors colours
    and shading without penalising texture, against the colour cast a strong adversarial term brings; kept out
    of the adaptive GAN weight's reference, so it does not scale the GAN term up. 0 = off."""
    lowpass_block: int = 8
    pretrained: str = ""
    """Start from (or just use, with steps = 0) a diffusers autoencoder: a folder or hub id."""
    pretrained_subfolder: str = ""
    max_minutes: float = 0.0
    """Stop (and save) once the run has trained this many minutes in all (resumes included); 0 = no limit."""
    eval_tiles: int = 64
    crop: int = 0
    """Autoencoder training crop side (0 = ``data.crop``); small crops are as good for a conv autoencoder."""
    disc_weight: float = 0.0
    """Weight of the adversarial (PatchGAN, hinge) term, on top of the adaptive gradient-norm ratio; 0 = off
    (the plain L1 + MSE + KL recipe). 0.5 is the latent-diffusion autoencoders' choice."""
    disc_start: int = 0
    """Step at which the discriminator and the adversarial term start (a warm-up on reconstruction alone)."""
    disc_warmup: int = 0
    """Steps from ``disc_start`` in which only the discriminator learns: a fresh one judges at random at first,
    and its gradients would only disturb the decoder."""
    disc_highpass: bool = False
    """Show the discriminator each image's high-pass too (pixel-level texture, what reconstructions lack)."""
    disc_lr: float = 0.0
    """Discriminator learning rate (0 = ``lr``)."""
    disc_channels: int = 64
    disc_layers: int = 3
    disc_pretrained: str = ""
    """A ``checkpoint.pt`` of an earlier autoencoder run whose discriminator (and its optimizer state) this run
    continues with, instead of a fresh one: a fresh discriminator first undoes the sharpness the earlier one
    taught the decoder. Same ``disc_channels``/``disc_layers`` as that run. "" = a fresh discriminator."""
    stage: str = "full"
    """What this run does to the autoencoder, one named step of :data:`geodiff.train.stages.STAGES`: ``full``
    (train all of it, new or from ``pretrained``), ``decoder`` (fine-tune only the decoder of ``pretrained``:
    encoder and latent scale frozen, as Stable Diffusion's decoder fine-tune, so a diffusion model trained on
    its latents stays valid), ``widen-decoder`` (first double the decoder's width, an exact copy of the
    pretrained one to start with, :mod:`geodiff.train.surgery.widen`), ``grow-latents`` (add
    ``extra_latent_channels`` latent channels for detail, :mod:`geodiff.train.surgery.detail`). Older configs'
    ``decoder_only`` / ``widen_decoder`` / ``extra_latent_channels`` spellings are read as these stages."""
    extra_latent_channels: int = 0
    """Stage ``grow-latents``: how many latent channels to add. The old channels stay exactly as they are; only
    the new channels' encoder rows and the decoder train, and a diffusion model learns the new channels on top
    of the old ones (``diffusion.autoencoder``)."""


@dataclass
class DiffusionSection:
    steps: int = 10000
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    warmup_steps: int = 100
    max_minutes: float = 0.0
    """As ``autoencoder.max_minutes``: the run's total, resumes included."""
    export_every: int = 0
    """Also save_pretrained the EMA model to the output every N steps (0 = only at the end)."""
    grad_clip: float = 1.0
    snr_gamma: float = 0.0
    """Min-SNR-gamma loss weighting (Hang et al. 2023; 5 is the usual choice); 0 = plain MSE."""
    latent_cache: bool = False
    """Encode every training tile once in its 8 rotations/flips and keep the latents in memory (on the GPU
    when training there), cropping in latent space, instead of running the encoder at every step."""
    cond_drop: float = 0.0
    """Fraction of training samples whose map is replaced by "no class" everywhere, so the model also learns
    the unconditional prediction that classifier-free guidance needs (0.1 is usual; 0 = always conditioned)."""

    pretrained: str = ""
    """Start the U-Net and map encoder from this geodiff model (a folder, a name from ``geodiff models`` such
    as ``geodiff-default``, or a hub id), e.g. to adapt the shipped model to your own region. The model's own
    autoencoder and settings are used, so the config has no [model] section and needs no autoencoder stage."""
    autoencoder: str = ""
    """With ``pretrained``: train on this autoencoder (a folder) instead of the model's own, e.g. one grown by
    ``autoencoder.stage = "grow-latents"``. Its first channels must be the model's latents (same encoder and
    scale); the U-Net grows to predict the new channels too (:func:`geodiff.train.surgery.detail.add_unet_latent_channels`)."""


@dataclass
class DistillSection:
    """Latent consistency distillation of a fast student from a trained model (:mod:`geodiff.train.distill`)."""

    teacher: str = "geodiff-default"
    """The model to distil (a folder, a name from ``geodiff models``, or a hub id); the output is a copy of
    its folder with the student in ``student/``."""
    steps: int = 2000
    batch_size: int = 8
    lr: float = 2e-5
    warmup_steps: int = 20
    max_minutes: float = 0.0
    """As ``autoencoder.max_minutes``: the run's total, resumes included."""
    export_every: int = 0
    """Also write the output model folder every N steps (0 = only at the end)."""
    grad_clip: float = 1.0
    target_decay: float = 0.95
    """EMA decay of the target network (LCM's choice); the target is the student that is exported."""
    solver_steps: int = 50
    """The teacher's DDIM grid: each distillation step is one teacher step of 1000/solver_steps timesteps."""
    guidance_min: float = 1.5
    guidance_max: float = 3.0
    """Guidance scales drawn uniformly per sample; the teacher's guided prediction at that scale is the target."""
    embed_dim: int = 64
    """Size of the guidance-scale embedding (the U-Net's ``time_cond_proj_dim``)."""
    huber_c: float = 0.001
    """Pseudo-Huber loss constant (LCM's); 0 = MSE."""
    sample_steps: int = 4
    """The student's default sampling steps (recorded in ``student/student.json``)."""


@dataclass
class RunSection:
    dir: str = "runs/default"
    """Checkpoints, logs and the trained autoencoder go here."""
    output: str = ""
    """Where the final model is saved (save_pretrained); default ``<dir>/model``."""
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    mixed_precision: str = "bf16"
    """``bf16`` autocast on CUDA (ignored on CPU) or ``no``."""
    log_every: int = 10
    checkpoint_every: int = 200
    name: str = "geodiff"
    budget_clock: str = "wall"
    """What ``max_minutes`` and the logged seconds count: ``wall`` (elapsed time) or ``cpu`` (CPU time of this
    process: an equal budget for runs that share cores with other work)."""


@dataclass
class TrainConfig:
    data: DataSection = field(default_factory=DataSection)
    model: ModelConfig = field(default_factory=ModelConfig)
    autoencoder: AutoencoderSection = field(default_factory=AutoencoderSection)
    diffusion: DiffusionSection = field(default_factory=DiffusionSection)
    distill: DistillSection = field(default_factory=DistillSection)
    run: RunSection = field(default_factory=RunSection)
    source: str = ""

    def resolve(self, value: str) -> Path:
        """Relative paths in a config are relative to the working directory (run from the project's root)."""
        return Path(value).expanduser().absolute()

    @property
    def run_dir(self) -> Path:
        return self.resolve(self.run.dir)

    @property
    def output_dir(self) -> Path:
        return self.resolve(self.run.output) if self.run.output else self.run_dir / "model"

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": dataclasses.asdict(self.data),
            "model": self.model.to_dict(),
            "autoencoder": dataclasses.asdict(self.autoencoder),
            "diffusion": dataclasses.asdict(self.diffusion),
            "distill": dataclasses.asdict(self.distill),
            "run": dataclasses.asdict(self.run),
        }


_SECTIONS = {
    "data": DataSection,
    "autoencoder": AutoencoderSection,
    "diffusion": DiffusionSection,
    "distill": DistillSection,
    "run": RunSection,
}


def _section(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: must be a table ([{where.split()[-1]}])")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are {', '.join(known)}")
    default = cls()
    for key, value in values.items():
        expected = type(getattr(default, key))
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(f"{where}.{key} = {value!r}: expected a {expected.__name__}")
        if expected in (int, float) and value < 0:
            raise ConfigError(f"{where}.{key} = {value!r}: must not be negative")
        setattr(default, key, value)
    return default


def _legacy_stage(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Older configs' ``decoder_only`` / ``widen_decoder`` flags (and ``extra_latent_channels`` alone) -> the
    ``stage`` they meant, with the rules those flags had."""
    flags = {key: values.pop(key) for key in ("decoder_only", "widen_decoder") if key in values}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: autoencoder.{key} = {value!r}: expected a bool")
    if "stage" in values:
        if flags:
            raise ConfigError(
                f"{source}: autoencoder.stage replaces decoder_only and widen_decoder; remove them"
            )
        return values
    decoder_only, widen = flags.get("decoder_only", False), flags.get("widen_decoder", False)
    if widen and not decoder_only:
        raise ConfigError(
            f"{source}: autoencoder.widen_decoder needs decoder_only = true (and a pretrained autoencoder); "
            'or write stage = "widen-decoder"'
        )
    if values.get("extra_latent_channels") and not decoder_only:
        raise ConfigError(
            f"{source}: autoencoder.extra_latent_channels needs decoder_only = true (and a pretrained autoencoder): "
            'the old latent channels must stay as they are; or write stage = "grow-latents"'
        )
    if values.get("extra_latent_channels") and widen:
        raise ConfigError(
            f"{source}: autoencoder.extra_latent_channels and widen_decoder cannot be combined; use one of them"
        )
    if decoder_only:
        values["stage"] = (
            "widen-decoder" if widen else "grow-latents" if values.get("extra_latent_channels") else "decoder"
        )
    return values


def _check_stage(sec: AutoencoderSection, source: str) -> None:
    """The stage exists, has the autoencoder it starts from, and only its own settings."""
    from geodiff.train.stages import STAGES

    stage = STAGES.get(sec.stage)
    if stage is None:
        raise ConfigError(f"{source}: autoencoder.stage = {sec.stage!r}: must be one of {', '.join(STAGES)}")
    if stage.needs_pretrained and not sec.pretrained:
        raise ConfigError(
            f"{source}: autoencoder.stage = {sec.stage!r} needs autoencoder.pretrained (the autoencoder it starts from)"
        )
    if (sec.stage == "grow-latents") != (sec.extra_latent_channels > 0):
        raise ConfigError(
            f'{source}: autoencoder.extra_latent_channels (> 0) goes with stage = "grow-latents" and only with it'
        )


def parse_config(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Validate a config dict (as read from TOML) into a :class:`TrainConfig`."""
    unknown = sorted(set(data) - set(_SECTIONS) - {"model"})
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) {', '.join(unknown)}; valid sections are data, model, autoencoder, "
            "diffusion, distill, run"
        )
    cfg = TrainConfig(source=source)
    if isinstance(data.get("autoencoder"), dict):
        data = {**data, "autoencoder": _legacy_stage(dict(data["autoencoder"]), source)}
    for name, cls in _SECTIONS.items():
        if name in data:
            setattr(cfg, name, _section(cls, data[name], f"{source}: {name}"))
    if "model" in data:
        if not isinstance(data["model"], dict):
            raise ConfigError(f"{source}: model must be a table ([model])")
        cfg.model = ModelConfig.from_dict(dict(data["model"]), where=f"{source}: model")
    for name in ("steps", "batch_size"):
        for sec in ("autoencoder", "diffusion", "distill"):
            if getattr(getattr(cfg, sec), name) < (0 if name == "steps" else 1):
                raise ConfigError(f"{source}: {sec}.{name} must be at least 1")
    if not cfg.diffusion.cond_drop < 1:
        raise ConfigError(
            f"{source}: diffusion.cond_drop must be below 1 (a fraction of samples), got "
            f"{cfg.diffusion.cond_drop}"
        )
    if cfg.diffusion.pretrained and "model" in data:
        raise ConfigError(
            f"{source}: diffusion.pretrained trains on with that model's own settings; remove the [model] section"
        )
    if cfg.diffusion.autoencoder and not cfg.diffusion.pretrained:
        raise ConfigError(
            f"{source}: diffusion.autoencoder swaps the autoencoder of diffusion.pretrained; set pretrained too "
            "(a run without one trains on <run.dir>/autoencoder/vae)"
        )
    _check_stage(cfg.autoencoder, source)
    ae_crop, block = cfg.autoencoder.crop or cfg.data.crop, cfg.autoencoder.lowpass_block
    if cfg.autoencoder.lowpass_weight > 0 and (block < 2 or ae_crop % block):
        raise ConfigError(
            f"{source}: autoencoder.lowpass_block must be at least 2 and divide the autoencoder crop "
            f"({ae_crop}), got {block}"
        )
    if cfg.autoencoder.disc_pretrained and cfg.autoencoder.disc_weight <= 0:
        raise ConfigError(
            f"{source}: autoencoder.disc_pretrained needs disc_weight > 0 (a discriminator to continue with)"
        )
    if (cfg.autoencoder.disc_warmup or cfg.autoencoder.disc_highpass) and cfg.autoencoder.disc_weight <= 0:
        raise ConfigError(
            f"{source}: autoencoder.disc_warmup and disc_highpass need disc_weight > 0 (a discriminator to train)"
        )
    if cfg.autoencoder.disc_layers < 1 or cfg.autoencoder.disc_channels < 4:
        raise ConfigError(f"{source}: autoencoder.disc_layers must be >= 1 and disc_channels >= 4")
    dist = cfg.distill
    if not 1 <= dist.guidance_min <= dist.guidance_max:
        raise ConfigError(f"{source}: distill needs 1 <= guidance_min <= guidance_max")
    if not 0 <= dist.target_decay < 1 or dist.solver_steps < 2 or dist.embed_dim < 2 or dist.sample_steps < 1:
        raise ConfigError(
            f"{source}: distill.target_decay must be in [0, 1), solver_steps >= 2, embed_dim >= 2, sample_steps >= 1"
        )
    if cfg.run.budget_clock not in ("wall", "cpu"):
        raise ConfigError(f"{source}: run.budget_clock must be 'wall' or 'cpu', got {cfg.run.budget_clock!r}")
    if cfg.run.mixed_precision not in ("bf16", "no"):
        raise ConfigError(f"{source}: run.mixed_precision must be 'bf16' or 'no'")
    if cfg.run.device not in ("auto", "cpu", "cuda") and not cfg.run.device.startswith("cuda:"):
        raise ConfigError(f"{source}: run.device must be auto, cpu or cuda, got {cfg.run.device!r}")
    if cfg.data.crop % cfg.model.latent_factor or cfg.data.crop < 8:
        raise ConfigError(f"{source}: data.crop={cfg.data.crop} must be a multiple of the autoencoder factor")
    for key in ("zoom_prob", "osm_style_prob", "drop_prob"):
        if not 0 <= getattr(cfg.data, key) <= 1:
            raise ConfigError(f"{source}: data.{key} = {getattr(cfg.data, key)} must be between 0 and 1")
    if not 0 < cfg.data.zoom_min <= cfg.data.zoom_max:
        raise ConfigError(
            f"{source}: data.zoom_min = {cfg.data.zoom_min} and zoom_max = {cfg.data.zoom_max} must satisfy "
            "0 < zoom_min <= zoom_max (multiples of the crop, e.g. 0.7 and 1.6)"
        )
    if not cfg.data.path:
        raise ConfigError(f"{source}: data.path is required (a folder made by `geodiff dataset build`)")
    return cfg


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a TOML training config."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"config file {path} does not exist (see configs/*.toml for examples)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return parse_config(data, source=str(path))
