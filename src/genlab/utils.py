"""Small helpers shared by every genlab module: errors, seeding, devices, image conversions, atomic writes."""

from __future__ import annotations

import os
import random
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class GenlabError(Exception):
    """A user-facing error: bad input, config or environment. The CLI prints it on one line and exits 2."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from one run seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str = "auto") -> torch.device:
    """Pick the device: `auto` prefers cuda > mps > cpu; anything else is passed to torch.device."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as error:
            raise GenlabError(f"train.device: unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise GenlabError(f"train.device: {name!r} asked for but CUDA is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator seeded with `seed`, on `device`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed) % 2**63)
    return generator


class PerSampleGenerator:
    """One torch.Generator per sample (as EDM's StackedRandomGenerator): draws for a batch stack each sample's
    own draw, so sample i gets the same noise whatever the batch size or its position in the batch."""

    def __init__(self, seeds: list[int], device: torch.device | str = "cpu") -> None:
        self.generators = [make_generator(seed, device) for seed in seeds]
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(B, *item) normal noise, item i from generator i; B must equal the number of generators."""
        if shape[0] != len(self.generators):
            raise ValueError(f"PerSampleGenerator holds {len(self.generators)} generators, asked for {shape[0]}")
        return torch.stack(
            [torch.randn(shape[1:], generator=g, device=self.device, dtype=dtype) for g in self.generators]
        )


Generator = torch.Generator | PerSampleGenerator


def sample_generator(seed: int, first_index: int, count: int) -> PerSampleGenerator:
    """Generators for samples first_index .. first_index + count - 1 of a seed: sample i's noise is f(seed, i)."""
    return PerSampleGenerator([derive_seed(seed, index) for index in range(first_index, first_index + count)])


def randn(
    shape: tuple[int, ...], generator: Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Normal noise of `shape` on `device`, drawn from a torch.Generator, a PerSampleGenerator, or the global RNG.

    Draws happen on the generator's own device and are then moved, so a CPU generator drives a GPU run
    reproducibly.
    """
    if isinstance(generator, PerSampleGenerator):
        return generator.randn(tuple(shape)).to(device)
    draw_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=draw_device).to(device)


def derive_seed(*parts: int) -> int:
    """Mix several integers (run seed, step, index...) into one 63-bit seed, stable across runs and machines."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value ^= int(part) + 0x9E3779B97F4A7C15 + ((value << 6) & (2**64 - 1)) + (value >> 2)
        value &= 2**64 - 1
    return value % 2**63


def uint8_to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def signed_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float images in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def signed_to_unit(images: torch.Tensor) -> torch.Tensor:
    """float images in [-1, 1] -> [0, 1] (clamped)."""
    return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def pil_to_uint8(image) -> torch.Tensor:
    """A PIL image (L or RGB) -> uint8 tensor (C, H, W)."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def uint8_to_pil(image: torch.Tensor):
    """A uint8 tensor (C, H, W) with 1 or 3 channels -> PIL image."""
    from PIL import Image

    array = image.detach().cpu().permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    return Image.fromarray(array, mode="RGB")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on error removed.

    A crash or a full disk therefore never leaves a half-written file where a good one was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    umask = os.umask(0)  # mkstemp creates 0600; give the file what the user's umask gives (read and restore)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        with open(temporary_path, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary_path, target)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to `path` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the `.NAME.*.tmp` files `atomic_path` leaves when its process is killed mid-write, in `folder`
    and its sub-folders; returns them. Call it only while no live process writes there (a run holds its lock).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for temporary in folder.rglob(".*.tmp"):
        if temporary.is_file():
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return removed


def format_count(count: float) -> str:
    """12345678 -> '12.3M' (for parameter counts and throughputs)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.1f}{unit}"
    return f"{count:.0f}"


# PIL modes whose alpha would be lost silently by a conversion to L or RGB: refused, as `load_image` refuses them.
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
INPUT_RANGES = ("[-1,1]", "[0,1]")
OUTPUT_TYPES = ("pil", "pt", "np")


