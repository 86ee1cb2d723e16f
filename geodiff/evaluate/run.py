"""``geodiff evaluate``: judge a model on real (image, mask) pairs and write a report folder.

Steps: load the dataset splits; train (or load) the segmentation net on the training split; synthesize an image
for each held-out mask; compare real and synthetic tiles through the segmentation net (map fidelity mIoU,
seg-feature KID/FID); measure autoencoder PSNR/SSIM on the real held-out tiles; measure seam ratios of a blended
and a naive (independent tiles) mosaic; write ``report.json``, ``summary.md`` and PNG figures.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geodiff.errors import InputNotFoundError, InvalidParameterError
from geodiff.evaluate.data import Pairs, load_splits
from geodiff.evaluate.distance import inception_fid, kid, seg_feature_distances
from geodiff.evaluate.reconstruction import autoencoder_reconstruction, sharpness_ratio
from geodiff.evaluate.seams import seam_ratio, tile_boundaries, window_edges
from geodiff.evaluate.segmentation import (
    SegNet,
    extract_features,
    iou_scores,
    load_segnet,
    predict,
    save_segnet,
    train_segnet,
)
from geodiff.io import write_png
from geodiff.models import resolve_device
from geodiff.progress import ProgressCallback, report, scaled
from geodiff.synth.plan import DEFAULT_STEPS


def load_model(
    model_dir: str | os.PathLike[str] | None,
    device: str = "auto",
    quality: str | None = None,
    runtime: str = "torch",
) -> Any:
    """Load a :class:`geodiff.model.GeodiffModel` (default: the default model) on ``device`` at ``quality``."""
    from geodiff.models import load_model as _load

    return _load(model_dir, device, quality, runtime)


def _tile_step_noise(first_seed: int, n: int, shape: tuple[int, ...]):  # noqa: ANN202
    """A consistency sampler's re-noising (the fast student's), seeded per tile like its initial noise."""
    from geodiff.noise import block_seed

    def noise(i: int) -> torch.Tensor:
        gens = [torch.Generator().manual_seed(block_seed(first_seed + j, "step", i, 0)) for j in range(n)]
        return torch.stack([torch.randn(shape, generator=g) for g in gens])

    return noise


def synthesize_tiles(
    masks: np.ndarray,
    model: Any,
    seed: int = 0,
    steps: int = 20,
    device: str = "auto",
    batch_size: int = 8,
    guidance_scale: float | None = None,
    progress: ProgressCallback | None = None,
    sampler: str | None = None,
) -> np.ndarray:
    """One synthetic RGB tile per mask: (N, T, T) class ids -> (N, T, T, 3) uint8.

    Each tile is its own canvas (one window, no neighbours), ``batch_size`` tiles per U-Net call; tile ``i``
    starts from noise seeded with ``seed + i``, so its image does not depend on the batch or the limit.
    Ignore pixels (255) are passed through: the model's conditioning treats them as "no class", as in training.
    """
    from geodiff.pipeline import GeodiffPipeline

    # the model's own sampler (a fast model's: its student's) unless one is named ("ddpm": the reference)
    pipe = GeodiffPipeline(model, model.make_scheduler(sampler))
    n, tile = len(masks), masks.shape[-1]
    f = model.latent_factor
    shape = (model.latent_channels, tile // f, tile // f)
    out = []
    for start in range(0, n, batch_size):
        group = masks[start : start + batch_size]
        noise = torch.stack(
            [
                torch.randn(shape, generator=torch.Generator().manual_seed(seed + start + i))
                for i in range(len(group))
            ]
        )
        images = pipe(
            group,
            num_inference_steps=steps,
            latents=noise,
            guidance_scale=guidance_scale,
            batch_size=batch_size,
            step_noise=_tile_step_noise(seed + start, len(group), shape),
        ).images
        out += list(images)
        report(
            progress, min(start + batch_size, n) / n, f"synthesizing tiles {min(start + batch_size, n)}/{n}"
        )
    return np.stack(out)


def _tile_position(name: str) -> tuple[str, int, int] | None:
    """(source, row, col) from tile names ``source@row,col`` (geodiff dataset) or ``stem_r<row>_c<col>``."""
    m = re.fullmatch(r"(.+)@(\d+),(\d+)", name) or re.fullmatch(r"(.+)_r(\d+)_c(\d+)", name)
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def _mosaic_map(test: Pairs, tile: int, size: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """A (size, size) class map and the matching real image, from held-out tiles.

    Prefers k x k adjacent tiles of one source image (a contiguous real area, so the real photo has no seams);
    otherwise tiles are placed side by side in order. Returns ``(map, real image, contiguous)``.
    """
    k = size // tile
    index = {}
    for i, name in enumerate(test.names):
        pos = _tile_position(name)
        if pos is not None:
            index[pos] = i
    for src, r, c in sorted(index):
        block = [index.get((src, r + dr * tile, c + dc * tile)) for dr in range(k) for dc in range(k)]
        if all(b is not None for b in block):
            order = block
            contiguous = True
            break
    else:
        if len(test) < k * k:
            raise InvalidParameterError(
                f"a {size}px seam mosaic needs {k * k} held-out tiles, the test split has {len(test)}"
            )
        order, contiguous = list(range(k * k)), False
    rows_m = [np.concatenate([test.masks[order[r * k + c]] for c in range(k)], axis=1) for r in range(k)]
    rows_i = [np.concatenate([test.images[order[r * k + c]] for c in range(k)], axis=1) for r in range(k)]
    return np.concatenate(rows_m, axis=0), np.concatenate(rows_i, axis=0), contiguous


def measure_seams(
    class_map: np.ndarray,
    model: Any,
    seed: int,
    steps: int,
    device: str,
    overlap: int | None = None,
    reference_image: np.ndarray | None = None,
    guidance_scale: float | None = None,
    sampler: str | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Seam ratios of a blended and a naive (independent, non-overlapping tiles) synthesis of ``class_map``.

    Returns ``(stats, naive_rgb, blended_rgb)``. The blended mosaic is measured at its own window edges
    (``blended``) and at the naive tile boundaries (``blended_at_tile_boundaries``).
    """
    from geodiff.synth import layout_for, synthesize_map, window_overlap

    tile = int(model.config.tile_size)
    h, w = class_map.shape
    common: dict[str, Any] = dict(seed=seed, steps=steps, device=device, guidance_scale=guidance_scale)
    if sampler is not None:
        common["sampler"] = sampler
    naive = synthesize_map(class_map, model, blend=False, **common)
    blended = synthesize_map(class_map, model, blend=True, **common)
    tb_r, tb_c = tile_boundaries(h, tile), tile_boundaries(w, tile)
    out: dict[str, Any] = {
        "size": [h, w],
        "independent_tiles": seam_ratio(naive, tb_r, tb_c).to_dict(),
        "blended_at_tile_boundaries": seam_ratio(blended, tb_r, tb_c).to_dict(),
    }
    if overlap is None:  # the overlap synthesize_map blends with
        overlap = window_overlap(tile, model.latent_factor, True)
    if overlap:
        lay = layout_for(0, 0, h, w, tile, overlap)
        out["blended"] = seam_ratio(
            blended, window_edges(lay.rows, tile, h), window_edges(lay.cols, tile, w)
        ).to_dict()
        out["overlap"] = overlap
    else:
        out["blended"] = out["blended_at_tile_boundaries"]
    if reference_image is not None:  # what the map's own edges at those positions contribute in real photos
        out["real_mosaic_at_tile_boundaries"] = seam_ratio(reference_image, tb_r, tb_c).to_dict()
    return out, naive, blended


