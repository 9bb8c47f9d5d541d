"""The CycleGAN ResNet generator (Zhu et al. 2017, appendix 7.2; after Johnson et al. 2016).

c7s1-k, d2k, d4k, N x R4k, u2k, uk, c7s1-out: a 7x7 stem, two stride-2 downsamplings, N residual blocks with
reflection padding at 1/4 resolution, two stride-2 transposed-conv upsamplings, a 7x7 head and Tanh.
"""

from __future__ import annotations

import torch
from torch import nn

from genlab.nn.layers import NormKind, conv_bias, norm_layer


def resnet_blocks(image_size: int) -> int:
    """Residual blocks by image size, as the paper: 9 at 256 px and up, 6 below (128 px and less)."""
    return 9 if image_size >= 256 else 6


class ResidualBlock(nn.Module):
    """R-k: two reflection-padded 3x3 convs with the same k channels, added to the input (shape preserved)."""

    def __init__(self, channels: int, norm: NormKind = "instance", dropout: float = 0.0) -> None:
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            norm_layer(norm, channels),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)  # (B, k, h, w)


class ResnetGenerator(nn.Module):
    """Image -> image of the same size (a multiple of 4), values in [-1, 1].

    >>> ResnetGenerator(3, 3, width=8, n_blocks=2)(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 3, 32, 32])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 64,
        n_blocks: int = 9,
        norm: NormKind = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        bias = conv_bias(norm)
        # c7s1-k: (B, in, H, W) -> (B, k, H, W)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, width, 7, bias=bias),
            norm_layer(norm, width),
            nn.ReLU(inplace=True),
        ]
        # d2k, d4k: (B, k, H, W) -> (B, 2k, H/2, W/2) -> (B, 4k, H/4, W/4)
        channels = width
        for _ in range(2):
            layers += [
                nn.Conv2d(channels, channels * 2, 3, stride=2, padding=1, bias=bias),
                norm_layer(norm, channels * 2),
                nn.ReLU(inplace=True),
            ]
            channels *= 2
        # N x R4k: (B, 4k, H/4, W/4), unchanged
        layers += [ResidualBlock(channels, norm, dropout) for _ in range(n_blocks)]
        # u2k, uk: (B, 4k, H/4, W/4) -> (B, 2k, H/2, W/2) -> (B, k, H, W)
        for _ in range(2):
            layers += [
                nn.ConvTranspose2d(channels, channels // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                norm_layer(norm, channels // 2),
                nn.ReLU(inplace=True),
            ]
            channels //= 2
        # c7s1-out + Tanh: (B, k, H, W) -> (B, out, H, W) in [-1, 1]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.n_blocks = n_blocks

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] % 4 or images.shape[-2] % 4:
            raise ValueError(f"ResnetGenerator needs sides divisible by 4, got {tuple(images.shape[-2:])}")
        return self.net(images)
