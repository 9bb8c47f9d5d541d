"""Sampling from generation runs: image grids, single files, and DDIM latent interpolation."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from genlab.diffusion.samplers import slerp
from genlab.grid import save_grid
from genlab.models.base import GenerativeModel, cycle_labels
from genlab.utils import GenlabError, sample_generator, signed_to_uint8


def sample_images(
    model: GenerativeModel,
    count: int,
    labels: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    **options,
) -> torch.Tensor:
    """`count` samples in [-1, 1], drawn in batches; sample i's noise comes from (seed, i) alone, so an image
    does not change with the batch size."""
    model.require("sample")
    if count < 1:
        raise GenlabError(f"sample: count must be at least 1, got {count}")
    if batch_size < 1:
        raise GenlabError(f"sample: batch size must be at least 1, got {batch_size}")
    if labels is not None and len(labels) != count:
        raise GenlabError(f"sample: {len(labels)} labels for {count} images")
    outputs = []
    for start in tqdm(range(0, count, batch_size), desc="sampling", unit="batch", leave=False, disable=not progress):
        size = min(batch_size, count - start)
        chunk = None if labels is None else labels[start : start + size]
        generator = sample_generator(seed, start, size)
        outputs.append(model.sample(size, labels=chunk, generator=generator, **options).cpu())
    return torch.cat(outputs)


def interpolation_noise(
    shape: tuple[int, ...], rows: int, columns: int, seed: int = 0, mode: str = "slerp"
) -> torch.Tensor:
    """Latent codes for `rows` walks of `columns` points each between two Gaussian draws per row: spherical
    (`slerp`, for Gaussian noise whose norm concentrates) or straight (`linear`, a VAE's latent space).

    Returns (rows * columns, *shape), row-major.
    """
    if columns < 2:
        raise GenlabError(f"--interpolate needs at least 2 points, got {columns}")
    if mode not in ("slerp", "linear"):
        raise GenlabError(f"interpolation mode must be slerp or linear, got {mode!r}")
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn((rows, *shape), generator=generator)
    end = torch.randn((rows, *shape), generator=generator)
    weights = torch.linspace(0.0, 1.0, columns)
    if mode == "slerp":
        points = [slerp(start, end, float(weight)) for weight in weights]  # each (rows, *shape)
    else:
        points = [torch.lerp(start, end, float(weight)) for weight in weights]
    return torch.stack(points, dim=1).flatten(0, 1)


def interpolate(
    model: GenerativeModel, rows: int, columns: int, labels: torch.Tensor | None = None, seed: int = 0, **options
) -> torch.Tensor:
    """`rows` walks of `columns` images between random latent codes (one class per row when conditional)."""
    model.require("interpolate")
    noise = interpolation_noise(model.latent_shape(), rows, columns, seed, model.abilities.interpolation)
    if model.conditional:
        labels = cycle_labels(rows, model.spec.num_classes) if labels is None else torch.as_tensor(labels)
        if len(labels) != rows:
            raise GenlabError(f"--interpolate: {len(labels)} labels for {rows} rows")
        labels = labels.repeat_interleave(columns)
    elif labels is not None:
        raise GenlabError(f"this {model.name} run is unconditional; it takes no labels")
    return model.sample_from_latents(noise.to(model.device), labels=labels, **options).cpu()


def save_samples(images: torch.Tensor, out: Path, columns: int) -> list[Path]:
    """Write a grid (`out` ends with .png) or a folder of numbered PNGs, with their grid beside the folder
    (OUT-grid.png), never inside it: a folder of samples is scored as a set (FID), and a grid is no sample."""
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
    grid = out.with_name(f"{out.name}-grid.png")
    save_grid(rows, grid, scale=max(1, 128 // images.shape[-1]))
    return [*written, grid]