def evaluate_model(
    data: str | os.PathLike[str],
    model_dir: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    seg_net: str | os.PathLike[str] | None = None,
    steps: int | None = None,
    limit: int = 32,
    seed: int = 0,
    device: str = "auto",
    segnet_steps: int = 600,
    seam_size: int = 512,
    inception_weights: str | os.PathLike[str] | None = None,
    colors: str | None = None,
    model: Any | None = None,
    guidance_scale: float | None = None,
    progress: ProgressCallback | None = None,
    tx: Any = None,
    quality: str | None = None,
    sampler: str | None = None,
    runtime: str = "torch",
) -> dict[str, Any]:
    """Evaluate a model and write the report folder; returns the report dict.

    Parameters
    ----------
    data
        Dataset folder (see :mod:`geodiff.evaluate.data`).
    model_dir
        ``save_pretrained`` folder of the model; ignored when ``model`` is given.
    out_dir
        Report folder (created).
    seg_net
        A saved segmentation net; trained on the dataset's training split (and saved to ``out_dir/segnet``) if None.
    steps, seed, device, guidance_scale, quality
        Sampling settings; tile ``i`` is sampled with seed ``seed + i``; steps and guidance default to the
        model's (20 DPM-Solver++ steps, or the student's few for ``quality="fast"``, the distilled sampler);
        ``sampler`` ``"ddpm"``: the 1000-step ancestral reference (pass ``steps=1000``), full quality only;
        ``runtime`` ``"onnx"``: the U-Net and decoder on ONNX Runtime (CPU).
    limit
        Number of held-out tiles to synthesize and compare.
    segnet_steps
        Optimiser steps when training the segmentation net.
    seam_size
        Side (pixels) of the mosaic used for seam ratios (0 = skip).
    inception_weights
        Local Inception weights file: adds Inception FID (torchmetrics + torch-fidelity).
    colors
        Colour table of RGB colour masks (e.g. ``"dubai_aerial"``); class-id masks need none.
    tx
        The :func:`~geodiff.evaluate.report.report_transaction` taken when the run started; by default the
        folder's report is replaced (only a report geodiff wrote). Every file is published at the end, together.
    """
    from geodiff.evaluate.report import report_transaction

    t0 = time.monotonic()
    check_evaluation(steps, limit, seed, segnet_steps, seam_size, colors)
    if inception_weights is not None and not Path(inception_weights).is_file():
        raise InputNotFoundError(f"Inception weights {inception_weights} not found")
    out = Path(out_dir)
    tx = tx if tx is not None else report_transaction(out, overwrite=True)
    with tx:  # every file of the folder published together, at the end
        model = model if model is not None else load_model(model_dir, device, quality, runtime)
        if steps is None:
            steps = DEFAULT_STEPS[sampler] if sampler is not None else model.default_steps
        tile = int(model.config.tile_size)
        splits = load_splits(data, tile=tile, colors=colors)
        train, test = splits["train"], splits["test"]
        notes: list[str] = []
        if len(test) < limit:
            notes.append(f"only {len(test)} held-out tiles available (limit {limit})")
        ev = test.subset(range(min(limit, len(test))))

        dev = torch.device(resolve_device(device))
        if seg_net is not None:
            net: SegNet = load_segnet(seg_net, device=dev)
            seg_path = Path(seg_net)
        else:
            net, record = train_segnet(
                train.images,
                train.masks,
                steps=segnet_steps,
                seed=seed,
                device=dev,
                progress=scaled(progress, 0.0, 0.3),
            )
            seg_path = save_segnet(net, out / "segnet", record, tx)
        synth = synthesize_tiles(
            ev.masks,
            model,
            seed=seed,
            steps=steps,
            device=device,
            guidance_scale=guidance_scale,
            progress=scaled(progress, 0.3, 0.8),
            sampler=sampler,
        )

        rep: dict[str, Any] = {}
        rep["map_fidelity"] = {
            "real": iou_scores(predict(net, ev.images), ev.masks),
            "synthetic": iou_scores(predict(net, synth), ev.masks),
        }
        dist = seg_feature_distances(net, ev.images, synth, seed=seed)
        # the autoencoder's sharpness bounds this one: detail the decoder cannot draw never reaches the output
        dist["synthetic_sharpness"] = sharpness_ratio(ev.images, synth)
        # floor for comparison: two disjoint real samples (train vs held-out) of the same size
        ref = train.subset(range(min(len(ev), len(train))))
        if len(ref) >= 2:
            dist["real_split_kid"] = kid(
                extract_features(net, ref.images), extract_features(net, ev.images), seed=seed
            )[0]
        if inception_weights is not None:
            dist["inception_fid"] = inception_fid(ev.images, synth, inception_weights)
        rep["distance"] = dist
        report(progress, 0.85, "autoencoder reconstruction")
        rep["reconstruction"] = autoencoder_reconstruction(model, ev.images)
        if seam_size:
            report(progress, 0.9, "seam mosaic")
            size = max(seam_size // tile, 2) * tile
            try:
                cmap, real_mosaic, contiguous = _mosaic_map(test, tile, size)
                seams, naive, blended = measure_seams(
                    cmap,
                    model,
                    seed,
                    steps,
                    device,
                    reference_image=real_mosaic,
                    guidance_scale=guidance_scale,
                    sampler=sampler,
                )
                tx.mkdir(out)
                write_png(out / "seams_independent_tiles.png", naive, tx=tx)
                write_png(out / "seams_blended.png", blended, tx=tx)
                seams["contiguous_area"] = contiguous
                seams["note"] = (
                    "The seam map is a contiguous held-out area (adjacent tiles of one source image); "
                    "'real_mosaic_at_tile_boundaries' is the real photo's ratio at the same positions (about 1)."
                    if contiguous
                    else "The seam map is a mosaic of unrelated held-out masks, so map content also jumps at tile "
                    "boundaries; 'real_mosaic_at_tile_boundaries' is the ratio real photos get there."
                )
                rep["seams"] = seams
            except InvalidParameterError as exc:
                notes.append(f"seam ratio skipped: {exc}")
        rep["meta"] = {
            "model": str(model_dir) if model_dir is not None else (model.name_or_path or "in-memory"),
            "data": str(data),
            "seg_net": str(seg_path),
            "steps": steps,
            "quality": model.quality,
            "runtime": model.runtime,
            "sampler": sampler or ("lcm" if model.quality == "fast" else "dpm"),
            "guidance_scale": model.config.guidance(guidance_scale),
            "seed": seed,
            "n_eval_tiles": len(ev),
            "n_train_tiles": len(train),
            "device": str(dev),
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
            "seconds": round(time.monotonic() - t0, 1),
        }
        rep["notes"] = notes
        from geodiff.evaluate.report import write_report

        n_show = min(6, len(ev))
        write_report(out, rep, (list(ev.masks[:n_show]), list(ev.images[:n_show]), list(synth[:n_show])), tx)
        report(progress, 1.0, "report written")
        return rep


def check_evaluation(
    steps: int | None, limit: int, seed: int, segnet_steps: int, seam_size: int, colors: str | None = None
) -> None:
    """Refuse unusable evaluation settings before any work."""
    from geodiff.errors import DataError
    from geodiff.train.colors import get_table

    if colors is not None:
        try:
            get_table(colors)
        except DataError as exc:
            raise InvalidParameterError(f"--mask-colors: {exc}") from None
    if (steps is not None and steps < 1) or limit < 2:
        raise InvalidParameterError("steps must be >= 1 and limit >= 2 (KID needs at least two tiles)")
    if not 0 <= seed < 2**32:
        raise InvalidParameterError(f"--seed must be in [0, 2**32), got {seed}")
    if segnet_steps < 1:
        raise InvalidParameterError(f"--segnet-steps must be >= 1, got {segnet_steps}")
    if seam_size < 0:
        raise InvalidParameterError(f"--seam-size must be >= 0 (0 skips the seam ratio), got {seam_size}")
