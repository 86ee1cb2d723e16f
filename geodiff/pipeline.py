"""A diffusers-style single-tile pipeline: class map -> synthetic aerial image. No geography in here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geodiff.errors import InvalidParameterError
from geodiff.model import GeodiffModel
from geodiff.progress import ProgressCallback, report


@dataclass
class GeodiffPipelineOutput:
    """``images``: ``[B, H, W, 3]`` uint8 (``output_type="np"``), ``[B, 3, H, W]`` in [-1, 1] (``"pt"``), or PIL list."""

    images: Any
    latents: torch.Tensor | None = None


class GeodiffPipeline:
    """Sample one window (or a batch of windows) from a :class:`GeodiffModel`.

    Parameters
    ----------
    model
        A loaded :class:`GeodiffModel`.
    scheduler
        A diffusers scheduler built from the model's config (``model.make_scheduler("dpm" | "ddpm")``);
        DPM-Solver++ 2M when ``None``.
    """

    def __init__(self, model: GeodiffModel, scheduler: Any | None = None) -> None:
        self.model = model
        self.scheduler = scheduler if scheduler is not None else model.make_scheduler("dpm")

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        sampler: str = "dpm",
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> GeodiffPipeline:
        model = GeodiffModel.from_pretrained(path, device=device, dtype=dtype)
        return cls(model, model.make_scheduler(sampler))

    def to(self, device: str | torch.device) -> GeodiffPipeline:
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(
        self,
        class_map: torch.Tensor | np.ndarray,
        num_inference_steps: int = 20,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        num_images_per_map: int = 1,
        output_type: str = "np",
        return_latents: bool = False,
        progress: ProgressCallback | None = None,
    ) -> GeodiffPipelineOutput:
        """Denoise from noise to an image conditioned on ``class_map`` (``[H, W]`` or ``[B, H, W]`` ids).

        ``generator`` makes the result reproducible (noise is drawn on the CPU, then moved, so a seed gives the
        same image on CPU and GPU up to float noise).
        """
        if num_inference_steps < 1:
            raise InvalidParameterError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        if output_type not in ("np", "pt", "pil"):
            raise InvalidParameterError(f"output_type must be np, pt or pil, got {output_type!r}")
        model = self.model
        if isinstance(class_map, np.ndarray):
            class_map = torch.from_numpy(class_map.astype(np.int64))
        if class_map.ndim == 2:
            class_map = class_map.unsqueeze(0)
        if num_images_per_map > 1:
            class_map = class_map.repeat_interleave(num_images_per_map, dim=0)
        cond = model.condition(class_map)
        b, h, w = class_map.shape
        f = model.latent_factor
        shape = (b, model.latent_channels, h // f, w // f)
        sched = self.scheduler
        sched.set_timesteps(num_inference_steps, device=model.device)
        if latents is None:
            latents = torch.randn(shape, generator=generator, dtype=torch.float32)
        latents = latents.to(model.device, torch.float32) * sched.init_noise_sigma
        steps = list(sched.timesteps)
        for i, t in enumerate(steps):
            inp = sched.scale_model_input(latents, t)
            eps = model.predict_noise(inp, t, cond).float()
            latents = sched.step(eps, t, latents, generator=generator).prev_sample
            report(progress, (i + 1) / len(steps), f"denoising step {i + 1}/{len(steps)}")
        images = model.decode_latents(latents).float()
        if output_type == "pt":
            out: Any = images
        else:
            arr = (
                ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            )
            if output_type == "pil":
                from PIL import Image

                out = [Image.fromarray(a) for a in arr]
            else:
                out = arr
        return GeodiffPipelineOutput(out, latents if return_latents else None)
