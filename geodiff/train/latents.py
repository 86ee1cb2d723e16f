"""Latents encoded once: every training tile under each of the 8 rotations/flips, kept in memory.

Running the autoencoder's encoder at every diffusion step costs as much as a good part of the U-Net step and
gives the same latents again and again (the autoencoder is frozen). Aerial imagery has no preferred orientation,
so each tile is encoded in all 8 orientations of the dihedral group (a conv encoder is not rotation-equivariant,
so these are 8 different latents, not one rotated 8 times), and the posterior mean and standard deviation are
stored. A training batch then costs a gather, a random crop in latent space and one Gaussian draw per latent.

The cache is saved beside the run (safetensors) with a fingerprint of the autoencoder and the dataset, so a
resumed run reuses it and a changed autoencoder or dataset rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from geodiff.errors import DataError
from geodiff.progress import ProgressCallback, report
from geodiff.train.symmetry import NUM_DIHEDRAL, dihedral

if TYPE_CHECKING:
    from geodiff.model import GeodiffModel
    from geodiff.train.dataset import TileDataset


def _fingerprint(model: GeodiffModel, ds: TileDataset) -> str:
    """Hash of the autoencoder weights, its latent scaling and the dataset's tile list."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.vae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    h.update(json.dumps(model._scale_shift()).encode())
    h.update(json.dumps([ds.manifest.get("tiles", []), len(ds), ds.split]).encode())
    return h.hexdigest()


