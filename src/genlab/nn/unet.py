"""The pix2pix U-Net generator (Isola et al. 2017, appendix 6.1.1): encoder-decoder with skips."""

from __future__ import annotations

import math

import torch
from torch import nn

from genlab.nn.layers import NormKind, conv_bias, norm_layer


def unet_depth(image_size: int) -> int:
    """Downsamplings that take the image to 1x1 (8 at 256 px, 6 at 64 px); the size must be a power of two."""
    depth = int(round(math.log2(image_size)))
    if 2**depth != image_size or depth < 3:
        raise ValueError(f"the U-Net needs a power-of-two image size of at least 8, got {image_size}")
    return depth


def reference_dropout_blocks(depth: int) -> set[int]:
    """Decoder blocks (0 = innermost) with dropout in the reference pix2pix U-Net: the `depth - 5` blocks of
    8*width channels between the innermost block and the outer five levels (junyanz `UnetGenerator`).

    At 32 px (depth 5) there are none: dropout there would act on 1x1 to 4x4 maps that the norm renormalises.

    >>> sorted(reference_dropout_blocks(8)), sorted(reference_dropout_blocks(5))
    ([1, 2, 3], [])
    """
    return set(range(1, max(1, depth - 4)))


class UNetGenerator(nn.Module):
    """U-Net: `depth` stride-2 4x4 convs (C64-C128-C256-C512-C512...) mirrored by transposed convs with skips.

    Encoder widths double from `width` up to 8*width. The innermost and outermost encoder blocks have no norm
    (a 1x1 map cannot be instance-normalised). Dropout 0.5, the noise source of pix2pix: with `dropout_blocks`
    None, where the reference implementation puts it (`reference_dropout_blocks`: the depth - 5 decoder blocks
    after the innermost, so none at 32 px, 3 at 256 px); with an integer N, in the N innermost decoder blocks.
    The output goes through Tanh into [-1, 1].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int,
        width: int = 64,
        norm: NormKind = "instance",
        dropout: float = 0.5,
        dropout_blocks: int | None = None,
    ) -> None:
        super().__init__()
        with_dropout = (
            reference_dropout_blocks(depth) if dropout_blocks is None else set(range(dropout_blocks))
        ) if dropout > 0 else set()
        widths = [width * min(2**level, 8) for level in range(depth)]
        bias = conv_bias(norm)
        self.encoder = nn.ModuleList()
        for level in range(depth):
            layers: list[nn.Module] = [] if level == 0 else [nn.LeakyReLU(0.2)]
            channels_in = in_channels if level == 0 else widths[level - 1]
            layers.append(nn.Conv2d(channels_in, widths[level], 4, stride=2, padding=1, bias=bias))
            if 0 < level < depth - 1:
                layers.append(norm_layer(norm, widths[level]))
            self.encoder.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList()
        for index in range(depth):  # index 0 is the innermost decoder block
            level = depth - 1 - index
            channels_in = widths[level] if index == 0 else 2 * widths[level]  # skip concatenated
            outermost = level == 0
            channels_out = out_channels if outermost else widths[level - 1]
            layers = [
                nn.ReLU(),
                nn.ConvTranspose2d(channels_in, channels_out, 4, stride=2, padding=1, bias=bias or outermost),
            ]
            if outermost:
                layers.append(nn.Tanh())
            else:
                layers.append(norm_layer(norm, channels_out))
                if index in with_dropout:
                    layers.append(nn.Dropout(dropout))
            self.decoder.append(nn.Sequential(*layers))

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        skips = []
        hidden = source  # (B, C_in, H, W)
        for block in self.encoder:
            hidden = block(hidden)
            skips.append(hidden)
        hidden = skips.pop()  # the innermost code, (B, 8*width, 1, 1)
        for index, block in enumerate(self.decoder):
            if index > 0:
                hidden = torch.cat([hidden, skips.pop()], dim=1)
            hidden = block(hidden)
        return hidden  # (B, C_out, H, W)
