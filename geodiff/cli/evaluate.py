"""``geodiff evaluate``: map fidelity, seg-feature KID/FID, autoencoder PSNR/SSIM and seam ratios of a model."""

from __future__ import annotations

from pathlib import Path

import click

from geodiff.cli.options import (
    close_progress,
    device_option,
    guidance_option,
    make_progress,
    model_option,
    overwrite_option,
    progress_option,
    quality_option,
    runtime_option,
    seed_option,
    steps_option,
    threads_option,
)
from geodiff.options import use_threads


@click.command(
    epilog="Example: geodiff evaluate --data datasets/dubai --model geodiff-default --out reports/default"
)
@click.option(
    "--data",
    "data",
    type=click.Path(path_type=Path),
    required=True,
    help="Real (image, mask) pairs: a `geodiff dataset` folder, or images/*.png + masks/*.png (class ids), "
    "optionally under train/ and test/.",
)
@model_option
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Report folder to write."
)
@click.option(
    "--mask-colors",
    default=None,
    metavar="TABLE",
    help="Colour table for RGB colour masks (dubai_aerial or geodiff); class-id masks need none.",
)
@click.option(
    "--seg-net",
    type=click.Path(path_type=Path),
    default=None,
    help="A saved segmentation net folder. Default: train one on the training split (saved in OUT/segnet).",
)
@click.option(
    "--segnet-steps", type=int, default=600, show_default=True, help="Training steps for the seg net."
)
@steps_option("Denoising steps per tile. Default: 20, or the student's (e.g. 4) with --quality fast.")
@quality_option
@click.option(
    "--sampler",
    type=click.Choice(["dpm", "ddpm"]),
    default=None,
    help="dpm = DPM-Solver++ 2M (the full model's own); ddpm = the 1000-step ancestral reference (default "
    "--steps 1000). Default: the model's own sampler at the chosen quality.",
)
@click.option(
    "--limit", type=int, default=32, show_default=True, help="Held-out tiles to synthesize and compare."
)
@seed_option("Seed of the first tile (tile i uses seed+i).")
@guidance_option
@device_option
@runtime_option
@threads_option
@click.option(
    "--seam-size",
    type=int,
    default=512,
    show_default=True,
    help="Side in pixels of the mosaic used for seam ratios (0 = skip).",
)
@click.option(
    "--inception-weights",
    type=click.Path(path_type=Path),
    default=None,
    help="Local Inception weights (torch-fidelity pt_inception-2015-12-05) to add Inception FID.",
)
@progress_option
@overwrite_option
def evaluate(
    data: Path,
    model: str | None,
    mask_colors: str | None,
    out_dir: Path,
    seg_net: Path | None,
    segnet_steps: int,
    steps: int | None,
    quality: str,
    sampler: str | None,
    limit: int,
    seed: int,
    guidance_scale: float | None,
    device: str,
    runtime: str,
    threads: int | None,
    seam_size: int,
    inception_weights: Path | None,
    progress_mode: str,
    overwrite: bool,
) -> None:
    """Evaluate a model on held-out real tiles and write report.json, summary.md and PNG figures.

    \b
    Map fidelity: a segmentation net trained on real tiles segments the synthetic tiles; its mIoU against the
    input maps, compared with its mIoU on the real tiles, says how well images follow their maps.
    Distances are "seg-feature" KID/FID (that net's encoder features), not Inception FID, unless
    --inception-weights is given. Seam ratio 1.0 means window boundaries are invisible.
    """
    from geodiff.errors import InputNotFoundError
    from geodiff.evaluate.report import report_transaction
    from geodiff.evaluate.run import check_evaluation, evaluate_model

    if not data.exists():
        raise InputNotFoundError(f"--data {data} does not exist")
    if seg_net is not None and not seg_net.exists():
        raise InputNotFoundError(f"--seg-net {seg_net} does not exist: leave it out to train one")
    check_evaluation(steps, limit, seed, segnet_steps, seam_size, mask_colors)
    tx = report_transaction(out_dir, overwrite)  # checks --out before any work
    use_threads(threads)
    progress = make_progress(progress_mode, "evaluate")
    try:
        rep = evaluate_model(
            data,
            model,
            out_dir,
            seg_net=seg_net,
            steps=steps,
            limit=limit,
            seed=seed,
            device=device,
            segnet_steps=segnet_steps,
            seam_size=seam_size,
            inception_weights=inception_weights,
            colors=mask_colors,
            guidance_scale=guidance_scale,
            progress=progress,
            tx=tx,
            quality=quality,
            sampler=sampler,
            runtime=runtime,
        )
    finally:
        close_progress(progress)
    fid = rep["map_fidelity"]
    click.echo(
        f"Wrote {out_dir}/report.json: mIoU real {fid['real']['miou']:.3f}, synthetic {fid['synthetic']['miou']:.3f}, "
        f"seg-feature KID {rep['distance']['seg_feature_kid']:.4f}",
        err=True,
    )
