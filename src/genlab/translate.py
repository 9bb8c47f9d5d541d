"""Translate image files with a trained model: one output per input, same file name."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from genlab.data.imageio import list_images, load_image, save_image
from genlab.models.base import GenerativeModel
from genlab.utils import GenlabError, sample_generator, signed_to_uint8, to_model_batch


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

    Images are resized to the model's size for translation and the output is resized back to the input size.
    Stochastic models draw the noise of input i from (seed, i); `options` go to the model (sampler, steps,
    eta for diffusion; direction for cyclegan).
    """
    model.require("translate")
    files = collect_inputs(inputs)
    spec = model.spec
    reverse = options.get("direction") == "BtoA"  # BtoA reads target-domain images
    field = "target" if reverse else "source"
    channels = spec.target_channels if reverse else spec.source_channels
    nearest = field in spec.label_map_fields
    written = []
    for start in tqdm(range(0, len(files), batch_size), desc="translating", unit="batch", leave=False):
        chunk = files[start : start + batch_size]
        images = [load_image(path) for path in chunk]
        if aligned:
            images = [_left_half(image, path) for image, path in zip(images, chunk)]
        batch = torch.cat(
            [to_model_batch(image, channels, spec.image_size, nearest)[0] for image in images]
        )
        generator = sample_generator(seed, start, len(chunk))
        outputs = model.translate_batch(batch.to(model.device), generator=generator, **options).cpu()
        for path, image, output in zip(chunk, images, outputs):
            size = tuple(image.shape[-2:])
            if size != tuple(output.shape[-2:]):
                output = F.interpolate(output[None], size=size, mode="bicubic").clamp(-1, 1)[0]
            destination = out_dir / path.name
            save_image(signed_to_uint8(output), destination)
            written.append(destination)
    return written


def _left_half(image: torch.Tensor, path: Path) -> torch.Tensor:
    width = image.shape[-1]
    if width % 2:
        raise GenlabError(f"{path}: width {width} is odd, so it is not an aligned A|B pair")
    return image[..., : width // 2]
