"""Safe image files: load 8-bit L/RGB images as uint8 tensors with clear errors, write PNGs atomically.

Every failure a user can meet with a folder of images (missing, empty, truncated, not an image, a
decompression bomb, alpha or 16-bit modes, the wrong channel count) becomes a `GenlabError` naming the file,
so a dataset with one bad file stops with a message the user can act on, not a PIL traceback.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from genlab.utils import GenlabError, atomic_path, pil_to_uint8, signed_to_uint8, uint8_to_pil

# Largest image accepted (width * height): far beyond any training image, far below a decompression bomb.
MAX_PIXELS = 8192 * 8192
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

# Modes whose alpha channel would be dropped silently by a conversion to L or RGB.
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
# Modes with more than 8 bits per sample: converting them would clip or rescale values without telling anyone.
_WIDE_MODES = {"I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;32", "I;32B"}


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside `folder` (png/jpg/jpeg/bmp/webp, any case), sorted by name.

    Hidden files are left out: macOS `._name.png` companions carry an image extension but are not images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GenlabError(f"{folder}: not a directory")
    files = [
        entry
        for entry in folder.iterdir()
        if entry.is_file() and not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(files, key=lambda entry: entry.name)


def image_channels(path: str | os.PathLike) -> int:
    """The channel count `load_image` will return for `path` (1 or 3), read from the header only."""
    from PIL import Image

    path = Path(path)
    image = _open(path, Image)
    with image:
        return _channels_for_mode(path, image)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image at `path`, read from the header only (no decoding)."""
    from PIL import Image

    path = Path(path)
    with _open(path, Image) as image:
        return image.size


def load_image(path: str | os.PathLike, expected_channels: int | None = None) -> torch.Tensor:
    """Decode an 8-bit image file into a uint8 tensor (C, H, W): L -> 1 channel, RGB -> 3.

    Raises a GenlabError naming the file when it is missing, empty, corrupt or truncated, not an image, larger
    than MAX_PIXELS, has an alpha channel or more than 8 bits per sample, or has a channel count other than
    `expected_channels`. Palette images without transparency are converted to RGB.

    Example: `load_image("photo.png", expected_channels=3).shape` -> `torch.Size([3, H, W])`.
    """
    from PIL import Image

    path = Path(path)
    image = _open(path, Image)
    with image:
        channels = _channels_for_mode(path, image)
        if expected_channels is not None and channels != expected_channels:
            raise GenlabError(
                f"{path}: has {channels} channel(s) (mode {image.mode}), expected {expected_channels}"
            )
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            # PIL reports truncation as OSError and broken PNG chunks as SyntaxError.
            raise GenlabError(f"{path}: corrupt or truncated image ({error})") from error
        if image.mode == "P" or image.mode == "1":
            image = image.convert("RGB" if image.mode == "P" else "L")
        return pil_to_uint8(image)


_SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP"}


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write one image (C, H, W) or (H, W) atomically, in the format of the path's extension (PNG otherwise).

    uint8 tensors are written as they are; float tensors are taken to be in [-1, 1] (genlab's model range).
    """
    if image.dim() == 2:
        image = image[None]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise GenlabError(f"{path}: can only save images shaped (1|3, H, W) or (H, W), got {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        image = signed_to_uint8(image)
    path = Path(path)
    with atomic_path(path) as temporary:
        # The temporary name ends in .tmp, so the format is named explicitly.
        image_format = _SAVE_FORMATS.get(path.suffix.lower(), "PNG")
        extra = {"quality": 95} if image_format == "JPEG" else {}
        uint8_to_pil(image.cpu()).save(temporary, format=image_format, **extra)
    return path


def _open(path: Path, image_module):
    """Open `path` lazily (header only) with every open-time failure turned into a GenlabError."""
    if not path.exists():
        raise GenlabError(f"{path}: file not found")
    if not path.is_file():
        raise GenlabError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise GenlabError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL only warns between its own limit and twice it; treat the warning as the error it should be.
            warnings.simplefilter("error", image_module.DecompressionBombWarning)
            image = image_module.open(path)
    except (image_module.DecompressionBombError, image_module.DecompressionBombWarning) as error:
        raise GenlabError(f"{path}: image too large, refused as a possible decompression bomb ({error})") from error
    except image_module.UnidentifiedImageError as error:
        raise GenlabError(f"{path}: not an image, or a format PIL cannot read") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise GenlabError(f"{path}: corrupt image header ({error})") from error
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise GenlabError(
            f"{path}: image is {width}x{height} pixels, more than the {MAX_PIXELS} allowed "
            "(refused as a possible decompression bomb)"
        )
    if width == 0 or height == 0:
        image.close()
        raise GenlabError(f"{path}: image has zero width or height")
    return image


def _channels_for_mode(path: Path, image) -> int:
    """1 for L (and bilevel), 3 for RGB (and palette without transparency); a GenlabError for anything else."""
    mode = image.mode
    if mode in ("L", "1"):
        return 1
    if mode == "RGB":
        return 3
    if mode == "P":
        if "transparency" in image.info:
            raise GenlabError(
                f"{path}: palette image with transparency; its alpha would be lost (save it as RGB without alpha)"
            )
        return 3
    if mode in _ALPHA_MODES:
        raise GenlabError(
            f"{path}: image has an alpha channel (mode {mode}) that would be dropped silently; "
            "save it as RGB or grayscale without alpha"
        )
    if mode in _WIDE_MODES or mode.startswith("I;"):
        raise GenlabError(
            f"{path}: {mode} image with more than 8 bits per sample (16-bit or float); convert it to 8-bit first"
        )
    raise GenlabError(f"{path}: unsupported image mode {mode} (expected 8-bit grayscale L or RGB)")
