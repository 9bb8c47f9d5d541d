"""DCGAN networks (Radford et al. 2016, section 3 and figure 1), with the CGAN conditionings (Mirza & Osindero 2014).

- `DCGANGenerator`: z (+ a class embedding) -> 4x4 by a transposed conv, then stride-2 transposed convs with
  BatchNorm and ReLU up to the image size, Tanh.
- `DCGANDiscriminator`: stride-2 convs down to 4x4 (BatchNorm except on the first, LeakyReLU 0.2), a 4x4 conv
  to one logit per image; class-conditional through one-hot label maps or a projection term.
- `TranslationGenerator`: the pix2pix U-Net on (source, z) for image-conditional CGANs.
The depth follows the image size: one stride-2 layer per doubling from 4x4 (2 at 16 px, 4 at 64 px, 6 at 256 px).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from genlab.nn.layers import NormKind, conv_bias, norm_layer
from genlab.nn.unet import UNetGenerator, unet_depth
from genlab.utils import GenlabError

LabelConditioning = Literal["channels", "projection"]  # how a class-conditional D sees the label


def dcgan_upsamplings(image_size: int) -> int:
    """Stride-2 layers between the 4x4 map and the image (2 at 16 px, 4 at 64 px); a power of two >= 16 only.

    >>> dcgan_upsamplings(64)
    4
    """
    levels = int(round(math.log2(image_size))) if image_size > 0 else 0
    if image_size < 16 or 2**levels != image_size:
        raise GenlabError(
            f"data.image_size: the DCGAN networks need a power of two of at least 16 (16, 32, 64, 128, 256), "
            f"got {image_size}"
        )
    return levels - 2


def level_widths(width: int, levels: int) -> list[int]:
    """Channels per resolution from the image side inward: width, 2*width, ... capped at 8*width."""
    return [width * min(2**level, 8) for level in range(levels)]


class DCGANGenerator(nn.Module):
    """z (B, latent_dim) [+ labels (B,)] -> images (B, C, S, S) in [-1, 1].

    At 64 px with width 128 this is the paper's figure 1: 100z -> 4x4x1024 -> 8x8x512 -> 16x16x256 -> 32x32x128
    -> 64x64x3. A class label is embedded and concatenated to z (CGAN, Mirza & Osindero 2014, section 4.1).
    """

    def __init__(
        self,
        latent_dim: int,
        out_channels: int,
        image_size: int,
        width: int = 64,
        num_classes: int = 0,
        embedding_dim: int = 32,
        norm: NormKind = "batch",
    ) -> None:
        super().__init__()
        upsamplings = dcgan_upsamplings(image_size)
        widths = level_widths(width, upsamplings)[::-1]  # from the 4x4 map outward
        self.embedding = nn.Embedding(num_classes, embedding_dim) if num_classes else None
        code_dim = latent_dim + (embedding_dim if num_classes else 0)
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(code_dim, widths[0], 4, stride=1, padding=0, bias=bias),  # 1x1 -> 4x4
            norm_layer(norm, widths[0]),
            nn.ReLU(),
        ]
        for channels_in, channels_out in zip(widths, widths[1:]):
            layers += [
                nn.ConvTranspose2d(channels_in, channels_out, 4, stride=2, padding=1, bias=bias),
                norm_layer(norm, channels_out),
                nn.ReLU(),
            ]
        layers += [nn.ConvTranspose2d(widths[-1], out_channels, 4, stride=2, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        code = z  # (B, latent_dim)
        if self.embedding is not None:
            code = torch.cat([z, self.embedding(labels).to(z.dtype)], dim=1)  # (B, latent_dim + embedding_dim)
        return self.net(code[:, :, None, None])  # (B, C, S, S)


class DCGANDiscriminator(nn.Module):
    """images (B, C, S, S) [+ labels (B,)] -> one logit per image (B,).

    Class-conditional by `conditioning`: "channels" appends the label as one-hot input maps (the CGAN paper's
    y fed to D beside x, section 4.1, as conditional DCGANs do); "projection" adds <embed(y), h> to the logit,
    h the features summed over the final 4x4 map (Miyato & Koyama 2018, eq. 3).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        width: int = 64,
        num_classes: int = 0,
        norm: NormKind = "batch",
        conditioning: LabelConditioning = "channels",
    ) -> None:
        super().__init__()
        if conditioning not in ("channels", "projection"):
            raise ValueError(f"unknown label conditioning {conditioning!r} (valid: channels, projection)")
        widths = level_widths(width, dcgan_upsamplings(image_size))
        bias = conv_bias(norm)
        self.num_classes = num_classes
        self.label_channels = num_classes if conditioning == "channels" else 0
        first = nn.Conv2d(in_channels + self.label_channels, widths[0], 4, stride=2, padding=1)
        layers: list[nn.Module] = [first, nn.LeakyReLU(0.2)]
        for channels_in, channels_out in zip(widths, widths[1:]):
            layers += [
                nn.Conv2d(channels_in, channels_out, 4, stride=2, padding=1, bias=bias),
                norm_layer(norm, channels_out),
                nn.LeakyReLU(0.2),
            ]
        self.features = nn.Sequential(*layers)  # -> (B, widths[-1], 4, 4)
        self.logit = nn.Conv2d(widths[-1], 1, 4, stride=1, padding=0)  # 4x4 -> 1x1
        self.projection = nn.Embedding(num_classes, widths[-1]) if num_classes and not self.label_channels else None
        if self.projection is not None:  # small, like the convs: a N(0, 1) start would swamp psi(h)
            nn.init.normal_(self.projection.weight, 0.0, 0.02)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_channels:
            maps = F.one_hot(labels, self.num_classes).to(images.dtype)[:, :, None, None]  # (B, K, 1, 1)
            images = torch.cat([images, maps.expand(-1, -1, *images.shape[-2:])], dim=1)  # (B, C + K, S, S)
        features = self.features(images)  # (B, F, 4, 4)
        logits = self.logit(features).flatten()  # (B,)
        if self.projection is not None:
            logits = logits + (self.projection(labels).to(features.dtype) * features.sum(dim=(2, 3))).sum(dim=1)
        return logits


class TranslationGenerator(nn.Module):
    """(source (B, C, S, S), z (B, latent_dim)) -> target (B, C', S, S) in [-1, 1]: an image-conditional CGAN G.

    The pix2pix U-Net (skips carry the source's layout) with z projected to `noise_channels` maps and
    broadcast over the input, BicycleGAN's "add to input" injection (Zhu et al. 2017, section 3.3): the U-Net's
    1x1 bottleneck has no entry point of its own, and an input-level z reaches every decoder level through the skips.
    """

    def __init__(
        self,
        source_channels: int,
        target_channels: int,
        image_size: int,
        latent_dim: int,
        width: int = 64,
        noise_channels: int = 8,
        norm: NormKind = "batch",
    ) -> None:
        super().__init__()
        self.noise_projection = nn.Linear(latent_dim, noise_channels)
        self.unet = UNetGenerator(
            source_channels + noise_channels,
            target_channels,
            depth=unet_depth(image_size),
            width=width,
            norm=norm,
            dropout=0.0,  # z is the noise source, not dropout
        )

    def forward(self, source: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        noise = self.noise_projection(z.to(source.dtype))[:, :, None, None]  # (B, N, 1, 1)
        noise = noise.expand(-1, -1, *source.shape[-2:])  # (B, N, S, S)
        return self.unet(torch.cat([source, noise], dim=1))
