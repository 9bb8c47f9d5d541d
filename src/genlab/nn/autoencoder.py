"""The KL-regularised convolutional autoencoder of latent diffusion (Rombach et al. 2022, section 3)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.nn.diffusion_unet import DiffusionUNetConfig, Downsample, ResidualBlock, Upsample, _norm

_BLOCK = DiffusionUNetConfig()  # pre-activation GroupNorm residual blocks, no time embedding


class KLAutoencoder(nn.Module):
    """Images (B, C, H, W) -> a diagonal Gaussian over latents (B, z, H/f, W/f) -> images.

    `factor` (4 or 8) is the spatial downsampling; widths double at each halving, capped at 4x `width`.
    """

    def __init__(self, channels: int, latent_channels: int = 4, factor: int = 4, width: int = 64) -> None:
        super().__init__()
        halvings = int(round(math.log2(factor)))
        if 2**halvings != factor or halvings < 1:
            raise ValueError(f"the autoencoder factor must be a power of two >= 2, got {factor}")
        self.factor = factor
        self.latent_channels = latent_channels
        widths = [width * min(2**level, 4) for level in range(halvings + 1)]
        encoder: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1)]
        for level in range(halvings):
            encoder += [
                ResidualBlock(widths[level], widths[level + 1], 0, _BLOCK),
                Downsample(widths[level + 1], "conv"),
            ]
        encoder += [
            ResidualBlock(widths[-1], widths[-1], 0, _BLOCK),
            _norm("group", widths[-1]),
            nn.SiLU(),
            nn.Conv2d(widths[-1], 2 * latent_channels, 3, padding=1),
        ]
        self.encoder = nn.ModuleList(encoder)
        decoder: list[nn.Module] = [
            nn.Conv2d(latent_channels, widths[-1], 3, padding=1),
            ResidualBlock(widths[-1], widths[-1], 0, _BLOCK),
        ]
        for level in reversed(range(halvings)):
            decoder += [
                Upsample(widths[level + 1], "nearest-conv"),
                ResidualBlock(widths[level + 1], widths[level], 0, _BLOCK),
            ]
        decoder += [_norm("group", widths[0]), nn.SiLU(), nn.Conv2d(widths[0], channels, 3, padding=1)]
        self.decoder = nn.ModuleList(decoder)

    @staticmethod
    def _run(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            x = layer(x, None) if isinstance(layer, ResidualBlock) else layer(x)
        return x

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters (mu, logvar), each (B, z, H/f, W/f); logvar clamped for stability."""
        mu, logvar = self._run(self.encoder, images).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, z, h, w) -> images (B, C, h*f, w*f), unbounded (clamp to [-1, 1] for display)."""
        return self._run(self.decoder, latents)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """Reconstruct through a reparameterised latent sample: returns (reconstruction, mu, logvar)."""
        mu, logvar = self.encode(images)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        latents = mu + (0.5 * logvar).exp() * noise  # reparameterisation (Kingma & Welling 2014, eq. 10)
        return self.decode(latents), mu, logvar


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean L1 or L2 between reconstruction and images."""
    if kind == "l1":
        return F.l1_loss(reconstruction.float(), images.float())
    return F.mse_loss(reconstruction.float(), images.float())
