"""Denoising one canvas (a map covered exactly by windows) through the pipeline; in-memory maps.

The initial noise and the per-step noise are keyed by seed and place (:mod:`geodiff.noise`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geodiff.models import resolve_device, resolve_model
from geodiff.noise import location_noise
from geodiff.options import Sampler
from geodiff.progress import ProgressCallback
from geodiff.synth.plan import resolve_request, window_overlap
from geodiff.tiling import layout_for

if TYPE_CHECKING:
    import torch

    from geodiff.model import GeodiffModel


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def _pipeline(model: GeodiffModel, sampler: str):
    from geodiff.pipeline import GeodiffPipeline

    # "dpm" is the default sampler: a fast (distilled) model's default is its student's own
    return GeodiffPipeline(model, model.make_scheduler(None if sampler == "dpm" else sampler))


def _canvas_generator(seed: int, key: str, row: int, col: int) -> torch.Generator:
    """The per-step noise of ancestral samplers (ddpm), seeded by seed and the canvas's place."""
    import torch

    from geodiff.noise import block_seed

    return torch.Generator().manual_seed(block_seed(seed, key + "|steps", row, col))


def _step_noise(seed: int, key: str, row: int, col: int, height: int, width: int, channels: int):  # noqa: ANN202
    """A consistency sampler's (the fast student's) re-noising after step i, keyed by place like the initial noise."""
    return lambda i: location_noise(seed, f"{key}|step{i}", row, col, height, width, channels).unsqueeze(0)


def denoise_canvas(
    model: GeodiffModel,
    class_map: np.ndarray,
    noise: torch.Tensor,
    steps: int,
    sampler: str,
    batch_size: int,
    overlap: int,
    guidance_scale: float | None = None,
    generator: torch.Generator | None = None,
    progress: ProgressCallback | None = None,
    step_noise: Callable[[int], torch.Tensor] | None = None,
) -> np.ndarray:
    """Denoise one canvas (covered exactly by windows) and decode it: (H, W, 3) float32 RGB in [0, 1]."""
    out = _pipeline(model, sampler)(
        class_map,
        num_inference_steps=steps,
        latents=noise.unsqueeze(0),
        guidance_scale=guidance_scale,
        overlap=overlap,
        batch_size=batch_size,
        generator=generator,
        output_type="pt",
        progress=progress,
        step_noise=step_noise,
    )
    return out.images[0].add(1).mul(0.5).permute(1, 2, 0).numpy()


def synthesize_map(
    class_map: np.ndarray,
    model: GeodiffModel | str | Path | None = None,
    seed: int = 0,
    steps: int | None = None,
    sampler: Sampler = "dpm",
    guidance_scale: float | None = None,
    device: str = "auto",
    batch_size: int = 8,
    blend: bool = True,
    origin: tuple[int, int] = (0, 0),
    place: str = "local",
    progress: ProgressCallback | None = None,
    quality: str | None = None,
    runtime: str = "torch",
) -> np.ndarray:
    """Synthesize an (H, W, 3) uint8 image for an in-memory (H, W) class map (no georeferencing).

    The map is padded by edge replication to whole windows. ``origin`` (global pixel row, col) and ``place``
    (the noise key, e.g. ``"EPSG:32632"``) put it on the world's noise lattice: two calls with maps at the same
    place and origin and the same seed start from the same noise. ``quality="fast"``: the model folder's
    distilled student; ``runtime="onnx"``: ONNX Runtime (see :func:`geodiff.synth.plan_synthesis`).
    """
    ref = resolve_model(model)
    quality, steps, sampler = resolve_request(ref, quality, steps, sampler, batch_size, seed, guidance_scale)  # type: ignore[assignment]
    model_obj = ref.load(resolve_device(device), quality, runtime)
    tile, f = model_obj.config.tile_size, model_obj.latent_factor
    overlap = window_overlap(tile, f, blend)
    h, w = class_map.shape
    layout = layout_for(origin[0], origin[1], h, w, tile, overlap)
    top, left = origin[0] - layout.canvas_row, origin[1] - layout.canvas_col
    canvas = np.pad(class_map, ((top, layout.height - h - top), (left, layout.width - w - left)), mode="edge")
    lat_r, lat_c = layout.canvas_row // f, layout.canvas_col // f
    noise = location_noise(
        seed, place, lat_r, lat_c, layout.height // f, layout.width // f, model_obj.latent_channels
    )
    rgb = denoise_canvas(
        model_obj,
        canvas,
        noise,
        steps,
        sampler,
        batch_size,
        overlap,
        guidance_scale,
        _canvas_generator(seed, place, lat_r, lat_c),
        progress,
        _step_noise(
            seed, place, lat_r, lat_c, layout.height // f, layout.width // f, model_obj.latent_channels
        ),
    )
    return _to_uint8(rgb[top : top + h, left : left + w])
