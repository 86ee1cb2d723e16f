"""``geodiff model mix-decoders|finalize``: the named surgery steps that make a model folder from trained parts.

Both are thin: the work is in :mod:`geodiff.train.surgery` (``mix.mix_decoder_folders``,
``finalize.finalize_model``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from geodiff.cli.options import check_threads


@click.group()
def model() -> None:
    """Model surgery: mix two decoders, finalize a model folder (measure it, write its card)."""


@model.command("mix-decoders")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option(
    "--alpha",
    type=click.FloatRange(0.0, 1.0),
    required=True,
    help="Weight of B's decoder: decoder = (1 - alpha) A + alpha B (the shipped model uses 0.8).",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="New folder for the mixed autoencoder."
)
def mix_decoders(a: Path, b: Path, alpha: float, out: Path) -> None:
    """Mix the decoders of two decoder-only fine-tunes A and B of one autoencoder (diffusers folders).

    \b
    Both decode the same latents; the encoder is A's (and B's). Measure a range of alphas first with
    bench/decoder_interpolation.py; swap the result into a model with `geodiff model finalize --vae OUT`.
    """
    from geodiff.train.surgery.mix import mix_decoder_folders

    click.echo(f"mixed autoencoder saved to {mix_decoder_folders(a, b, alpha, out)}")


@model.command()
@click.argument("model_dir", metavar="MODEL", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "--vae",
    type=click.Path(path_type=Path),
    default=None,
    help="First swap in this autoencoder (a decoder-only fine-tune or mix of the model's own).",
)
@click.option(
    "--guidance-scale",
    type=float,
    default=None,
    help="First make this the model's default classifier-free guidance (chosen from "
    "`geodiff evaluate --guidance-scale` runs).",
)
@click.option(
    "--card-only",
    is_flag=True,
    help="Measure nothing: rewrite README.md (after editing card_notes.md) from the metrics.json recorded.",
)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The model's diffusion training run (default: the record in the model's training.json).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="CPU threads for torch; the measured seconds per tile are for this many.",
    callback=lambda _ctx, _param, value: check_threads(value),
)
@click.option("--tiles", type=int, default=4, show_default=True, help="Validation tiles in samples.png.")
@click.option(
    "--eval-tiles",
    type=int,
    default=145,
    show_default=True,
    help="Validation tiles the autoencoder is scored on.",
)
def finalize(
    model_dir: Path,
    data: Path,
    vae: Path | None,
    guidance_scale: float | None,
    card_only: bool,
    run_dir: Path | None,
    threads: int,
    tiles: int,
    eval_tiles: int,
) -> None:
    """Finalize the model folder MODEL against the dataset DATA (its validation split).

    \b
    Swaps in --vae, sets --guidance-scale, then measures the autoencoder (PSNR/SSIM/sharpness), the CPU
    seconds per 256 px tile and a samples.png grid, and writes metrics.json and the model card (README.md,
    from card_notes.md and training.json).
    """
    from geodiff.train.surgery.finalize import finalize_model

    metrics = finalize_model(
        model_dir,
        data,
        vae=vae,
        guidance_scale=guidance_scale,
        card_only=card_only,
        run_dir=run_dir,
        threads=threads,
        tiles=tiles,
        eval_tiles=eval_tiles,
    )
    click.echo(json.dumps(metrics, indent=2))
