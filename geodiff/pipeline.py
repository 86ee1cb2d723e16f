"""The denoising loop, in one place: class-map canvas -> synthetic aerial image. No geography in here.

A diffusers-style pipeline in three stages:

- **prepare**: lay out windows over the canvas (one window for a map of one tile or less; overlapping tiles
  otherwise), encode each window's map once, and scale the initial latents;
- **loop**: at every step, predict each window's noise (with classifier-free guidance when
  ``guidance_scale > 1``: two U-Net passes, or one for a distilled student, which has guidance folded in),
  blend the windows' predictions with smooth weights into one canvas prediction, and take a single scheduler
  step for the whole canvas, so neighbouring windows cannot drift apart (Mixture-of-Diffusers);
- **postprocess**: decode window by window, blended in pixel space with the same kind of weights.

Every entry point (``geodiff synth``, :func:`geodiff.synth.synthesize_map`, evaluation, augmentation, the model
card's sample grid) runs through :class:`GeodiffPipeline`; :mod:`geodiff.synth` places canvases on the globe.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from geodiff.classes import IGNORE
from geodiff.errors import InvalidParameterError, ModelError
from geodiff.model import GeodiffModel
from geodiff.model.conditioning import Conditioning
from geodiff.progress import ProgressCallback, report
from geodiff.tiling import edge_ramp

Sampler = Literal["dpm", "ddpm"]
OutputType = Literal["np", "pt", "pil"]


@dataclass
class GeodiffPipelineOutput:
    """``images``: ``[B, H, W, 3]`` uint8 (``output_type="np"``), ``[B, 3, H, W]`` in [-1, 1] (``"pt"``), or PIL list."""

    images: Any
    latents: torch.Tensor | None = None


@dataclass
class KnownRegion:
    """Latent inpainting (RePaint-style): keep the canvas's known latents where ``mask`` is 0.

    After every scheduler step the known part is replaced by ``latents`` re-noised to the next step's noise
    level with ``noise`` (``x = m * x + (1 - m) * noised(latents)``; the clean ``latents`` after the last step),
    so only the masked part is generated and it is denoised in the context of the known content.
    ``latents`` and ``noise`` are ``[B, C, H/f, W/f]``, ``mask`` ``[B, 1, H/f, W/f]`` in [0, 1] (feathered).
    """

    latents: torch.Tensor
    mask: torch.Tensor
    noise: torch.Tensor

    def keep(self, x: torch.Tensor, sched: Any, t_next: Any | None) -> torch.Tensor:
        """``x`` with the known region put back at the noise level of ``t_next`` (``None``: clean)."""
        z0, m = self.latents.to(x.device, x.dtype), self.mask.to(x.device, x.dtype)
        if t_next is None:
            ref = z0
        else:
            ac = sched.alphas_cumprod.to(x.device, torch.float64)[int(t_next)]
            ref = z0 * ac.sqrt().to(x.dtype) + self.noise.to(x.device, x.dtype) * (1 - ac).sqrt().to(x.dtype)
        return m * x + (1 - m) * ref


def canvas_windows(size: int, tile: int, overlap: int) -> list[int]:
    """Window origins along one canvas axis of ``size`` px: ``[0]`` when it fits one window, else every
    ``tile - overlap`` px with the last window ending exactly at ``size``."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    if overlap < 0 or stride <= 0 or (size - tile) % stride:
        raise InvalidParameterError(
            f"a canvas of {size} px is not covered exactly by {tile} px windows every {stride} px: "
            f"pad the map to {tile} + k x {stride} px (geodiff.synth.synthesize_map does this)"
        )
    return list(range(0, size - tile + 1, stride))


@dataclass(frozen=True)
class _Window:
    item: int  # canvas index in the batch
    row: int  # pixel origin in the canvas
    col: int


