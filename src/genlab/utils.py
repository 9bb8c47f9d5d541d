"""Small helpers shared by every genlab module: errors, seeding, devices, image conversions, atomic writes."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


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


def to_model_batch(images, channels: int, size: int, nearest: bool = False):
    """Coerce PIL image(s) or a tensor into a float batch (B, C, size, size) in [-1, 1].

    Returns the batch and a function mapping a model output batch back to the input's form: PIL in -> PIL
    out, a single image in -> a single image out, uint8 in -> uint8 out.
    """
    import torch.nn.functional as F
    from PIL import Image

    single = False
    as_pil = False
    if isinstance(images, Image.Image):
        images, single = [images], True
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], Image.Image):
        as_pil = True
        mode = "L" if channels == 1 else "RGB"
        resample = Image.NEAREST if nearest else Image.BICUBIC
        tensors = [pil_to_uint8(image.convert(mode).resize((size, size), resample)) for image in images]
        batch = uint8_to_signed(torch.stack(tensors))
        as_uint8 = True
    elif isinstance(images, torch.Tensor):
        as_uint8 = images.dtype == torch.uint8
        if images.dim() == 3:
            images, single = images[None], True
        if images.dim() != 4:
            raise GenlabError(f"expected images shaped (C, H, W) or (B, C, H, W), got {tuple(images.shape)}")
        batch = uint8_to_signed(images) if as_uint8 else images.float()
        if batch.shape[-2:] != (size, size):
            mode = "nearest-exact" if nearest else "bicubic"
            batch = F.interpolate(batch, size=(size, size), mode=mode).clamp(-1, 1)
    else:
        raise GenlabError(f"expected a PIL image, a list of them, or a tensor; got {type(images).__name__}")
    if batch.shape[1] != channels:
        if batch.shape[1] == 1 and channels == 3:
            batch = batch.repeat(1, 3, 1, 1)
        else:
            raise GenlabError(f"expected images with {channels} channel(s), got {batch.shape[1]}")

    def restore(output: torch.Tensor):
        output = output.detach().cpu()
        if as_pil:
            pictures = [uint8_to_pil(image) for image in signed_to_uint8(output)]
            return pictures[0] if single else pictures
        result = signed_to_uint8(output) if as_uint8 else output
        return result[0] if single else result

    return batch, restore
