"""Convolutional VAE networks: an encoder to (mu, logvar), a decoder with a Tanh output, and the conditioning
inputs of the CVAE (a source-image feature pyramid for translation, a class-label embedding for generation).

The depth follows the image size: stride-2 4x4 convs take an H-pixel image down to a 4x4 map (2 halvings at
16 px, 3 at 32, 4 at 64, 6 at 256); a linear layer maps that map to the latent vector and back. A decoder
stage can take a condition map at each resolution (4, 8, ..., H): a plain decoder of z alone only draws blur
for translation, so the source features are concatenated into every stage (a U-Net-free CVAE decoder).

Example:
    >>> encoder, decoder = VAEEncoder(3, 16, 32, width=8), VAEDecoder(16, 3, 32, width=8)
    >>> mu, logvar = encoder(torch.zeros(2, 3, 32, 32))
    >>> decoder(mu).shape
    torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genlab.utils import GenlabError

BOTTOM = 4  # side of the smallest feature map, where the linear layers meet the latent vector


def vae_depth(image_size: int) -> int:
    """Stride-2 halvings from `image_size` down to the 4x4 bottom map; the size must be a power of two >= 8."""
    depth = int(round(math.log2(image_size))) if image_size > 0 else 0
    if image_size < 8 or 2**depth != image_size:
        raise GenlabError(
            f"data.image_size={image_size}: the VAE needs a power-of-two image size of at least 8 "
            "(e.g. 16, 32, 64, 128, 256; use 32 for 28-pixel Fashion-MNIST)"
        )
    return depth - 2


def level_widths(width: int, depth: int) -> list[int]:
    """Channels at resolution H / 2^l for l = 0..depth: `width` at full size, doubling per halving up to 8x."""
    return [width * min(2 ** max(level - 1, 0), 8) for level in range(depth + 1)]


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm of up to 8 groups: per-sample statistics, so outputs never depend on the rest of the batch."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


def down_block(channels_in: int, channels_out: int) -> nn.Sequential:
    """Conv 4x4 stride 2 (halves H and W), GroupNorm, LeakyReLU(0.2)."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 4, stride=2, padding=1),
        _group_norm(channels_out),
        nn.LeakyReLU(0.2),
    )


def up_block(channels_in: int, channels_out: int) -> nn.Sequential:
    """Transposed conv 4x4 stride 2 (doubles H and W), GroupNorm, ReLU, then a 3x3 conv to smooth the
    checkerboard of the transposed conv."""
    return nn.Sequential(
        nn.ConvTranspose2d(channels_in, channels_out, 4, stride=2, padding=1),
        _group_norm(channels_out),
        nn.ReLU(),
        nn.Conv2d(channels_out, channels_out, 3, padding=1),
        _group_norm(channels_out),
        nn.ReLU(),
    )


