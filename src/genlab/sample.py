"""Sampling from generation runs: image grids, single files, and DDIM latent interpolation."""

from __future__ import annotations

from pathlib import Path

import torch

from genlab.diffusion.samplers import slerp
from genlab.grid import save_grid
from genlab.models.base import GenerativeModel
from genlab.utils import GenlabError, signed_to_uint8


def sample_images(
    model: GenerativeModel,
    count: int,
    labels: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 64,
    **options,
) -> torch.Tensor:
    """`count` samples in [-1, 1], drawn in batches; sample i's noise comes from (seed, batch index)."""
    outputs = []
    for start in range(0, count, batch_size):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + start)
        chunk = None if labels is None else labels[start : start + batch_size]
        outputs.append(model.sample(min(batch_size, count - start), labels=chunk, generator=generator, **options))
    return torch.cat(outputs)


def interpolation_noise(shape: tuple[int, ...], rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    """x_T for `rows` interpolations of `columns` points each: slerp between two Gaussian draws per row.

    Returns (rows * columns, C, H, W), row-major, for a DDIM eta = 0 sampler (deterministic given x_T).
    """
    if columns < 2:
        raise GenlabError(f"--interpolate needs at least 2 points, got {columns}")
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn((rows, *shape), generator=generator)
    end = torch.randn((rows, *shape), generator=generator)
    weights = torch.linspace(0.0, 1.0, columns)
    points = [slerp(start, end, float(weight)) for weight in weights]  # each (rows, C, H, W)
    return torch.stack(points, dim=1).flatten(0, 1)


def save_samples(images: torch.Tensor, out: Path, columns: int) -> list[Path]:
    """Write a grid (out ends with .png) or a folder of numbered PNGs plus grid.png."""
    from genlab.data.imageio import save_image

    rows = [images[i : i + columns] for i in range(0, len(images), columns)]
    if out.suffix.lower() == ".png":
        save_grid(rows, out, scale=max(1, 128 // images.shape[-1]))
        return [out]
    written = []
    for index, image in enumerate(signed_to_uint8(images)):
        path = out / f"sample_{index:05d}.png"
        save_image(image, path)
        written.append(path)
    save_grid(rows, out / "grid.png", scale=max(1, 128 // images.shape[-1]))
    return [*written, out / "grid.png"]
