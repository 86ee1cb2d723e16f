"""Timing: a plan's duration estimated from one timed U-Net call and one decode on the plan's device."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geodiff.model import GeodiffModel
    from geodiff.synth.plan import SynthPlan


def model_to_time(model: GeodiffModel) -> GeodiffModel:
    """The model a dry run's estimate times: ``model``, or its torch twin while its ONNX graphs are not exported.

    Timing ONNX first exports the graphs, work a dry run must not do before it answers; the first run exports
    them, and plans after it time ONNX itself.
    """
    if model.onnx is not None and not model.onnx.exported():
        return model.with_runtime("torch")
    return model


def estimate_seconds(model: GeodiffModel, plan: SynthPlan) -> float:
    """Time one batched U-Net call and one decode on this device, scale to the plan."""
    import torch

    tile, f = model.config.tile_size, model.latent_factor
    b = min(plan.batch_size, plan.windows)
    maps = torch.zeros(b, tile, tile, dtype=torch.long, device=model.device)
    lat = torch.randn(b, model.latent_channels, tile // f, tile // f, device=model.device, dtype=model.dtype)
    with torch.inference_mode():
        cond = model.condition(maps)
        t = torch.full((b,), 500, device=model.device, dtype=torch.long)
        model.predict_noise(lat, t, cond)  # warm-up
        _sync(model.device)
        t0 = time.perf_counter()
        model.predict_noise(lat, t, cond)
        _sync(model.device)
        t_step = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.decode_latents(lat)
        _sync(model.device)
        t_dec = time.perf_counter() - t0
    batches = math.ceil(plan.windows / b)
    return batches * (plan.unet_passes * t_step + t_dec)


def _sync(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
