"""``geodiff train autoencoder|diffusion|distill --config FILE``: train from a TOML config (see configs/)."""

from __future__ import annotations

from pathlib import Path

import click

from geodiff.cli.options import close_progress, make_progress, progress_option

_config = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    required=True,
    help="TOML training config (see configs/*.toml).",
)
_resume = click.option(
    "--resume",
    is_flag=True,
    help="Continue from the run folder's checkpoint.pt (starts fresh when there is none).",
)
_max_minutes = click.option(
    "--max-minutes",
    type=float,
    default=None,
    help="Stop, checkpoint and save after this many minutes (overrides the config).",
)
_steps = click.option("--steps", type=int, default=None, help="Total training steps (overrides the config).")


def _load(config_path: Path, section: str, max_minutes: float | None, steps: int | None):  # noqa: ANN202
    from geodiff.errors import ConfigError
    from geodiff.train.config import load_config

    cfg = load_config(config_path)
    sec = getattr(cfg, section)
    if max_minutes is not None:
        if max_minutes <= 0:
            raise ConfigError("--max-minutes must be positive")
        sec.max_minutes = max_minutes
    if steps is not None:
        if steps < 0:
            raise ConfigError("--steps must not be negative")
        sec.steps = steps
    return cfg


@click.group()
def train() -> None:
    """Train the autoencoder, then the map-conditioned diffusion model; distil a fast sampler from it."""


@train.command()
@_config
@_resume
@_max_minutes
@_steps
@progress_option
def autoencoder(
    config_path: Path, resume: bool, max_minutes: float | None, steps: int | None, progress_mode: str
) -> None:
    """Train the autoencoder; writes <run.dir>/autoencoder/{vae/, metrics.json, log.csv}."""
    from geodiff.train.loops import train_autoencoder

    cfg = _load(config_path, "autoencoder", max_minutes, steps)
    progress = make_progress(progress_mode, "autoencoder")
    try:
        folder = train_autoencoder(cfg, resume=resume, progress=progress)
    finally:
        close_progress(progress)
    metrics = (folder.parent / "metrics.json").read_text()
    click.echo(f"autoencoder saved to {folder}\n{metrics}")


@train.command()
@_config
@_resume
@_max_minutes
@_steps
@progress_option
def diffusion(
    config_path: Path, resume: bool, max_minutes: float | None, steps: int | None, progress_mode: str
) -> None:
    """Train the U-Net + map encoder on the trained autoencoder's latents; saves the model folder."""
    from geodiff.train.loops import train_diffusion

    cfg = _load(config_path, "diffusion", max_minutes, steps)
    progress = make_progress(progress_mode, "diffusion")
    try:
        folder = train_diffusion(cfg, resume=resume, progress=progress)
    finally:
        close_progress(progress)
    click.echo(f"model saved to {folder}")


@train.command()
@_config
@_resume
@_max_minutes
@_steps
@progress_option
def distill(
    config_path: Path, resume: bool, max_minutes: float | None, steps: int | None, progress_mode: str
) -> None:
    """Distil [distill].teacher into a few-step student (guidance folded in); saves the teacher's model folder
    with the student in student/ (load it with quality="fast")."""
    from geodiff.train.distill import train_distill

    cfg = _load(config_path, "distill", max_minutes, steps)
    progress = make_progress(progress_mode, "distill")
    try:
        folder = train_distill(cfg, resume=resume, progress=progress)
    finally:
        close_progress(progress)
    click.echo(f"model with its fast student saved to {folder}")