def to_model_batch(
    images,
    channels: int,
    size: int,
    nearest: bool = False,
    input_range: str = "[-1,1]",
    output_nearest: bool = False,
):
    """Coerce PIL image(s), a tensor, or a list of (C, H, W) tensors into a float batch (B, C, size, size) in
    [-1, 1]: the one conversion behind `model.translate` and `genlab translate`.

    Float tensors are read in `input_range` ("[-1,1]", genlab's model range, or "[0,1]"); with the default, a
    float input without negative values gets a warning (it is probably [0, 1]). uint8 tensors are [0, 255].
    Images with an alpha channel (RGBA, LA, PA, a palette with transparency, or 4-channel tensors) are refused
    rather than flattened, with the same rule as files (`genlab.data.imageio.load_image`). Grey inputs are
    repeated to 3 channels when the model takes RGB,
    and RGB inputs of a grey model are converted with PIL's luma weights.

    Returns the batch and `restore(output, output_type=None)`, which maps a model output batch back to each
    input's own height and width (bicubic, or nearest when `output_nearest`) and to the input's form: PIL in ->
    PIL out, uint8 -> uint8, float -> float in `input_range`, a single image -> a single image. `output_type`
    "pil" (PIL images), "pt" (float tensors in `input_range`) or "np" (float32 arrays (H, W, C) in [0, 1], as
    diffusers) chooses the form instead. Inputs of different sizes come back as a list.

    >>> batch, restore = to_model_batch(torch.zeros(3, 40, 40, dtype=torch.uint8), 3, 16)
    >>> tuple(batch.shape), tuple(restore(batch).shape)
    ((1, 3, 16, 16), (3, 40, 40))
    """
    if input_range not in INPUT_RANGES:
        raise GenlabError(f"input_range must be one of {', '.join(INPUT_RANGES)}, got {input_range!r}")
    items, single, as_pil = _image_items(images)
    as_uint8 = as_pil or items[0].dtype == torch.uint8
    if any((item.dtype == torch.uint8) != as_uint8 for item in items):
        raise GenlabError("expected images of one kind: all uint8 or all float")
    sizes = [tuple(item.shape[-2:]) for item in items]
    signed = [_to_signed(item, input_range) for item in items]
    if not as_uint8 and input_range == "[-1,1]" and all(bool((item >= 0).all()) for item in signed):
        warnings.warn(
            "translate: every input value is >= 0, so the images are probably in [0, 1]; they are read as [-1, 1]. "
            'Pass input_range="[0,1]" (or scale them to [-1, 1]) if they are in [0, 1].',
            stacklevel=3,
        )
    batch = torch.cat([_match_channels(_resize_signed(item, size, nearest), channels) for item in signed])
    counts = [len(item) for item in items]

    def restore(output: torch.Tensor, output_type: str | None = None):
        if output_type is not None and output_type not in OUTPUT_TYPES:
            raise GenlabError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        kind = output_type or ("pil" if as_pil else "uint8" if as_uint8 else "pt")
        output = output.detach().float().cpu()
        pieces, offset = [], 0
        for count, item_size in zip(counts, sizes):
            piece = output[offset : offset + count]
            offset += count
            if tuple(piece.shape[-2:]) != item_size:
                mode = "nearest-exact" if output_nearest else "bicubic"
                piece = F.interpolate(piece, size=item_size, mode=mode).clamp(-1, 1)
            pieces.append(piece)
        converted = [signed_to_output(piece, kind, input_range) for piece in pieces]
        if kind == "pil":
            pictures = [picture for group in converted for picture in group]
            return pictures[0] if single else pictures
        if single:
            return converted[0][0]
        if len(converted) == 1:
            return converted[0]
        if len({item_size for item_size in sizes}) == 1:  # a list of equal-size images: one batch
            return torch.cat(converted) if kind != "np" else np.concatenate(converted)
        return [image for group in converted for image in group]

    return batch, restore


