"""Translate image files with a trained model: one output per input, same file name."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from genlab.data.imageio import image_size, list_images, load_image, save_image
from genlab.models.base import GenerativeModel
from genlab.utils import GenlabError, sample_generator, to_model_batch


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Expand folders into their images; a missing path or two inputs with one file name are errors."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise GenlabError(f"{path}: no images (png, jpg, jpeg, bmp, webp) in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise GenlabError(f"{path}: no such file or folder")
    names: dict[str, Path] = {}
    for path in files:
        if path.name in names:
            raise GenlabError(f"{path}: same file name as {names[path.name]}; outputs would overwrite each other")
        names[path.name] = path
    return files


@torch.no_grad()
def translate_files(
    model: GenerativeModel,
    inputs: list[str],
    out_dir: Path,
    aligned: bool = False,
    batch_size: int = 16,
    seed: int = 0,
    **options,
) -> list[Path]:
    """Translate each input image (its left half when `aligned`) and save it under `out_dir` with its name.

    The conversion is `model.translate`'s (`genlab.utils.to_model_batch`): images are resized to the model's
    size and each output back to its input's size; alpha channels are refused. Inputs that are all A|B pairs
    (exactly twice as wide as high) without `aligned` are refused, as are inputs that are not A|B pairs with it.
    Stochastic models draw the noise of input i from (seed, i); `options` go to the model (sampler, steps,
    eta for diffusion; direction for cyclegan).
    """
    model.require("translate")
    reverse = options.get("direction") == "BtoA"  # BtoA reads target-domain images
    if reverse:
        model.require("reverse")
    files = collect_inputs(inputs)
    check_pair_shapes(files, aligned)
    spec = model.spec
    channels = spec.target_channels if reverse else spec.source_channels
    nearest = ("target" if reverse else "source") in spec.label_map_fields
    output_nearest = reverse and "source" in spec.label_map_fields
    written = []
    for start in tqdm(range(0, len(files), batch_size), desc="translating", unit="batch", leave=False):
        chunk = files[start : start + batch_size]
        images = [load_image(path) for path in chunk]
        if aligned:
            images = [image[..., : image.shape[-1] // 2] for image in images]
        batch, restore = to_model_batch(images, channels, spec.image_size, nearest, output_nearest=output_nearest)
        generator = sample_generator(seed, start, len(chunk))
        outputs = restore(model.translate_batch(batch.to(model.device), generator=generator, **options))
        for path, output in zip(chunk, outputs):
            destination = out_dir / path.name
            save_image(output, destination)
            written.append(destination)
    return written


def check_pair_shapes(files: list[Path], aligned: bool) -> None:
    """Refuse the two silent mistakes: A|B pairs (every file exactly 2:1) translated whole without `aligned`,
    and `aligned` on a file that is not twice as wide as high (naming it)."""
    shapes = [(path, image_size(path)) for path in files]
    if aligned:
        for path, (width, height) in shapes:
            if width != 2 * height:
                raise GenlabError(
                    f"{path}: {width}x{height} is not an aligned A|B pair (twice as wide as high); "
                    "leave out --aligned to translate whole images"
                )
    elif shapes and all(width == 2 * height for _, (width, height) in shapes):
        raise GenlabError(
            f"every input is exactly twice as wide as high ({shapes[0][0]}: {shapes[0][1][0]}x{shapes[0][1][1]}), "
            "so these look like aligned A|B pairs: pass --aligned to translate their left half"
        )
