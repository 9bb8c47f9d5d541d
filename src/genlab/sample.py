"""Sampling from generation runs: image grids, single files, and DDIM latent interpolation."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from genlab.diffusion.samplers import slerp
from genlab.grid import save_captioned_grid
from genlab.models.base import GenerativeModel, cycle_labels
from genlab.utils import OUTPUT_TYPES, GenlabError, sample_generator, signed_to_output, signed_to_uint8


def sample_images(
    model: GenerativeModel,
    count: int,
    labels: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    **options,
) -> torch.Tensor:
    """`count` samples in [-1, 1], drawn in batches; sample i's noise comes from (seed, i) alone and its class
    (by default) is i mod the number of classes, so an image does not change with the batch size."""
    model.require("sample")
    if count < 1:
        raise GenlabError(f"sample: count must be at least 1, got {count}")
    if batch_size < 1:
        raise GenlabError(f"sample: batch size must be at least 1, got {batch_size}")
    # Checked (count, range) here once; the default labels cycle through the classes over all `count` images
    # (what captions and scores assume), not within each batch.
    labels = model.check_labels(labels, count)
    labels = None if labels is None else labels.cpu()
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


def save_samples(
    images: torch.Tensor,
    out: Path,
    columns: int,
    labels: torch.Tensor | None = None,
    class_names: tuple[str, ...] | list[str] = (),
    title: str | None = None,
) -> list[Path]:
    """Write a grid (`out` ends with .png) or a folder of numbered PNGs, with their grid beside the folder
    (OUT-grid.png), never inside it: a folder of samples is scored as a set (FID), and a grid is no sample.

    The grid is captioned (`genlab.grid.captioned_grid`): `title` on top and, given `labels` (one per image)
    and the task's `class_names`, the class of each row, each column or each image; images under 128 px are
    upscaled with nearest.
    """
    from genlab.data.imageio import save_image

    rows = [images[i : i + columns] for i in range(0, len(images), columns)]
    captions = sample_captions(labels, class_names, columns, len(rows))
    if out.suffix.lower() == ".png":
        save_captioned_grid(rows, out, title=title, **captions)
        return [out]
    written = []
    for index, image in enumerate(signed_to_uint8(images)):
        path = out / f"sample_{index:05d}.png"
        save_image(image, path)
        written.append(path)
    grid = out.with_name(f"{out.name}-grid.png")
    save_captioned_grid(rows, grid, title=title, **captions)
    return [*written, grid]


def sample_captions(
    labels: torch.Tensor | None, class_names: tuple[str, ...] | list[str], columns: int, row_count: int
) -> dict[str, list]:
    """Class names as row titles (every row one class), column titles (every column one class) or one caption
    per image; nothing without labels. Labels without names are shown as numbers."""
    if labels is None:
        return {}
    names = [class_names[int(label)] if int(label) < len(class_names) else str(int(label)) for label in labels]
    grid = [names[row * columns : (row + 1) * columns] for row in range(row_count)]
    if all(len(set(row)) == 1 for row in grid):
        return {"row_titles": [row[0] for row in grid]}
    if len(grid) > 1 and all(len(row) == columns for row in grid) and all(
        len({row[column] for row in grid}) == 1 for column in range(columns)
    ):
        return {"column_titles": grid[0]}
    return {"captions": grid}


def generate(
    model: GenerativeModel,
    count: int,
    labels: torch.Tensor | list[int] | None = None,
    output_type: str = "pt",
    *,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    eta: float | None = None,
    generator: int | torch.Generator | None = None,
    batch_size: int = 64,
    **options,
):
    """`count` samples with diffusers' argument names: `num_inference_steps` (alias of `steps`),
    `guidance_scale`, `eta`, and `generator`: an int seed (sample i depends on (seed, i) only, as
    `sample_images`) or a torch.Generator, used as it is. `output_type` "pt": a float tensor (count, C, H, W)
    in [-1, 1]; "pil": a list of PIL images; "np": float32 (count, H, W, C) in [0, 1]. genlab's own names
    (steps, sampler) still work.

    >>> images = generate(genlab.load("runs/ddpm"), 8, num_inference_steps=50, output_type="pil")  # doctest: +SKIP
    """
    model.require("sample")
    options = model.sampler_arguments(options, num_inference_steps, guidance_scale, eta)
    if labels is not None:
        labels = model.check_labels(torch.as_tensor(labels), count).cpu()
    if output_type not in OUTPUT_TYPES:
        raise GenlabError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
    if isinstance(generator, torch.Generator):  # diffusers' way: one generator for the whole batch
        with torch.no_grad():
            images = model.sample(count, labels=labels, generator=generator, **options).cpu()
    else:
        images = sample_images(model, count, labels, 0 if generator is None else int(generator), batch_size, **options)
    return signed_to_output(images, output_type)