class LatentCache:
    """Scaled posterior means/stds ``[N, 8, C, h, w]`` (float16) and the class maps ``[N, H, W]`` (uint8).

    Build with :meth:`build` or :meth:`load_or_build`; draw training batches with :meth:`sample`.
    """

    def __init__(
        self,
        mean: torch.Tensor,
        std: torch.Tensor | None,
        maps: torch.Tensor,
        factor: int,
        fingerprint: str = "",
    ) -> None:
        if mean.ndim != 5 or mean.shape[1] != NUM_DIHEDRAL:
            raise DataError(f"latent cache means must be [N, 8, C, h, w], got {tuple(mean.shape)}")
        if maps.shape[0] != mean.shape[0] or maps.shape[-1] != mean.shape[-1] * factor:
            raise DataError("latent cache: class maps do not match the latents")
        self.mean, self.std, self.maps, self.factor = mean, std, maps, factor
        self.fingerprint = fingerprint

    def __len__(self) -> int:
        return int(self.mean.shape[0])

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def nbytes(self) -> int:
        """Memory held by the cache."""
        tensors = [self.mean, self.maps] + ([self.std] if self.std is not None else [])
        return int(sum(t.numel() * t.element_size() for t in tensors))

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        model: GeodiffModel,
        ds: TileDataset,
        batch_tiles: int = 4,
        progress: ProgressCallback | None = None,
        storage: torch.device | str | None = None,
    ) -> LatentCache:
        """Encode every tile of ``ds`` (whole tiles, no crop) in its 8 orientations with ``model``'s autoencoder.

        ``storage`` is where the cache lives (default: the model's device, i.e. the GPU when training on one).
        """
        storage = torch.device(storage) if storage is not None else model.device
        n, f = len(ds), model.latent_factor
        images = torch.from_numpy(ds.images).permute(0, 3, 1, 2)  # uint8 [N, 3, T, T]
        maps = torch.from_numpy(ds.masks)
        t = images.shape[-1]
        shape = (n, NUM_DIHEDRAL, model.latent_channels, t // f, t // f)
        mean = torch.empty(shape, dtype=torch.float16, device=storage)
        std: torch.Tensor | None = None
        for start in range(0, n, batch_tiles):
            stop = min(n, start + batch_tiles)
            x = images[start:stop].float().div(127.5).sub(1)
            views = torch.cat([dihedral(x, k) for k in range(NUM_DIHEDRAL)])  # k-major
            m, s = model.encode_posterior(views.to(model.device))
            m = m.view(NUM_DIHEDRAL, stop - start, *m.shape[1:]).transpose(0, 1)
            mean[start:stop] = m.to(storage, torch.float16)
            if s is not None:
                if std is None:
                    std = torch.empty(shape, dtype=torch.float16, device=storage)
                std[start:stop] = s.view_as(m.transpose(0, 1)).transpose(0, 1).to(storage, torch.float16)
            report(progress, stop / n, f"encoding latents {stop}/{n} tiles x 8 orientations")
        return cls(mean, std, maps.to(storage), f, _fingerprint(model, ds))

    @classmethod
    def load_or_build(
        cls,
        path: Path,
        model: GeodiffModel,
        ds: TileDataset,
        progress: ProgressCallback | None = None,
        storage: torch.device | str | None = None,
    ) -> LatentCache:
        """The cache saved at ``path`` if it was made from this autoencoder and dataset, else a new one (saved)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        storage = torch.device(storage) if storage is not None else model.device
        fingerprint = _fingerprint(model, ds)
        if path.is_file():
            with safe_open(str(path), "pt") as fh:
                meta = fh.metadata() or {}
            if meta.get("fingerprint") == fingerprint:
                t = load_file(str(path), device=str(storage))
                return cls(t["mean"], t.get("std"), t["maps"], int(meta["factor"]), fingerprint)
        cache = cls.build(model, ds, progress=progress, storage=storage)
        cache.save(path)
        return cache

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {"mean": self.mean.contiguous(), "maps": self.maps.contiguous()}
        if self.std is not None:
            tensors["std"] = self.std.contiguous()
        tmp = path.with_name(path.name + ".tmp")
        save_file(
            {k: v.cpu() for k, v in tensors.items()},
            str(tmp),
            metadata={"fingerprint": self.fingerprint, "factor": str(self.factor)},
        )
        tmp.replace(path)

    def crop(
        self, i: int, k: int, row: int, col: int, size: int
    ) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        """Mean, std (latent cells) and class map (pixels) of tile ``i`` in orientation ``k``, cropped in latent
        space at latent cell (``row``, ``col``) with side ``size`` cells."""
        sl = (slice(row, row + size), slice(col, col + size))
        f = self.factor
        mean = self.mean[i, k, :, sl[0], sl[1]]
        std = None if self.std is None else self.std[i, k, :, sl[0], sl[1]]
        cmap = dihedral(self.maps[i], k)[row * f : (row + size) * f, col * f : (col + size) * f]
        return mean, std, cmap

    def sample(
        self, batch_size: int, crop_px: int, generator: torch.Generator, sample_posterior: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch: ``(latents [B, C, s, s] float32, class maps [B, s*f, s*f] long)``, ``s = crop_px / f``.

        Tiles, orientations and crop positions (and the posterior draw) all come from ``generator`` (a CPU
        generator, so a checkpointed state resumes the same sequence on any device).
        """
        f = self.factor
        size = crop_px // f
        side = self.mean.shape[-1]
        if crop_px % f or not 0 < size <= side:
            raise DataError(
                f"latent crop of {crop_px} px must be a multiple of {f} and at most {side * f} px"
            )
        idx = torch.randint(len(self), (batch_size,), generator=generator).tolist()
        ks = torch.randint(NUM_DIHEDRAL, (batch_size,), generator=generator).tolist()
        pos = torch.randint(side - size + 1, (batch_size, 2), generator=generator).tolist()
        parts = [self.crop(i, k, r, c, size) for i, k, (r, c) in zip(idx, ks, pos, strict=True)]
        latents = torch.stack([p[0] for p in parts]).float()
        if sample_posterior and self.std is not None:
            noise = torch.randn(latents.shape, generator=generator).to(latents.device)
            latents = latents + torch.stack([p[1] for p in parts]).float() * noise
        maps = torch.stack([p[2] for p in parts]).long()
        return latents, maps
