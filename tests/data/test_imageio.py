"""Safe image loading: every bad file gives a GenlabError naming it; good files round-trip exactly."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data.imageio import image_channels, list_images, load_image, save_image
from genlab.utils import GenlabError


def _rgb(height: int = 8, width: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write(path: Path, array: np.ndarray, mode: str | None = None, **options) -> Path:
    Image.fromarray(array, mode=mode).save(path, **options) if mode else Image.fromarray(array).save(path, **options)
    return path


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(GenlabError) as caught:
        load_image(path, **kwargs)
    message = str(caught.value)
    assert path.name in message
    return message


def test_rgb_and_gray_round_trip_exactly(tmp_path):
    rgb = _rgb()
    loaded = load_image(_write(tmp_path / "rgb.png", rgb))
    assert loaded.dtype == torch.uint8 and loaded.shape == (3, 8, 10)
    assert torch.equal(loaded, torch.from_numpy(rgb).permute(2, 0, 1))
    gray = rgb[:, :, 0]
    loaded = load_image(_write(tmp_path / "gray.png", gray, "L"), expected_channels=1)
    assert loaded.shape == (1, 8, 10) and torch.equal(loaded[0], torch.from_numpy(gray))
    assert image_channels(tmp_path / "gray.png") == 1 and image_channels(tmp_path / "rgb.png") == 3


def test_save_image_uint8_and_float(tmp_path):
    image = torch.from_numpy(_rgb()).permute(2, 0, 1).contiguous()
    path = save_image(image, tmp_path / "out" / "a.png")
    assert torch.equal(load_image(path), image)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    signed = torch.tensor([[[-1.0, 0.0, 1.0]]])  # (1, 1, 3) in [-1, 1]
    assert load_image(save_image(signed, tmp_path / "f.png")).flatten().tolist() == [0, 128, 255]
    with pytest.raises(GenlabError):
        save_image(torch.zeros(2, 4, 4, dtype=torch.uint8), tmp_path / "two.png")


def test_palette_without_transparency_becomes_rgb_and_bilevel_becomes_gray(tmp_path):
    palette_image = Image.fromarray(_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette_image.save(tmp_path / "p.png")
    loaded = load_image(tmp_path / "p.png")
    assert loaded.shape == (3, 8, 10)
    assert torch.equal(loaded, torch.from_numpy(np.array(palette_image.convert("RGB"))).permute(2, 0, 1))
    Image.new("1", (5, 4), 1).save(tmp_path / "bits.png")
    assert load_image(tmp_path / "bits.png").unique().tolist() == [255]


def test_missing_empty_corrupt_truncated_and_not_an_image(tmp_path):
    assert "not found" in _error(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty" in _error(tmp_path / "empty.png")
    (tmp_path / "notes.png").write_text("this is a text file, not a picture\n" * 5)
    assert "not an image" in _error(tmp_path / "notes.png")
    good = _write(tmp_path / "good.png", _rgb(64, 64)).read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    _error(tmp_path / "cut.png")
    jpeg = _write(tmp_path / "good.jpg", _rgb(64, 64), quality=90).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    assert "truncated" in _error(tmp_path / "cut.jpg")
    garbled = bytearray(good)
    garbled[40:60] = b"\xff" * 20  # inside IHDR/IDAT: bad CRC or bad data
    (tmp_path / "garbled.png").write_bytes(bytes(garbled))
    _error(tmp_path / "garbled.png")
    with pytest.raises(GenlabError, match="not a regular file"):
        load_image(tmp_path)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    """A small PNG file whose header announces a huge image (the pixel data is a few bytes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused(tmp_path):
    (tmp_path / "big.png").write_bytes(_png_header_only(9000, 9000))  # over genlab's bound, under PIL's
    assert "decompression bomb" in _error(tmp_path / "big.png")
    (tmp_path / "bomb.png").write_bytes(_png_header_only(12000, 12000))  # PIL warns: refused as an error
    assert "decompression bomb" in _error(tmp_path / "bomb.png")
    (tmp_path / "huge.png").write_bytes(_png_header_only(40000, 40000))  # past PIL's own error limit too
    assert "decompression bomb" in _error(tmp_path / "huge.png")


def test_alpha_and_wide_modes_are_refused(tmp_path):
    rgba = np.dstack([_rgb(), np.full((8, 10), 255, np.uint8)])
    assert "alpha" in _error(_write(tmp_path / "rgba.png", rgba, "RGBA"))
    assert "alpha" in _error(_write(tmp_path / "la.png", rgba[:, :, :2].copy(), "LA"))
    transparent = Image.fromarray(_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    transparent.info["transparency"] = 0
    transparent.save(tmp_path / "ptrans.png", transparency=0)
    assert "transparency" in _error(tmp_path / "ptrans.png")
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(tmp_path / "deep.png")
    assert "8 bits" in _error(tmp_path / "deep.png")
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "float.tif")
    assert "8 bits" in _error(tmp_path / "float.tif")


def test_expected_channels_mismatch_names_the_file(tmp_path):
    path = _write(tmp_path / "colour.png", _rgb())
    message = _error(path, expected_channels=1)
    assert "3 channel" in message and "expected 1" in message


def test_list_images_sorted_case_insensitive_skipping_others(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.JpEg", "d.bmp", "e.webp"):
        _write(tmp_path / name, _rgb())
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "._a.jpg").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork companion
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.JpEg", "d.bmp", "e.webp"]
    with pytest.raises(GenlabError, match="not a directory"):
        list_images(tmp_path / "a.jpg")
