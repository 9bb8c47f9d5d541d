"""Image grids: rows of image batches laid out side by side and saved as PNG."""

from __future__ import annotations

from pathlib import Path

import torch

from genlab.utils import atomic_path, signed_to_uint8, uint8_to_pil


def image_grid(rows: list[torch.Tensor], padding: int = 2) -> torch.Tensor:
    """Lay out rows (each (B, C, H, W) in [-1, 1]) as a grid: one row per tensor, one column per item.

    Rows may have 1 or 3 channels (grey rows are repeated to RGB) and must share H and W. Returns uint8 (3, H', W').
    """
    columns = max(row.shape[0] for row in rows)
    height, width = rows[0].shape[-2:]
    canvas = torch.full(
        (3, padding + len(rows) * (height + padding), padding + columns * (width + padding)), 255, dtype=torch.uint8
    )
    for row_index, row in enumerate(rows):
        images = signed_to_uint8(row.detach().cpu())
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        for column, image in enumerate(images):
            top = padding + row_index * (height + padding)
            left = padding + column * (width + padding)
            canvas[:, top : top + height, left : left + width] = image
    return canvas


def save_grid(rows: list[torch.Tensor], path: str | Path, scale: int = 1) -> None:
    """Save `image_grid(rows)` as a PNG (atomically), upscaled `scale` times with nearest neighbour."""
    from PIL import Image

    picture = uint8_to_pil(image_grid(rows))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    with atomic_path(path) as temporary:
        picture.save(temporary, format="PNG")
