"""Fuzzed loaders: random bytes, truncations and mutations of valid PNG/JPEG files and checkpoints, decompression
bombs, odd modes, extreme aspect ratios. Each input either loads correctly or raises a GenlabError naming the
file, within the hypothesis deadline (bounded time) and without decoding a bomb (bounded memory)."""

import io
import tracemalloc
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from genlab import checkpoint as ckpt
from genlab.data.folders import load_aligned_split
from genlab.data.imageio import MAX_PIXELS, load_image
from genlab.utils import GenlabError

FUZZ = settings(max_examples=40, deadline=1500, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW_FUZZ = settings(max_examples=600, deadline=1500, suppress_health_check=[HealthCheck.function_scoped_fixture])


def encoded(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


GRADIENT = Image.linear_gradient("L").resize((24, 16)).convert("RGB")
VALID = {"png": encoded(GRADIENT, "PNG"), "jpg": encoded(GRADIENT, "JPEG")}


def _checkpoint_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"format_version": 1, "state": {"w": torch.arange(6.0)}, "step": 3}, buffer)
    return buffer.getvalue()


CHECKPOINT = _checkpoint_bytes()


def check_image(path: Path) -> None:
    """The contract: a (C, H, W) uint8 tensor with 1 or 3 channels, or a GenlabError naming the file."""
    try:
        image = load_image(path)
    except GenlabError as error:
        assert str(path) in str(error)
        return
    assert image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] in (1, 3)


def mutations(data: bytes):
    """Truncations, byte flips and insertions of a valid file."""
    return st.one_of(
        st.integers(0, len(data) - 1).map(lambda cut: data[:cut]),
        st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)).map(
            lambda flip: data[: flip[0]] + bytes([flip[1]]) + data[flip[0] + 1 :]
        ),
        st.tuples(st.integers(0, len(data)), st.binary(min_size=1, max_size=64)).map(
            lambda insert: data[: insert[0]] + insert[1] + data[insert[0] :]
        ),
    )


IMAGE_BYTES = st.one_of(st.binary(max_size=512), mutations(VALID["png"]), mutations(VALID["jpg"]))


@FUZZ
@given(IMAGE_BYTES, st.sampled_from(["png", "jpg"]))
def test_fuzzed_image_files_load_or_fail_cleanly(tmp_path, data, suffix):
    path = tmp_path / f"fuzz.{suffix}"
    path.write_bytes(data)
    check_image(path)


@pytest.mark.slow
@SLOW_FUZZ
@given(IMAGE_BYTES, st.sampled_from(["png", "jpg"]))
def test_fuzzed_image_files_many(tmp_path, data, suffix):
    path = tmp_path / f"fuzz.{suffix}"
    path.write_bytes(data)
    check_image(path)


ODD_MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "PA", "I", "I;16", "F", "CMYK", "YCbCr", "HSV", "LAB"]


@FUZZ
@given(st.sampled_from(ODD_MODES), st.integers(1, 2000), st.integers(1, 3), st.sampled_from(["png", "tiff", "webp"]))
def test_odd_modes_and_extreme_aspect_ratios(tmp_path, mode, long_side, short_side, image_format):
    try:
        image = Image.new(mode, (long_side, short_side))
        data = encoded(image, image_format.upper())
    except (OSError, ValueError, KeyError):
        return  # PIL cannot write this mode in this format
    path = tmp_path / f"odd.{'png' if image_format == 'png' else image_format}"
    path.write_bytes(data)
    check_image(path)


def test_decompression_bombs_are_refused_without_decoding(tmp_path):
    side = int(MAX_PIXELS**0.5) + 1024
    path = tmp_path / "bomb.png"
    # A tiny file that declares a huge canvas: a one-colour PNG compresses to a few kB.
    Image.new("L", (side, 16)).save(path)
    header = path.read_bytes()
    wide = header[:16] + side.to_bytes(4, "big") + side.to_bytes(4, "big") + header[24:]
    path.write_bytes(wide)  # IHDR now claims side x side pixels (its CRC no longer matches)
    tracemalloc.start()
    with pytest.raises(GenlabError, match="bomb.png"):
        load_image(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20  # nothing near side * side bytes was allocated


def test_a_real_oversized_png_is_refused_as_a_bomb(tmp_path):
    path = tmp_path / "big.png"
    Image.new("1", (MAX_PIXELS // 4096 + 1, 4096)).save(path)  # bilevel: small on disk, > MAX_PIXELS decoded
    with pytest.raises(GenlabError, match="big.png: image is .* decompression bomb"):
        load_image(path)


CHECKPOINT_BYTES = st.one_of(st.binary(max_size=256), mutations(CHECKPOINT))


def check_checkpoint(path: Path) -> None:
    try:
        document = ckpt.load_checkpoint(path)
    except GenlabError as error:
        assert str(path) in str(error) and len(str(error).splitlines()) <= 2
        assert "weights_only=False" not in str(error)
        return
    assert isinstance(document, dict) and "format_version" in document


@FUZZ
@given(CHECKPOINT_BYTES)
def test_fuzzed_checkpoints_load_or_fail_cleanly(tmp_path, data):
    path = tmp_path / "fuzz.pt"
    path.write_bytes(data)
    check_checkpoint(path)


@pytest.mark.slow
@SLOW_FUZZ
@given(CHECKPOINT_BYTES)
def test_fuzzed_checkpoints_many(tmp_path, data):
    path = tmp_path / "fuzz.pt"
    path.write_bytes(data)
    check_checkpoint(path)


@pytest.mark.filterwarnings("ignore:only 1 training item")
@pytest.mark.parametrize("width, height, accepted", [(64, 32, True), (66, 32, True), (96, 32, False), (32, 32, False)])
def test_aligned_pairs_that_are_not_2_to_1_are_refused(tmp_path, width, height, accepted):
    folder = tmp_path / "train"
    folder.mkdir()
    Image.new("RGB", (width, height), (10, 20, 30)).save(folder / "pair.png")
    if accepted:
        split = load_aligned_split(tmp_path, "train", 16)
        assert split.fields["source"].shape == (1, 3, 16, 16)
    else:
        with pytest.raises(GenlabError, match="pair.png: .* not an A|B pair of two square halves"):
            load_aligned_split(tmp_path, "train", 16)