class GeodiffPipeline:
    """Sample images for class-map canvases from a :class:`GeodiffModel`.

    Parameters
    ----------
    model
        A loaded :class:`GeodiffModel`.
    scheduler
        A diffusers scheduler built from the model's config (``model.make_scheduler("dpm" | "ddpm")``);
        the model's own sampler when ``None`` (DPM-Solver++ 2M, or the student's for a ``quality="fast"`` model).
    """

    def __init__(self, model: GeodiffModel, scheduler: Any | None = None) -> None:
        self.model = model
        self.scheduler = scheduler if scheduler is not None else model.make_scheduler()

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        sampler: Sampler | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        quality: str = "full",
    ) -> GeodiffPipeline:
        """Load a model folder (see :meth:`GeodiffModel.from_pretrained`) with a ``sampler`` scheduler (default:
        the model's own). ``quality="fast"``: the folder's distilled student, a few one-pass steps."""
        model = GeodiffModel.from_pretrained(path, device=device, dtype=dtype, quality=quality)
        return cls(model, model.make_scheduler(sampler))

    def to(self, device: str | torch.device) -> GeodiffPipeline:
        self.model.to(device)
        return self

    # -- prepare ----------------------------------------------------------------------------------------------
    def _windows(self, b: int, h: int, w: int, overlap: int) -> tuple[list[_Window], int, int]:
        tile = self.model.config.tile_size
        rows, cols = canvas_windows(h, tile, overlap), canvas_windows(w, tile, overlap)
        wins = [_Window(i, r, c) for i in range(b) for r in rows for c in cols]
        return wins, min(h, tile), min(w, tile)

    def _weights(self, th: int, tw: int, overlap: int, scale: int) -> torch.Tensor:
        """Blend weights ``[th/scale, tw/scale]``: a cosine ramp at each window edge, never zero."""
        o = overlap // scale
        ry = edge_ramp(th // scale, o if th // scale >= 2 * o else 0)
        rx = edge_ramp(tw // scale, o if tw // scale >= 2 * o else 0)
        return torch.from_numpy(np.outer(ry, rx).astype(np.float32))

    @staticmethod
    def _crop(x: torch.Tensor, win: _Window, th: int, tw: int, f: int) -> torch.Tensor:
        return x[
            win.item : win.item + 1, :, win.row // f : (win.row + th) // f, win.col // f : (win.col + tw) // f
        ]

    # -- loop -------------------------------------------------------------------------------------------------
    def _predict(
        self, crops: torch.Tensor, t: Any, cond: Conditioning, null: Conditioning | None, guidance: float
    ) -> torch.Tensor:
        model = self.model
        n = crops.shape[0]
        tt = torch.full((n,), int(t), device=model.device, dtype=torch.long)
        if model.student is not None:  # guidance folded in: one pass
            return model.predict_noise(crops.to(model.dtype), tt, cond, guidance_scale=guidance).float()
        if null is None:
            return model.predict_noise(crops.to(model.dtype), tt, cond).float()
        # conditional and unconditional predictions in one U-Net call (twice the batch)
        both = Conditioning.cat([cond, null.expand(n)])
        pred = model.predict_noise(torch.cat([crops, crops]).to(model.dtype), tt.repeat(2), both).float()
        p_cond, p_null = pred.chunk(2)
        return p_null + guidance * (p_cond - p_null)

    @torch.inference_mode()
    def __call__(
        self,
        class_map: torch.Tensor | np.ndarray,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        guidance_scale: float | None = None,
        overlap: int = 0,
        batch_size: int = 8,
        num_images_per_map: int = 1,
        output_type: OutputType = "np",
        return_latents: bool = False,
        progress: ProgressCallback | None = None,
        known: KnownRegion | None = None,
        step_noise: Callable[[int], torch.Tensor] | None = None,
    ) -> GeodiffPipelineOutput:
        """Denoise from noise to images conditioned on ``class_map`` (``[H, W]`` or ``[B, H, W]`` class ids).

        Parameters
        ----------
        class_map
            One canvas or a batch of same-sized canvases; 255 = no class. A canvas larger than the model's tile
            must be covered exactly by windows every ``tile - overlap`` px (see :func:`canvas_windows`).
        num_inference_steps
            Scheduler steps; default the model's (20, or the student's few for ``quality="fast"``).
        generator
            Draws the initial noise when ``latents`` is None (on the CPU, so a seed gives the same image on CPU
            and GPU up to float noise) and, without ``step_noise``, the per-step noise of stochastic samplers.
        latents
            Initial noise ``[B, C, H/f, W/f]`` (e.g. :func:`geodiff.noise.location_noise`); drawn when None.
        guidance_scale
            Classifier-free guidance: ``p_null + s (p_map - p_null)``; 1 = off. Default: the model's
            ``config.guidance_scale``. Needs a model trained with map dropout (``diffusion.cond_drop``).
        overlap
            Overlap of neighbouring windows in pixels (a multiple of the latent factor); their predictions
            are blended.
        batch_size
            Windows per U-Net call.
        num_images_per_map
            Samples per canvas (a batch of canvases is repeated).
        output_type
            ``"np"`` (uint8), ``"pt"`` (float in [-1, 1]) or ``"pil"``.
        return_latents
            Also return the final latents.
        progress
            ``progress(fraction, message)`` callback.
        known
            Inpainting: latents to keep outside a mask (see :class:`KnownRegion`; ``geodiff change``).
        step_noise
            ``step_noise(i)``: the noise (shape of ``latents``) of step ``i`` of a stochastic sampler: the
            ancestral ``ddpm`` step's, or the one with which a consistency sampler (the fast student's
            ``LCMScheduler``) re-noises its clean estimate; :mod:`geodiff.synth` keys it by place like the initial
            noise. Drawn with ``generator`` for the whole batch when None.

        Returns
        -------
        GeodiffPipelineOutput
        """
        model = self.model
        if num_inference_steps is None:
            num_inference_steps = model.default_steps
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InvalidParameterError(
                f"num_inference_steps must be at least 1, got {num_inference_steps!r}"
            )
        if output_type not in ("np", "pt", "pil"):
            raise InvalidParameterError(f"output_type must be np, pt or pil, got {output_type!r}")
        if batch_size < 1:
            raise InvalidParameterError(f"batch size must be >= 1, got {batch_size}")
        guidance = model.config.guidance(guidance_scale)
        if not guidance >= 1.0:
            raise InvalidParameterError(f"guidance scale must be >= 1 (1 = no guidance), got {guidance}")
        f = model.latent_factor
        if overlap % f:
            raise InvalidParameterError(f"overlap must be a multiple of {f} px, got {overlap}")

        # prepare
        if isinstance(class_map, np.ndarray):
            class_map = torch.from_numpy(class_map.astype(np.int64))
        if class_map.ndim == 2:
            class_map = class_map.unsqueeze(0)
        if num_images_per_map > 1:
            class_map = class_map.repeat_interleave(num_images_per_map, dim=0)
        b, h, w = class_map.shape
        windows, th, tw = self._windows(b, h, w, overlap)
        batches = [windows[i : i + batch_size] for i in range(0, len(windows), batch_size)]
        conds = [
            model.condition(
                torch.stack([class_map[v.item, v.row : v.row + th, v.col : v.col + tw] for v in bw])
            )
            for bw in batches
        ]
        null = None
        if guidance > 1.0 and model.student is None:
            null = model.condition(torch.full((1, th, tw), IGNORE, dtype=torch.long))
        shape = (b, model.latent_channels, h // f, w // f)
        if latents is None:
            latents = torch.randn(shape, generator=generator, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise InvalidParameterError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        sched = self.scheduler
        sched.set_timesteps(num_inference_steps, device=model.device)
        x = latents.to(model.device, torch.float32) * sched.init_noise_sigma
        w_lat = self._weights(th, tw, overlap, f).to(model.device)
        steps: Sequence[Any] = list(sched.timesteps)
        total, done = (len(steps) + 1) * len(batches), 0
        takes_noise = getattr(sched, "takes_step_noise", False)  # geodiff's ancestral (ddpm) sampler

        # loop
        for i, t in enumerate(steps):
            model_in = sched.scale_model_input(x, t)
            eps = torch.zeros_like(x)
            weight = torch.zeros_like(x[:, :1])
            for bw, cond in zip(batches, conds, strict=True):
                crops = torch.cat([self._crop(model_in, v, th, tw, f) for v in bw])
                pred = self._predict(crops, t, cond, null, guidance)
                for k, v in enumerate(bw):
                    self._crop(eps, v, th, tw, f)[0] += pred[k] * w_lat
                    self._crop(weight, v, th, tw, f)[0] += w_lat
                done += 1
                report(progress, done / total, f"denoising step {i + 1}/{len(steps)}")
            if step_noise is not None and takes_noise:  # an ancestral step with the caller's noise
                out = sched.step(eps / weight, t, x, variance_noise=step_noise(i).to(x))
            else:  # a throwaway generator when the caller gives the noise: the scheduler's own draw is unused
                out = sched.step(
                    eps / weight, t, x, generator=torch.Generator() if step_noise is not None else generator
                )
            denoised = getattr(out, "denoised", None)
            if denoised is not None and step_noise is not None and i + 1 < len(steps):
                x = sched.add_noise(denoised, step_noise(i).to(x), steps[i + 1])
            else:
                x = out.prev_sample
            if known is not None:
                x = known.keep(x, sched, steps[i + 1] if i + 1 < len(steps) else None)
        if not torch.isfinite(x).all():
            raise ModelError(
                "the model produced non-finite latents (NaN/inf): its weights are probably corrupt; "
                "reinstall or re-download the model"
            )

        # postprocess
        w_px = self._weights(th, tw, overlap, 1)
        rgb = torch.zeros(b, 3, h, w)
        wsum = torch.zeros(b, 1, h, w)
        for bw in batches:
            crops = torch.cat([self._crop(x, v, th, tw, f) for v in bw])
            images = model.decode_latents(crops).float().cpu()
            for k, v in enumerate(bw):
                self._crop(rgb, v, th, tw, 1)[0] += images[k] * w_px
                self._crop(wsum, v, th, tw, 1)[0] += w_px
            done += 1
            report(progress, done / total, "decoding")
        images_pt = (rgb / wsum).clamp(-1, 1)
        if not torch.isfinite(images_pt).all():
            raise ModelError(
                "the decoder produced non-finite pixels: the model's weights are probably corrupt"
            )
        if output_type == "pt":
            out: Any = images_pt
        else:
            arr = ((images_pt + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                from PIL import Image

                out = [Image.fromarray(a) for a in arr]
            else:
                out = arr
        return GeodiffPipelineOutput(out, x if return_latents else None)
