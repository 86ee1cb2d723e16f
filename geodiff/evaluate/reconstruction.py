"""Autoencoder reconstruction quality on held-out tiles: PSNR, SSIM and sharpness.

Sharpness is the high-frequency energy of the reconstructions divided by that of the real tiles (the mean
squared response of a Laplacian filter on luminance): 1.0 is as sharp as the real tiles, below 1 is smeared.
PSNR alone rewards blur (the mean of plausible textures is a flat grey), so both are reported together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from geodiff.errors import InvalidParameterError


def to_unit_tensor(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> float tensor (N, 3, H, W) in [0, 1]."""
    arr = np.stack(list(images)) if not isinstance(images, np.ndarray) else images
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InvalidParameterError(f"expected (N, H, W, 3) RGB images, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 255.0


def psnr_ssim(real: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """PSNR (dB) and SSIM between two stacks of uint8 RGB images of the same shape.

    PSNR is computed per image and averaged (identical images give ``inf``); SSIM uses torchmetrics'
    Gaussian-window SSIM on the [0, 1] scale.
    """
    a, b = to_unit_tensor(real), to_unit_tensor(other)
    if a.shape != b.shape:
        raise InvalidParameterError(f"image stacks differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    psnr = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(a, b, data_range=1.0)
    return {"psnr_db": float(psnr.mean()), "ssim": float(ssim), "n_images": int(a.shape[0])}


_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def high_frequency_energy(images: np.ndarray) -> float:
    """Mean squared Laplacian response of the luminance of uint8 (N, H, W, 3) images (on the [0, 1] scale)."""
    luma = to_unit_tensor(images).mean(1, keepdim=True)
    return float(F.conv2d(luma, _LAPLACIAN).pow(2).mean())


def sharpness_ratio(real: np.ndarray, other: np.ndarray) -> float:
    """High-frequency energy of ``other`` over that of ``real`` (1.0 = as sharp as real)."""
    return high_frequency_energy(other) / max(high_frequency_energy(real), 1e-12)


def reconstruction_metrics(real: np.ndarray, reconstructed: np.ndarray) -> dict[str, float]:
    """PSNR (dB), SSIM and sharpness of reconstructions against the real uint8 tiles."""
    return psnr_ssim(real, reconstructed) | {"sharpness": sharpness_ratio(real, reconstructed)}


@torch.no_grad()
def reconstruct(
    model: Any,
    images: np.ndarray,
    batch_size: int = 8,
    progress: Callable[[float, str], None] | None = None,
) -> np.ndarray:
    """Encode and decode uint8 (N, H, W, 3) images with ``model.encode_images`` / ``model.decode_latents``."""
    device = getattr(model, "device", torch.device("cpu"))
    dtype = getattr(model, "dtype", torch.float32)
    out = []
    n = len(images)
    for start in range(0, n, batch_size):
        x = to_unit_tensor(images[start : start + batch_size]).to(device=device, dtype=dtype) * 2 - 1
        y = model.decode_latents(model.encode_images(x))
        y = ((y.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out.append(y)
        if progress is not None:
            progress(min(start + batch_size, n) / n, "autoencoder reconstruction")
    return np.concatenate(out)


def autoencoder_reconstruction(model: Any, images: np.ndarray, batch_size: int = 8) -> dict[str, float]:
    """PSNR, SSIM and sharpness of the model's autoencoder on ``images`` (held-out uint8 tiles)."""
    return reconstruction_metrics(images, reconstruct(model, images, batch_size=batch_size))
