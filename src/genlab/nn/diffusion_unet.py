"""The diffusion denoiser: a U-Net with residual blocks, a time (and label) embedding, self-attention and skips.

It is only a network, `forward(x_t, t, cond) -> output` of the shape of x_t; the diffusion process (schedule,
targets, loss, sampling) lives in `genlab.diffusion` and is handed this module (DESIGN.md section 5).

Layout (Keras DDIM / seed 000 table 4, which guided-diffusion's layout also fits): `channel_mults` gives one
width per level, the last being the bottleneck. Each level above the bottleneck runs `num_res_blocks` residual
blocks, each output saved as a skip, then halves the resolution; the bottleneck runs `num_res_blocks` blocks;
the decoder mirrors the encoder, upsampling first and then concatenating one skip before each residual block.
An image therefore needs a height and width divisible by 2^(levels - 1) (16 for five levels; 28 px works only
with at most three levels).

Example:
    >>> net = DiffusionUNet(quick_unet_config(image_channels=1, image_size=32))
    >>> net(torch.randn(2, 1, 32, 32), torch.tensor([3, 999])).shape
    torch.Size([2, 1, 32, 32])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import non_negative, positive, ranged, unit_interval
from genlab.nn.embeddings import LabelEmbedding, seed_noise_embedding, timestep_embedding
from genlab.utils import GenlabError

SEED_EMBEDDING_DIM = 32  # seed 000, table 4 row 1-2-1: 16 frequencies, sin and cos


@dataclass(frozen=True)
class DiffusionUNetConfig:
    """Every choice of the diffusion U-Net; see `quick_unet_config`, `ddpm_unet_config` and `seed_unet_config`."""

    in_channels: int = positive(3)
    out_channels: int = positive(3)
    base_width: int = positive(64)  # stem width; level widths are base_width * channel_mults[i]
    channel_mults: tuple[int, ...] = ranged((1, 2, 2, 2), 1, 64)  # the last entry is the bottleneck
    num_res_blocks: int = positive(2)  # per level, encoder, bottleneck and decoder alike
    attention_resolutions: tuple[int, ...] = ranged((16,), 1)  # in pixels at `image_size`; () = no attention
    image_size: int = positive(32)  # the size the attention resolutions refer to; other divisible sizes also run
    attention_heads: int = positive(4)
    dropout: float = unit_interval(0.0, high_open=True)
    num_classes: int = non_negative(0)  # 0 = no labels; else a label embedding with null index num_classes (CFG)
    cond_channels: int = non_negative(0)  # 0 = none; else a source image of this many channels concatenated to x_t
    norm: Literal["group", "batch"] = "group"
    activation: Literal["silu"] = "silu"  # SiLU = Swish
    downsample: Literal["conv", "avgpool"] = "conv"
    upsample: Literal["nearest-conv", "bilinear"] = "nearest-conv"
    embedding: Literal["sinusoidal", "seed-variance"] = "sinusoidal"
    # "blocks": an MLP of the embedding is added inside every residual block (DDPM); "input": the raw embedding
    # is broadcast over the image and concatenated to the stem output (seed 000 table 4, rows 1-2-2 and 2).
    embedding_injection: Literal["blocks", "input"] = "blocks"
    # "preact": norm-act-conv, +embedding, norm-act-dropout-conv (DDPM / guided-diffusion);
    # "seed": norm-conv-act-conv (seed 000 table 4, block R), the skip a 1x1 conv when the width changes.
    residual_block: Literal["preact", "seed"] = "preact"
    io_kernel: int = positive(3)  # kernel of the stem and output convs (the seed uses 1x1: C32k1, C3k1)
    # Maps integer steps to diffusion time (t + 1) / num_timesteps for the "seed-variance" embedding.
    num_timesteps: int = positive(1000)

    @property
    def widths(self) -> tuple[int, ...]:
        """Channel width of each level, the bottleneck last."""
        return tuple(self.base_width * mult for mult in self.channel_mults)

    @property
    def levels(self) -> int:
        return len(self.channel_mults)

    def resolution(self, level: int) -> int:
        """Image size at `level` when the input is `image_size`."""
        return self.image_size // 2**level

    def validate(self) -> None:
        """Raise GenlabError naming the first bad key."""
        choices = {
            "norm": ("group", "batch"),
            "activation": ("silu",),
            "downsample": ("conv", "avgpool"),
            "upsample": ("nearest-conv", "bilinear"),
            "embedding": ("sinusoidal", "seed-variance"),
            "embedding_injection": ("blocks", "input"),
            "residual_block": ("preact", "seed"),
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise GenlabError(f"unet.{key}: {getattr(self, key)!r} is not one of {', '.join(valid)}")
        for key in ("in_channels", "out_channels", "base_width", "num_res_blocks", "attention_heads"):
            if getattr(self, key) < 1:
                raise GenlabError(f"unet.{key} must be at least 1, got {getattr(self, key)}")
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise GenlabError(f"unet.channel_mults must be positive integers, got {self.channel_mults}")
        if self.num_classes < 0 or self.cond_channels < 0:
            raise GenlabError("unet.num_classes and unet.cond_channels must be >= 0")
        if self.num_classes and self.cond_channels:
            raise GenlabError("unet: condition on labels (num_classes) or on an image (cond_channels), not both")
        if self.io_kernel % 2 == 0:
            raise GenlabError(f"unet.io_kernel must be odd, got {self.io_kernel}")
        if not 0 <= self.dropout < 1:
            raise GenlabError(f"unet.dropout must be in [0, 1), got {self.dropout}")
        multiple = 2 ** (self.levels - 1)
        if self.image_size % multiple:
            raise GenlabError(
                f"unet.image_size {self.image_size} must be divisible by 2^(levels-1) = {multiple} "
                f"for {self.levels} levels"
            )
        level_sizes = [self.resolution(level) for level in range(self.levels)]
        for size in self.attention_resolutions:
            if size not in level_sizes:
                raise GenlabError(f"unet.attention_resolutions: {size} px is not a level size (levels: {level_sizes})")
        for level, width in enumerate(self.widths):
            if self.resolution(level) in self.attention_resolutions and width % self.attention_heads:
                raise GenlabError(f"unet.attention_heads {self.attention_heads} must divide width {width}")


def quick_unet_config(
    image_channels: int, image_size: int = 32, cond_channels: int = 0, num_classes: int = 0
) -> DiffusionUNetConfig:
    """A small net for CPU runs: width 32, mults 1-1-2-4(-4...), one residual block per level, attention at
    8 px and below. Levels are added while the size halves evenly and stays >= 4 px, so 28 px (three levels,
    7 px bottleneck) works too. The channels grow only where the maps are small, which buys parameters cheaply:
    1.0M parameters and 0.7 GFLOP per image per training step at 32 px (1 channel), 2.2M and 3.1 GFLOP at 64 px
    (3 channels + 3 condition channels)."""
    levels, size = 1, image_size
    while size % 2 == 0 and size // 2 >= 4:
        levels, size = levels + 1, size // 2
    mults = tuple(min(2 ** max(level - 1, 0), 4) for level in range(levels))
    return DiffusionUNetConfig(
        in_channels=image_channels,
        out_channels=image_channels,
        base_width=32,
        channel_mults=mults,
        num_res_blocks=1,
        attention_resolutions=tuple(image_size // 2**level for level in range(levels) if image_size // 2**level <= 8),
        image_size=image_size,
        num_classes=num_classes,
        cond_channels=cond_channels,
    )


def ddpm_unet_config(
    image_channels: int, image_size: int = 32, cond_channels: int = 0, num_classes: int = 0
) -> DiffusionUNetConfig:
    """DDPM's networks (Ho et al. 2020, appendix B): width 128, two residual blocks per level, attention at
    16 px, dropout 0.1; mults 1-2-2-2 up to 64 px (CIFAR-10), 1-1-2-2-4-4 above (LSUN / CelebA-HQ 256)."""
    mults = (1, 2, 2, 2) if image_size <= 64 else (1, 1, 2, 2, 4, 4)
    return DiffusionUNetConfig(
        in_channels=image_channels,
        out_channels=image_channels,
        base_width=128,
        channel_mults=mults,
        num_res_blocks=2,
        attention_resolutions=(16,) if 16 in [image_size // 2**i for i in range(len(mults))] else (),
        image_size=image_size,
        dropout=0.1,
        num_classes=num_classes,
        cond_channels=cond_channels,
    )


def seed_unet_config(
    image_channels: int = 3, cond_channels: int = 0, image_size: int = 64, num_classes: int = 0
) -> DiffusionUNetConfig:
    """The seed report's DDIM network (seed 000, table 4), the Keras DDIM example with the seed's widths.

    C32k1 stem; the 32-d sinusoidal embedding broadcast and concatenated (64 channels); D64, D128, D256, D256
    (two BN-Swish residual blocks each, then 2x2 average pooling: 64 -> 4 px); R512 x2 at the bottleneck;
    U256, U256, U128, U64 (bilinear x2, then two residual blocks each fed one skip); C3k1 out. In the mults
    below the stem is 32 and the levels are 32 x (2, 4, 8, 8) plus the 32 x 16 = 512 bottleneck. No attention.
    With `cond_channels` the source image is concatenated to x_t (the seed's conditional DDIM).
    """
    return DiffusionUNetConfig(
        in_channels=image_channels,
        out_channels=image_channels,
        base_width=32,
        channel_mults=(2, 4, 8, 8, 16),
        num_res_blocks=2,
        attention_resolutions=(),
        image_size=image_size,
        num_classes=num_classes,
        cond_channels=cond_channels,
        norm="batch",
        downsample="avgpool",
        upsample="bilinear",
        embedding="seed-variance",
        embedding_injection="input",
        residual_block="seed",
        io_kernel=1,
    )


def _norm(kind: str, channels: int) -> nn.Module:
    """GroupNorm with up to 32 groups of at least 4 channels each, or BatchNorm.

    At least 4 channels per group matters: the embedding is added as one shift per channel before `norm2`,
    and a group of one channel (GroupNorm(32, 32) in a width-32 net) would subtract that shift away entirely.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    most = max(1, min(32, channels // 4))
    groups = max(g for g in range(1, most + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def _zero(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so a residual branch starts as the identity (guided-diffusion `zero_module`)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ResidualBlock(nn.Module):
    """Two 3x3 convs with the (time + label) embedding added between them, plus a (1x1 when needed) skip."""

    def __init__(
        self, channels_in: int, channels_out: int, embedding_dim: int, config: DiffusionUNetConfig
    ) -> None:
        super().__init__()
        self.preact = config.residual_block == "preact"
        self.norm1 = _norm(config.norm, channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.embedding = nn.Linear(embedding_dim, channels_out) if embedding_dim else None
        self.norm2 = _norm(config.norm, channels_out) if self.preact else nn.Identity()
        self.dropout = nn.Dropout(config.dropout) if self.preact else nn.Identity()
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        if self.preact:
            _zero(self.conv2)  # the block starts as its skip, which keeps deep nets stable at init
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None) -> torch.Tensor:
        # x: (B, C_in, H, W); embedding: (B, E) or None.
        # Sampling spends more time on the elementwise passes than the FLOPs suggest (each fresh activation is
        # new memory), so the activations run in place when no gradient is kept (a norm's output is its own).
        # The additions are in place always: they write a conv's output, which no backward pass reads.
        in_place = not torch.is_grad_enabled()
        if self.preact:
            hidden = self.conv1(F.silu(self.norm1(x), inplace=in_place))
        else:
            hidden = self.conv1(self.norm1(x))
        if self.embedding is not None and embedding is not None:
            hidden += self.embedding(F.silu(embedding))[:, :, None, None]
        hidden = F.silu(self.norm2(hidden), inplace=in_place)
        hidden = self.conv2(self.dropout(hidden))
        return hidden.add_(self.skip(x))  # (B, C_out, H, W)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual (DDPM at 16 px; Vaswani et al.)."""

    def __init__(self, channels: int, heads: int, norm: str) -> None:
        super().__init__()
        self.heads = heads
        self.norm = _norm(norm, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        # The 1x1 convs run as linear maps over the pixels as tokens, so q, k and v come out with the head
        # dimension contiguous: the layout the fused attention kernels need (with channels first they fall back
        # to the unfused softmax(Q K^T) V).
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        qkv = F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias)  # (B, HW, 3C)
        qkv = qkv.view(batch, height * width, 3, self.heads, channels // self.heads)
        query, key, value = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # each (B, heads, HW, C/heads)
        attended = F.scaled_dot_product_attention(query, key, value)  # (B, heads, HW, C/heads)
        attended = attended.transpose(1, 2).reshape(batch, height * width, channels)  # (B, HW, C)
        out = F.linear(attended, self.out.weight.flatten(1), self.out.bias)  # (B, HW, C)
        return x + out.transpose(1, 2).unflatten(2, (height, width))  # a strided view: no copy before the add


class Downsample(nn.Module):
    """Halve the resolution: a stride-2 3x3 conv or 2x2 average pooling (the seed)."""

    def __init__(self, channels: int, kind: str) -> None:
        super().__init__()
        self.layer = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if kind == "conv" else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _fold_taps(weight: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3 taps of a kernel along `dim` seen from a 2x nearest-upsampled input: 2 taps per output phase.

    Output row 2i reads upsampled rows 2i-1, 2i, 2i+1 = input rows i-1, i, i (taps w0 | w1 + w2); output row
    2i+1 reads input rows i, i, i+1 (taps w0 + w1 | w2)."""
    first, middle, last = weight.unbind(dim)
    return torch.stack([first, middle + last], dim), torch.stack([first + middle, last], dim)


PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row parity, column parity) of the folded kernels, in their order


def _phase_slices(out_channels: int, height: int, width: int) -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """(where in the phases, where in the output) of each phase (r, c): its H x W window of the (B, 4 C_out, H+1,
    W+1) phases, and rows r::2, columns c::2 of the first C_out channels of the (B, C_out + C_skip, 2H, 2W) output.
    The forward copies from the first to the second; the backward copies the gradient the other way."""
    every = slice(None)
    return [
        (
            (every, slice(index * out_channels, (index + 1) * out_channels), slice(row, row + height),
             slice(col, col + width)),
            (every, slice(None, out_channels), slice(row, None, 2), slice(col, None, 2)),
        )
        for index, (row, col) in enumerate(PHASES)
    ]


def _memory_format(tensor: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-d tensor laid out so (and not also contiguous), else the contiguous format."""
    channels_last = tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def _interleave_phases(
    phases: torch.Tensor, skip: torch.Tensor | None, out_channels: int, height: int, width: int
) -> torch.Tensor:
    """Write phase (r, c) of `phases` (B, 4 C_out, H+1, W+1) at rows r::2, columns c::2 of one (B, C_out + C_skip,
    2H, 2W) buffer in the phases' memory format, and `skip` into its last channels."""
    skip_channels = 0 if skip is None else skip.shape[1]
    out = torch.empty(
        (phases.shape[0], out_channels + skip_channels, 2 * height, 2 * width),
        dtype=phases.dtype,
        device=phases.device,
        memory_format=_memory_format(phases),
    )
    for in_phases, in_out in _phase_slices(out_channels, height, width):
        out[in_out] = phases[in_phases]
    if skip is not None:
        out[:, out_channels:] = skip
    return out


class _InterleavePhases(torch.autograd.Function):
    """`_interleave_phases` with a backward of its own. Autograd's record of the five slice writes would clone
    the whole output gradient once per write and zero-fill a phases-sized gradient once per phase (about 3% of a
    diffusion training step at 32 px); here the gradient of the phases is one zeroed buffer with four slices
    copied in, and the skip's is a view of the output's."""

    @staticmethod
    def forward(
        ctx: Any, phases: torch.Tensor, skip: torch.Tensor | None, out_channels: int, height: int, width: int
    ) -> torch.Tensor:
        ctx.geometry = (phases.shape, _memory_format(phases), out_channels, height, width, skip is not None)
        return _interleave_phases(phases, skip, out_channels, height, width)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        phases_shape, layout, out_channels, height, width, has_skip = ctx.geometry
        grad_phases = grad_skip = None
        if ctx.needs_input_grad[0]:
            grad_phases = torch.empty(
                phases_shape, dtype=grad_out.dtype, device=grad_out.device, memory_format=layout
            ).zero_()
            for in_phases, in_out in _phase_slices(out_channels, height, width):
                grad_phases[in_phases] = grad_out[in_out]
        if has_skip and ctx.needs_input_grad[1]:
            grad_skip = grad_out[:, out_channels:]
        return grad_phases, grad_skip, None, None, None


def nearest_upsample_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, skip: torch.Tensor | None = None
) -> torch.Tensor:
    """conv3x3(nearest_upsample_2x(x), weight, bias, padding 1), computed without the upsampled copy.

    A 3x3 conv over a nearest-upsampled map sees each input pixel 2 or 4 times, so each of the 4 output phases
    (row parity, column parity) is a 2x2 conv of the input with summed taps (the sub-pixel form). All four run as
    one conv with 4x the output channels over the (H+1, W+1) windows of the zero-padded input, each phase taking
    its H x W slice: 4 * 4 = 16 multiply-adds per output-pixel group against 4 * 9 = 36, and no 4x larger input
    to write and read. The same function of the same weights (tests/nn: against F.interpolate + F.conv2d), so
    checkpoints and gradients are unchanged. x (B, C, H, W) -> (B, C_out, 2H, 2W), in x's memory format.

    With `skip` (B, C_skip, 2H, 2W) the result is torch.cat([upsampled, skip], dim=1), written into one buffer
    as the phases are: the decoder's skip concatenation without a second copy of the upsampled map.
    """
    _, _, height, width = x.shape
    kernels = [phase for rows in _fold_taps(weight, 2) for phase in _fold_taps(rows, 3)]  # in PHASES' order
    phases = F.conv2d(x, torch.cat(kernels), None if bias is None else bias.repeat(4), padding=1)
    if torch.is_grad_enabled() and (phases.requires_grad or (skip is not None and skip.requires_grad)):
        return _InterleavePhases.apply(phases, skip, weight.shape[0], height, width)
    return _interleave_phases(phases, skip, weight.shape[0], height, width)


class Upsample(nn.Module):
    """Double the resolution: nearest neighbour then a 3x3 conv (DDPM), or bilinear alone (the seed)."""

    def __init__(self, channels: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if kind == "nearest-conv" else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C, 2H, 2W), or with `skip` (B, C_skip, 2H, 2W) the concatenation of both."""
        if self.conv is not None:
            # The folded form: the same function with 16/36 of the multiply-adds and no upsampled copy.
            return nearest_upsample_conv(x, self.conv.weight, self.conv.bias, skip)
        upsampled = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return upsampled if skip is None else torch.cat([upsampled, skip], dim=1)


class Stage(nn.Module):
    """A residual block optionally followed by self-attention."""

    def __init__(self, block: ResidualBlock, attention: SelfAttention | None) -> None:
        super().__init__()
        self.block = block
        self.attention = attention

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None) -> torch.Tensor:
        x = self.block(x, embedding)
        return self.attention(x) if self.attention is not None else x


class DiffusionUNet(nn.Module):
    """The denoiser eps/x0/v_theta(x_t, t, cond); see the module docstring for the layout."""

    def __init__(self, config: DiffusionUNetConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        raw_dim = config.base_width if config.embedding == "sinusoidal" else SEED_EMBEDDING_DIM
        if config.embedding_injection == "blocks":
            embedding_dim = 4 * config.base_width
            self.time_mlp: nn.Module = nn.Sequential(
                nn.Linear(raw_dim, embedding_dim), nn.SiLU(), nn.Linear(embedding_dim, embedding_dim)
            )
        else:
            embedding_dim = raw_dim
            self.time_mlp = nn.Identity()
        self.label_embedding = LabelEmbedding(config.num_classes, embedding_dim) if config.num_classes else None
        block_embedding_dim = embedding_dim if config.embedding_injection == "blocks" else 0

        self.stem = nn.Conv2d(
            config.in_channels + config.cond_channels, config.base_width, config.io_kernel,
            padding=config.io_kernel // 2,
        )
        channels = config.base_width + (embedding_dim if config.embedding_injection == "input" else 0)

        def stage(channels_in: int, width: int, level: int) -> Stage:
            attended = config.resolution(level) in config.attention_resolutions
            attention = SelfAttention(width, config.attention_heads, config.norm) if attended else None
            return Stage(ResidualBlock(channels_in, width, block_embedding_dim, config), attention)

        *level_widths, bottleneck_width = config.widths
        skip_channels: list[int] = []
        self.encoder = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        for level, width in enumerate(level_widths):
            stages = nn.ModuleList()
            for _ in range(config.num_res_blocks):
                stages.append(stage(channels, width, level))
                channels = width
                skip_channels.append(width)
            self.encoder.append(stages)
            self.downsamplers.append(Downsample(width, config.downsample))
        self.bottleneck = nn.ModuleList()
        for _ in range(config.num_res_blocks):
            self.bottleneck.append(stage(channels, bottleneck_width, config.levels - 1))
            channels = bottleneck_width
        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(len(level_widths))):
            self.upsamplers.append(Upsample(channels, config.upsample))
            stages = nn.ModuleList()
            for _ in range(config.num_res_blocks):
                stages.append(stage(channels + skip_channels.pop(), level_widths[level], level))
                channels = level_widths[level]
            self.decoder.append(stages)

        head: list[nn.Module] = []
        if config.residual_block == "preact":
            head += [_norm(config.norm, channels), nn.SiLU()]
        head.append(_zero(nn.Conv2d(channels, config.out_channels, config.io_kernel, padding=config.io_kernel // 2)))
        self.head = nn.Sequential(*head)  # zero output at init: the first prediction is "no noise" (Keras too)

    @property
    def null_label(self) -> int | None:
        """The null class index for classifier-free guidance, or None without labels."""
        return self.label_embedding.null_index if self.label_embedding is not None else None

    def _embed_time(self, t: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
        """(B,) steps or noise levels -> the raw sinusoidal embedding (B, raw_dim).

        Integer steps feed the transformer embedding directly; for the seed embedding they become the diffusion
        time (t + 1) / T in (0, 1], the seed's input (table 4 row 1-2). Floats are passed as they are, so a
        caller may feed the Keras example's noise variance.
        """
        t = torch.as_tensor(t, device=device)
        if t.dim() == 0:
            t = t.expand(batch)
        if self.config.embedding == "sinusoidal":
            return timestep_embedding(t, self.config.base_width)
        level = t.float() if t.is_floating_point() else (t.float() + 1.0) / self.config.num_timesteps
        return seed_noise_embedding(level, SEED_EMBEDDING_DIM)

    def _condition(
        self, x_t: torch.Tensor, embedding: torch.Tensor, cond: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the condition: concatenate a source image to x_t, or add a label embedding (None = null class)."""
        config = self.config
        if config.cond_channels:
            expected = (x_t.shape[0], config.cond_channels, *x_t.shape[2:])
            if cond is None or tuple(cond.shape) != expected:
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"this network needs a condition image of shape {expected}, got {got}")
            return torch.cat([x_t, cond.to(x_t.dtype)], dim=1), embedding
        if self.label_embedding is not None:
            labels = cond if cond is not None else self.label_embedding.null_labels(x_t.shape[0], x_t.device)
            return x_t, embedding + self.label_embedding(labels.reshape(-1).to(x_t.device))
        if cond is not None:
            raise ValueError("this network is unconditional (num_classes = cond_channels = 0) but got a condition")
        return x_t, embedding

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor | float | int, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x_t (B, C, H, W), t (B,) int steps or float levels, cond (B,) labels / (B, C_cond, H, W) / None."""
        batch, _, height, width = x_t.shape
        multiple = 2 ** (self.config.levels - 1)
        if height % multiple or width % multiple:
            raise ValueError(
                f"image size {height}x{width} must be divisible by 2^(levels-1) = {multiple} "
                f"for this {self.config.levels}-level U-Net"
            )
        embedding = self.time_mlp(self._embed_time(t, batch, x_t.device).to(x_t.dtype))  # (B, E)
        x, embedding = self._condition(x_t, embedding, cond)
        hidden = self.stem(x)  # (B, base_width, H, W)
        if self.config.embedding_injection == "input":
            # Seed table 4: the (B, E) embedding upsampled "nearest" to (B, E, H, W) and concatenated.
            hidden = torch.cat([hidden, embedding[:, :, None, None].expand(-1, -1, height, width)], dim=1)
            embedding = None
        skips = []
        for stages, downsample in zip(self.encoder, self.downsamplers, strict=True):
            for level_stage in stages:
                hidden = level_stage(hidden, embedding)
                skips.append(hidden)
            hidden = downsample(hidden)
        for level_stage in self.bottleneck:
            hidden = level_stage(hidden, embedding)
        for upsample, stages in zip(self.upsamplers, self.decoder, strict=True):
            # The level's first skip is written beside the upsampled map as it is made (one copy, not two).
            hidden = stages[0](upsample(hidden, skips.pop()), embedding)
            for level_stage in stages[1:]:
                hidden = level_stage(torch.cat([hidden, skips.pop()], dim=1), embedding)
        return self.head(hidden)  # (B, out_channels, H, W)
