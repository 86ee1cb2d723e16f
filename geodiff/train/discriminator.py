"""The adversarial part of the autoencoder recipe: a patch discriminator, hinge losses, adaptive weight.

This is how latent-diffusion autoencoders are trained (Esser et al., "Taming Transformers"; Rombach et al.,
LDM): reconstruction losses alone give smeared textures, a PatchGAN term restores high frequencies. The GAN term
is switched on after a warm-up (a discriminator facing blurry reconstructions learns nothing useful) and weighted
by the ratio of the reconstruction and GAN gradient norms at the decoder's last layer, so neither term swamps
the other whatever their scales. No pretrained perceptual network is used (none can be downloaded here).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """A PatchGAN discriminator (pix2pix): one real/fake logit per overlapping patch.

    Parameters
    ----------
    in_channels
        Image channels (3 for RGB).
    channels
        Width of the first layer; each further layer doubles it (capped at 8x).
    layers
        Number of stride-2 layers; 3 gives a 70 px receptive field, enough for 64-256 px training crops.
    highpass
        Also show the discriminator each image's high-pass (the image minus its 3x3 mean), so that it judges
        pixel-level texture directly, which is where reconstructions fall short of real tiles.
    """

    def __init__(
        self, in_channels: int = 3, channels: int = 64, layers: int = 3, highpass: bool = False
    ) -> None:
        super().__init__()
        self.highpass = highpass
        mods: list[nn.Module] = [
            nn.Conv2d(in_channels * (2 if highpass else 1), channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        c = channels
        for i in range(1, layers + 1):
            nxt = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            # GroupNorm instead of BatchNorm: batches are small on a CPU and the statistics would be noisy
            mods += [
                nn.Conv2d(c, nxt, 4, stride=stride, padding=1, bias=False),
                nn.GroupNorm(min(32, nxt // 4), nxt),
                nn.LeakyReLU(0.2, True),
            ]
            c = nxt
        mods.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*mods)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` images in ``[-1, 1]`` -> ``[B, 1, h, w]`` logits (real > 0)."""
        if self.highpass:
            # x4 brings the detail's spread near the image's, so the first layer's init sees both alike
            images = torch.cat([images, 4.0 * high_pass(images)], dim=1)
        return self.net(images)


def high_pass(images: torch.Tensor) -> torch.Tensor:
    """Each image minus its 3x3 mean (reflect-padded): the pixel-level detail."""
    return images - F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="reflect"), 3, stride=1)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: push real logits above +1 and fake logits below -1."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The autoencoder's adversarial loss: raise the discriminator's logits on reconstructions."""
    return -logits_fake.mean()


def adaptive_weight(
    rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """``||grad rec|| / ||grad gan||`` at ``last_layer`` (the decoder's output conv weight), detached.

    Scales the GAN term so its gradient at the decoder output is as large as the reconstruction gradient.
    """
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0.0, max_weight).detach()


class Adversary:
    """The adversarial term of an autoencoder run (``autoencoder.disc_*``): the discriminator, its optimizer and
    its schedule. The discriminator learns from step ``disc_start``; the autoencoder feels it (weighted
    adaptively, times ``disc_weight``) from ``disc_warmup`` steps later."""

    def __init__(self, sec: Any, device: torch.device) -> None:
        self.disc = (
            PatchDiscriminator(3, sec.disc_channels, sec.disc_layers, sec.disc_highpass).to(device).train()
        )
        # the GAN literature's betas: a short momentum keeps the two players from overshooting
        self.opt = torch.optim.AdamW(
            self.disc.parameters(), lr=sec.disc_lr or sec.lr, betas=(0.5, 0.9), weight_decay=0
        )
        self.start, self.warmup, self.weight = sec.disc_start, sec.disc_warmup, sec.disc_weight

    def learns(self, step: int) -> bool:
        return step >= self.start

    def judges(self, step: int) -> bool:
        """Whether the autoencoder's loss has the adversarial term at ``step``."""
        return step >= self.start + self.warmup

    def generator_loss(self, reconstruction: torch.Tensor) -> torch.Tensor:
        self.disc.requires_grad_(False)  # the generator step needs no D grads
        loss = generator_loss(self.disc(reconstruction))
        self.disc.requires_grad_(True)
        return loss

    def term_weight(
        self, rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor
    ) -> torch.Tensor:
        return adaptive_weight(rec_loss, gan_loss, last_layer) * self.weight

    def step(
        self,
        real: torch.Tensor,
        reconstruction: torch.Tensor,
        autocast: contextlib.AbstractContextManager[Any],
    ) -> torch.Tensor:
        """One discriminator update; returns its hinge loss."""
        with autocast:
            d_loss = hinge_d_loss(self.disc(real), self.disc(reconstruction.detach()))
        self.opt.zero_grad(set_to_none=True)
        d_loss.float().backward()
        self.opt.step()
        return d_loss

    def state_dict(self) -> dict[str, Any]:
        return {"disc": self.disc.state_dict(), "disc_optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["disc_optimizer"])
