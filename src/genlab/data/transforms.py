"""Batch augmentation applied identically to every image of a sample (pix2pix jitter: resize, crop, flip), and
whether a set of images wants the resize-and-crop part at all."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(images: torch.Tensor, size: int, nearest: bool = False) -> torch.Tensor:
    """Resize float images (N, C, H, W) to (size, size): bicubic (antialiased) or nearest for label maps."""
    if images.shape[-2:] == (size, size):
        return images
    if nearest:
        return F.interpolate(images, size=(size, size), mode="nearest-exact")
    shrinking = size < images.shape[-1]
    resized = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=shrinking)
    return resized.clamp(-1.0, 1.0)


def crop_and_flip(
    images: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, flips: torch.Tensor, crop_size: int
) -> torch.Tensor:
    """Crop each image n at (tops[n], lefts[n]) to crop_size and mirror it where flips[n]; one gather for all."""
    batch = images.shape[0]
    offsets = torch.arange(crop_size, device=images.device)
    rows = tops[:, None] + offsets  # (B, crop)
    columns = lefts[:, None] + offsets  # (B, crop)
    columns = torch.where(flips[:, None], columns.flip(1), columns)
    batch_index = torch.arange(batch, device=images.device)[:, None, None]
    channels_last = images.permute(0, 2, 3, 1)  # (B, H, W, C)
    cropped = channels_last[batch_index, rows[:, :, None], columns[:, None, :]]  # (B, crop, crop, C)
    return cropped.permute(0, 3, 1, 2).contiguous()


def jitter_batch(
    images: dict[str, torch.Tensor],
    load_size: int,
    crop_size: int,
    flip: bool,
    nearest_fields: tuple[str, ...] = (),
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Resize every field to load_size, then crop and flip; sample n gets the same crop and flip in every field.

    Fields may have different batch sizes only when they are jittered independently (unpaired tasks); fields of
    the same batch size share their random offsets.
    """
    if load_size < crop_size:
        raise ValueError(f"data.load_size ({load_size}) must be at least data.image_size ({crop_size})")
    draws: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    result = {}
    for key in sorted(images):  # sorted: the draw order must not depend on dict order
        value = resize(images[key], load_size, nearest=key in nearest_fields)
        count = value.shape[0]
        if count not in draws:
            span = load_size - crop_size + 1
            tops = torch.randint(0, span, (count,), generator=generator)
            lefts = torch.randint(0, span, (count,), generator=generator)
            flips = torch.rand(count, generator=generator) < 0.5 if flip else torch.zeros(count, dtype=torch.bool)
            draws[count] = (tops, lefts, flips)
        tops, lefts, flips = (t.to(value.device) for t in draws[count])
        result[key] = crop_and_flip(value, tops, lefts, flips, crop_size)
    return result


# A border pixel is background when every channel is within this many uint8 levels of the border's commonest value.
BORDER_TOLERANCE = 10
# The share of background border pixels above which a set shows objects on a plain background. Measured (README,
# "Pix2Pix on a garment folder built outside genlab"): Fashion-MNIST's garments 0.83, genlab's edge maps of them
# 0.92, facades-synth's renderings 0.01 and its label maps 0.47, at 32 and 64 px.
PLAIN_BORDER_SHARE = 0.5
BORDER_SAMPLE = 1000  # images read per field: an even stride through the set, so a class-sorted folder is covered


def plain_border_share(images: torch.Tensor) -> float:
    """The share of the border pixels of uint8 images (N, C, H, W) that are background: within BORDER_TOLERANCE
    levels, in every channel, of that channel's commonest border value over all the images. The border is the
    outer ring of max(1, H // 16) pixels."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        shape = tuple(images.shape)
        raise ValueError(f"plain_border_share: expected uint8 (N, C, H, W) images, got {images.dtype} {shape}")
    height, width = images.shape[-2:]
    ring = max(1, min(height, width) // 16)
    inside = torch.zeros(height, width, dtype=torch.bool)
    inside[ring : height - ring, ring : width - ring] = True
    border = images[..., ~inside].transpose(0, 1).reshape(images.shape[1], -1)  # (C, N * ring pixels)
    background = torch.stack([torch.bincount(channel, minlength=256).argmax() for channel in border.long()])
    near = (border.int() - background[:, None].int()).abs() <= BORDER_TOLERANCE
    return float(near.all(dim=0).float().mean())


def plain_background_shares(fields: dict[str, torch.Tensor]) -> dict[str, float]:
    """`plain_border_share` of each image field (uint8, 4-D) of a split, on an even stride of BORDER_SAMPLE images."""
    shares = {}
    for name, images in fields.items():
        if images.dtype == torch.uint8 and images.dim() == 4 and len(images):
            stride = max(1, len(images) // BORDER_SAMPLE)
            shares[name] = plain_border_share(images[::stride][:BORDER_SAMPLE])
    return shares
