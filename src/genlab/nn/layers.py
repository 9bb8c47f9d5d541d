"""Small building blocks shared by the GAN-family networks: norm layers by name and DCGAN-style init."""

from __future__ import annotations

from typing import Literal

from torch import nn

NormKind = Literal["instance", "batch", "none"]


def norm_layer(kind: NormKind, channels: int) -> nn.Module:
    """InstanceNorm (no affine, no running stats, as pix2pix/CycleGAN), BatchNorm, or identity."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (valid: instance, batch, none)")


def conv_bias(kind: NormKind) -> bool:
    """A conv followed by BatchNorm needs no bias (BN's shift replaces it); instance norm without affine does."""
    return kind != "batch"


def init_gan_weights(module: nn.Module, std: float = 0.02) -> None:
    """pix2pix / DCGAN init: conv weights ~ N(0, 0.02), BN weights ~ N(1, 0.02), biases 0."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(layer.weight, 0.0, std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, std)
            nn.init.zeros_(layer.bias)
