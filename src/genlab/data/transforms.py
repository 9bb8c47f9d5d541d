"""Batch augmentation applied identically to every image of a sample (pix2pix jitter: resize, crop, flip)."""

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
