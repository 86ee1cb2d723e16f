"""``geodiff train autoencoder|diffusion|distill --config FILE``: train from a TOML config (see configs/)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from geodiff.cli.options import close_progress, make_progress, progress_option


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


def _stage(section: str, loop: str, doc: str, done: Callable[[Path], str]) -> click.Command:
    """One ``geodiff train <section>`` command: both stages take the same options and differ only in the
    training loop they run and what they report."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        required=True,
        help="TOML training config (see configs/*.toml).",
    )
    @click.option(
        "--resume",
        is_flag=True,
        help="Continue from the run folder's checkpoint.pt (starts fresh when there is none).",
    )
    @click.option(
        "--max-minutes",
        type=float,
        default=None,
        help="Stop, checkpoint and save after this many minutes (overrides the config).",
    )
    @click.option("--steps", type=int, default=None, help="Total training steps (overrides the config).")
    @progress_option
    def command(
        config_path: Path, resume: bool, max_minutes: float | None, steps: int | None, progress_mode: str
    ) -> None:
        import importlib

        module, function = loop.split(":")
        cfg = _load(config_path, section, max_minutes, steps)
        progress = make_progress(progress_mode, section)
        try:
            folder = getattr(importlib.import_module(module), function)(cfg, resume=resume, progress=progress)
        finally:
            close_progress(progress)
        click.echo(done(folder))

    command.__doc__ = doc
    return train.command(section)(command)


_stage(
    "autoencoder",
    "geodiff.train.loops:train_autoencoder",
    "Train the autoencoder; writes <run.dir>/autoencoder/{vae/, metrics.json, log.csv}.",
    lambda folder: f"autoencoder saved to {folder}\n{(folder.parent / 'metrics.json').read_text()}",
)
_stage(
    "diffusion",
    "geodiff.train.loops:train_diffusion",
    "Train the U-Net + map encoder on the trained autoencoder's latents; saves the model folder.",
    lambda folder: f"model saved to {folder}",
)
_stage(
    "distill",
    "geodiff.train.distill:train_distill",
    "Distil [distill].teacher into a few-step student (guidance folded in); saves the teacher's model folder "
    'with the student in student/ (load it with quality="fast").',
    lambda folder: f"model with its fast student saved to {folder}",
)