class VAEEncoder(nn.Module):
    """q(z | x, cond): an image (B, C, H, W) with `cond_channels` condition maps concatenated -> (mu, logvar).

    Both outputs are (B, latent_dim); logvar is the log of the diagonal posterior variance.
    """

    def __init__(self, in_channels: int, latent_dim: int, image_size: int, width: int = 32, cond_channels: int = 0):
        super().__init__()
        depth = vae_depth(image_size)
        widths = level_widths(width, depth)
        self.stem = nn.Sequential(nn.Conv2d(in_channels + cond_channels, widths[0], 3, padding=1), nn.LeakyReLU(0.2))
        self.blocks = nn.Sequential(*[down_block(widths[level], widths[level + 1]) for level in range(depth)])
        self.to_moments = nn.Linear(widths[-1] * BOTTOM * BOTTOM, 2 * latent_dim)

    def forward(self, image: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = image if cond is None else torch.cat([image, cond], dim=1)  # (B, C + C_cond, H, W)
        hidden = self.blocks(self.stem(hidden))  # (B, widths[-1], 4, 4)
        mu, logvar = self.to_moments(hidden.flatten(1)).chunk(2, dim=1)  # each (B, latent_dim)
        return mu, logvar


class VAEDecoder(nn.Module):
    """p(x | z, cond): a latent (B, latent_dim + extra_dim) -> an image (B, C, H, W) in [-1, 1] (Tanh).

    `cond_channels[k]` condition channels are concatenated into the stage at resolution 4 * 2^k, for
    k = 0..depth (the last one at full size, just before the output conv); () means no condition maps.
    """

    def __init__(
        self,
        latent_dim: int,
        out_channels: int,
        image_size: int,
        width: int = 32,
        cond_channels: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        depth = vae_depth(image_size)
        widths = level_widths(width, depth)
        cond_channels = tuple(cond_channels) or (0,) * (depth + 1)
        if len(cond_channels) != depth + 1:
            raise ValueError(f"need {depth + 1} condition widths (one per resolution), got {len(cond_channels)}")
        self.bottom_channels = widths[-1]
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, widths[-1] * BOTTOM * BOTTOM), nn.ReLU())
        # Stage k upsamples resolution 4 * 2^k (level depth - k) to the next level up.
        self.blocks = nn.ModuleList(
            up_block(widths[depth - k] + cond_channels[k], widths[depth - k - 1]) for k in range(depth)
        )
        self.to_image = nn.Conv2d(widths[0] + cond_channels[depth], out_channels, 3, padding=1)

    def logits(self, z: torch.Tensor, cond: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The pre-Tanh output (B, C, H, W): tanh of it is the image, sigmoid(2 * it) the image in [0, 1]."""
        hidden = self.from_latent(z).view(len(z), self.bottom_channels, BOTTOM, BOTTOM)  # (B, C_bottom, 4, 4)
        for k, block in enumerate(self.blocks):
            if cond is not None:
                hidden = torch.cat([hidden, cond[k]], dim=1)
            hidden = block(hidden)  # (B, C_k, 8 * 2^k, 8 * 2^k)
        if cond is not None:
            hidden = torch.cat([hidden, cond[-1]], dim=1)  # (B, width + C_cond, H, W)
        return self.to_image(hidden)

    def forward(self, z: torch.Tensor, cond: list[torch.Tensor] | None = None) -> torch.Tensor:
        return torch.tanh(self.logits(z, cond))


class SourcePyramid(nn.Module):
    """Features of the source image at every decoder resolution: [(B, c_k, 4 * 2^k, 4 * 2^k) for k = 0..depth],
    coarsest first, so the CVAE decoder p(x | z, source) sees the source's layout at each scale."""

    def __init__(self, in_channels: int, image_size: int, width: int = 32) -> None:
        super().__init__()
        depth = vae_depth(image_size)
        self.widths = level_widths(width, depth)  # finest first
        self.stem = nn.Sequential(nn.Conv2d(in_channels, self.widths[0], 3, padding=1), nn.LeakyReLU(0.2))
        self.blocks = nn.ModuleList(down_block(self.widths[level], self.widths[level + 1]) for level in range(depth))

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of each pyramid map, coarsest first (the order VAEDecoder's `cond_channels` takes)."""
        return tuple(reversed(self.widths))

    def forward(self, source: torch.Tensor) -> list[torch.Tensor]:
        features = [self.stem(source)]  # (B, width, H, W)
        for block in self.blocks:
            features.append(block(features[-1]))  # halves each time, down to (B, C_bottom, 4, 4)
        return features[::-1]


class LabelConditioning(nn.Module):
    """A learned embedding of class labels 0..K-1 (B,) -> (B, dim), concatenated to z for the decoder and
    broadcast as constant maps into the encoder input and every decoder stage."""

    def __init__(self, num_classes: int, dim: int = 16) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_classes, dim)
        self.dim = dim

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding(labels)  # (B, dim)

    @staticmethod
    def maps(embedded: torch.Tensor, size: int) -> torch.Tensor:
        """(B, dim) -> (B, dim, size, size), the embedding repeated at every pixel."""
        return embedded[:, :, None, None].expand(-1, -1, size, size)

    def pyramid(self, embedded: torch.Tensor, image_size: int) -> list[torch.Tensor]:
        """The embedding as maps at each decoder resolution 4, 8, ..., image_size (coarsest first)."""
        depth = vae_depth(image_size)
        return [self.maps(embedded, BOTTOM * 2**k) for k in range(depth + 1)]