def _image_items(images) -> tuple[list[torch.Tensor], bool, bool]:
    """(batches (B, C, H, W), single, as_pil) from a PIL image, a list of them, a tensor or a list of tensors."""
    from PIL import Image

    single = False
    if isinstance(images, (Image.Image, torch.Tensor)) and not (
        isinstance(images, torch.Tensor) and images.dim() == 4
    ):
        images, single = [images], True
    elif isinstance(images, torch.Tensor):
        return [images], False, False
    if not isinstance(images, (list, tuple)) or not images:
        raise GenlabError(
            f"expected a PIL image, a list of them, a tensor or a list of tensors; got {type(images).__name__}"
        )
    if all(isinstance(image, Image.Image) for image in images):
        return [pil_to_uint8(_checked_pil(image))[None] for image in images], single, True
    if all(isinstance(image, torch.Tensor) for image in images):
        for image in images:
            if image.dim() != 3:
                raise GenlabError(f"expected images shaped (C, H, W) or (B, C, H, W), got {tuple(image.shape)}")
        return [image[None] for image in images], single, False
    raise GenlabError("expected PIL images or tensors, not a mix of both (or of other types)")


def _checked_pil(image):
    """A PIL image as L or RGB; alpha and more-than-8-bit modes are refused (the rule `load_image` applies)."""
    mode = image.mode
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        raise GenlabError(
            f"image has an alpha channel (mode {mode}) that would be dropped silently; "
            "convert it first, e.g. image.convert('RGB')"
        )
    if mode in ("L", "RGB"):
        return image
    if mode in ("P", "1"):
        return image.convert("RGB" if mode == "P" else "L")
    raise GenlabError(f"unsupported image mode {mode} (expected 8-bit grayscale L or RGB)")


def _to_signed(batch: torch.Tensor, input_range: str) -> torch.Tensor:
    if batch.dtype == torch.uint8:
        return uint8_to_signed(batch)
    if not batch.is_floating_point():
        raise GenlabError(f"expected uint8 or float images, got {batch.dtype}")
    batch = batch.float()
    return batch * 2 - 1 if input_range == "[0,1]" else batch


def _match_channels(batch: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey -> RGB by repetition, RGB -> grey with PIL's luma weights (ITU-R 601-2); anything else is an error."""
    if batch.shape[1] == channels:
        return batch
    if batch.shape[1] == 1 and channels == 3:
        return batch.repeat(1, 3, 1, 1)
    if batch.shape[1] == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=batch.dtype).view(1, 3, 1, 1)
        return (batch * weights).sum(dim=1, keepdim=True)
    if batch.shape[1] == 4:
        raise GenlabError(f"expected images with {channels} channel(s), got 4 (alpha?); drop the alpha first")
    raise GenlabError(f"expected images with {channels} channel(s), got {batch.shape[1]}")


def _resize_signed(batch: torch.Tensor, size: int, nearest: bool) -> torch.Tensor:
    if tuple(batch.shape[-2:]) == (size, size):
        return batch
    mode = "nearest-exact" if nearest else "bicubic"
    return F.interpolate(batch, size=(size, size), mode=mode).clamp(-1, 1)


def signed_to_output(batch: torch.Tensor, kind: str, input_range: str = "[-1,1]"):
    """A float batch (B, C, H, W) in [-1, 1] as `kind`: "pil" (a list of PIL images), "uint8", "pt" (float in
    `input_range`) or "np" (float32 (B, H, W, C) in [0, 1], as diffusers)."""
    batch = batch.detach().float().cpu()
    if kind == "pil":
        return [uint8_to_pil(image) for image in signed_to_uint8(batch)]
    if kind == "uint8":
        return signed_to_uint8(batch)
    if kind == "np":
        return signed_to_unit(batch).permute(0, 2, 3, 1).numpy()
    return signed_to_unit(batch) if input_range == "[0,1]" else batch
