"""folder:PATH tasks: each layout detected from files on disk, each bad input a GenlabError naming the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.config import DataConfig
from genlab.data.folders import build_folder_task, detect_layout, load_aligned_split, write_aligned_pairs
from genlab.data.tasks import ImageSplit, get_task
from genlab.utils import GenlabError

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _solid(path: Path, size: tuple[int, int], colour, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else colour[0]).save(path)
    return path


def _aligned(path: Path, height: int = 8, mode: str = "RGB") -> Path:
    """An A|B image: red source on the left, blue target on the right."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (2 * height, height), RED)
    image.paste(Image.new("RGB", (height, height), BLUE), (height, 0))
    (image if mode == "RGB" else image.convert(mode)).save(path)
    return path


def _task(root: Path, size: int = 8, **options):
    return build_folder_task(DataConfig(task=f"folder:{root}", image_size=size, **options))


def _raises_naming(root: Path, name: str, split: str = "train", **options) -> str:
    with pytest.raises(GenlabError) as caught:
        _task(root, **options).split(split)
    assert name in str(caught.value)
    return str(caught.value)


def test_aligned_with_split_folders(tmp_path):
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        for n in range(count):
            _aligned(tmp_path / split / f"{split}{n}.png")
    task = get_task(DataConfig(task=f"folder:{tmp_path}", image_size=6))  # through the registry
    assert (task.spec.kind, task.spec.source_channels, task.spec.target_channels) == ("paired", 3, 3)
    assert [len(task.split(s)) for s in ("train", "val", "test")] == [3, 2, 1]
    train = task.split("train")
    assert train.fields["source"].shape == (3, 3, 6, 6) and train.names == ["train0", "train1", "train2"]
    assert train.fields["source"][:, 0].float().mean() > 200 and train.fields["target"][:, 2].float().mean() > 200


def test_aligned_missing_splits_are_carved_off_train(tmp_path):
    for n in range(20):
        _aligned(tmp_path / "train" / f"{n:02d}.png")
    task = _task(tmp_path)
    names = {split: task.split(split).names for split in ("train", "val", "test")}
    assert [len(names[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    assert len(set(sum(names.values(), []))) == 20  # disjoint, nothing lost
    assert _task(tmp_path).split("val").names == names["val"]  # deterministic


def test_flat_aligned_and_flat_image_folder(tmp_path):
    for n in range(10):
        _aligned(tmp_path / "pairs" / f"{n}.png")
    assert detect_layout(tmp_path / "pairs").name == "aligned"
    assert [len(_task(tmp_path / "pairs").split(s)) for s in ("train", "val", "test")] == [8, 1, 1]
    for n in range(10):
        _solid(tmp_path / "photos" / f"{n}.png", (10, 8), RED)
    task = _task(tmp_path / "photos")
    assert (task.spec.kind, task.spec.num_classes) == ("labelled", 0)
    train = task.split("train")
    assert train.fields["image"].shape == (8, 3, 8, 8) and train.fields["label"].tolist() == [0] * 8


def test_paired_by_name(tmp_path):
    for n in range(5):
        _solid(tmp_path / "A" / f"{n}.png", (12, 12), RED, mode="L")
        _solid(tmp_path / "B" / f"{n}.png", (12, 12), BLUE)
    task = _task(tmp_path, size=8)
    assert (task.spec.kind, task.spec.source_channels, task.spec.target_channels) == ("paired", 1, 3)
    split = task.split("train")
    assert split.fields["source"].shape == (3, 1, 8, 8) and split.fields["target"].shape == (3, 3, 8, 8)
    assert [len(task.split(s)) for s in ("val", "test")] == [1, 1]


def test_paired_by_name_with_split_folders(tmp_path):
    for split in ("train", "test"):
        for n in range(2):
            _solid(tmp_path / "A" / split / f"{n}.png", (8, 8), RED)
            _solid(tmp_path / "B" / split / f"{n}.jpg", (8, 8), BLUE)  # stems match across extensions
    task = _task(tmp_path)
    assert len(task.split("test")) == 2 and len(task.split("train")) + len(task.split("val")) == 2


def test_unaligned_cyclegan(tmp_path):
    for n in range(4):
        _solid(tmp_path / "trainA" / f"a{n}.png", (8, 8), RED)
    for n in range(6):
        _solid(tmp_path / "trainB" / f"b{n}.png", (8, 8), BLUE, mode="L")
    _solid(tmp_path / "testA" / "a.png", (8, 8), RED)
    _solid(tmp_path / "testB" / "b.png", (8, 8), BLUE, mode="L")
    task = _task(tmp_path)
    assert (task.spec.kind, task.spec.source_channels, task.spec.target_channels) == ("unpaired", 3, 1)
    train = task.split("train")
    assert len(train.fields["a"]) == 3 and len(train.fields["b"]) == 5  # val carved off each domain
    assert len(task.split("test").fields["b"]) == 1
    assert task.training_batch(step=0, batch_size=2, seed=0)["b"].shape == (2, 1, 8, 8)


def test_class_subfolders(tmp_path):
    for name, count in (("dogs", 3), ("cats", 2)):
        for n in range(count):
            _solid(tmp_path / "train" / name / f"{n}.png", (8, 8), RED)
        _solid(tmp_path / "test" / name / "x.png", (8, 8), BLUE)
    task = _task(tmp_path)
    assert (task.spec.kind, task.spec.num_classes, task.spec.class_names) == ("labelled", 2, ("cats", "dogs"))
    test = task.split("test")
    assert test.fields["label"].tolist() == [0, 1] and test.names == ["cats_x", "dogs_x"]
    assert sorted(task.split("train").fields["label"].tolist() + task.split("val").fields["label"].tolist()) == [
        0, 0, 1, 1, 1
    ]  # fmt: skip
    _solid(tmp_path / "val" / "birds" / "y.png", (8, 8), RED)
    _raises_naming(tmp_path, "birds", split="val")
    flat = tmp_path / "flat"
    for name in ("b", "a"):
        _solid(flat / name / "0.png", (8, 8), RED)
        _solid(flat / name / "1.png", (8, 8), RED)
        _solid(flat / name / "2.png", (8, 8), RED)
    assert _task(flat).spec.class_names == ("a", "b")


def test_not_a_directory_and_no_images(tmp_path):
    file = _solid(tmp_path / "one.png", (8, 8), RED)
    with pytest.raises(GenlabError, match="not a directory"):
        _task(file)
    with pytest.raises(GenlabError, match="not found"):
        _task(tmp_path / "nowhere")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(GenlabError, match="no images found.*recognised layouts"):
        _task(tmp_path / "empty")


def test_odd_width_aligned_image_is_named(tmp_path):
    _aligned(tmp_path / "train" / "good.png")
    odd = tmp_path / "train" / "odd.png"
    Image.new("RGB", (17, 8), RED).save(odd)
    assert "odd" in _raises_naming(tmp_path, "odd.png")


def test_paired_size_mismatch_and_unmatched_names(tmp_path):
    _solid(tmp_path / "A" / "x.png", (8, 8), RED)
    _solid(tmp_path / "B" / "x.png", (10, 8), BLUE)
    message = _raises_naming(tmp_path, "x.png")
    assert "10x8" in message and "8x8" in message
    other = tmp_path / "other"
    _solid(other / "A" / "x.png", (8, 8), RED)
    _solid(other / "B" / "x.png", (8, 8), RED)
    _solid(other / "A" / "lonely.png", (8, 8), RED)
    _raises_naming(other, "lonely.png")


def test_mixed_channels_and_corrupt_files_are_named(tmp_path):
    for n in range(3):
        _aligned(tmp_path / "mixed" / "train" / f"{n}.png")
    _aligned(tmp_path / "mixed" / "train" / "3gray.png", mode="L")
    assert "channel" in _raises_naming(tmp_path / "mixed", "3gray.png")
    _aligned(tmp_path / "bad" / "train" / "0.png")
    (tmp_path / "bad" / "train" / "1broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _raises_naming(tmp_path / "bad", "1broken.png")


def test_skip_bad_files_warns_and_skips(tmp_path):
    for n in range(3):
        _aligned(tmp_path / "train" / f"{n}.png")
    _aligned(tmp_path / "train" / "3gray.png", mode="L")
    (tmp_path / "train" / "4empty.png").write_bytes(b"")
    Image.new("RGB", (17, 8), RED).save(tmp_path / "train" / "5odd.png")
    (tmp_path / "test").mkdir()
    _aligned(tmp_path / "test" / "t.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task = _task(tmp_path, skip_bad_files=True)
        kept = [name for split in ("train", "val") for name in task.split(split).names]
    messages = " ".join(str(w.message) for w in caught)
    assert all(name in messages for name in ("3gray.png", "4empty.png", "5odd.png"))
    assert sorted(kept) == ["0", "1", "2"]


def test_write_aligned_pairs_round_trips(tmp_path):
    generator = torch.Generator().manual_seed(0)
    source = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=generator)
    target = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=generator)
    split = ImageSplit({"source": source, "target": target}, [f"item{n}" for n in range(4)])
    paths = write_aligned_pairs(split, tmp_path / "export" / "train")
    assert [p.name for p in paths] == [f"item{n}.png" for n in range(4)]
    for other in ("val", "test"):
        write_aligned_pairs(split, tmp_path / "export" / other)
    loaded = load_aligned_split(tmp_path / "export", "train", size=16)
    assert loaded.names == split.names
    assert torch.equal(loaded.fields["source"], source) and torch.equal(loaded.fields["target"], target)
    # One channel next to three: the single channel is repeated, so the file is a plain RGB A|B image.
    gray = ImageSplit({"source": source[:, :1], "target": target})
    path = write_aligned_pairs(gray, tmp_path / "gray", names=["a", "b", "c", "d"])[0]
    image = np.asarray(Image.open(path))
    assert image.shape == (16, 32, 3) and (image[:, :16, 0] == image[:, :16, 2]).all()
    assert (image[:, :16, 0] == source[0, 0].numpy()).all()


def _centred_pair(path: Path, rng: np.random.Generator, size: int = 16) -> Path:
    """An A|B pair of a random grey object centred on black (its outline on the left): a garment-like folder."""
    pair = np.zeros((size, 2 * size), dtype=np.uint8)
    low, high = size // 4, 3 * size // 4
    pair[low:high, size + low : size + high] = rng.integers(60, 256)
    pair[low, low:high] = pair[high - 1, low:high] = pair[low:high, low] = pair[low:high, high - 1] = 255
    return _save(pair, path)


def _save(pixels: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def test_a_folder_of_objects_on_a_plain_background_trains_without_the_jitter(tmp_path):
    rng = np.random.default_rng(0)
    for n in range(12):
        _centred_pair(tmp_path / "objects" / "train" / f"{n}.png", rng)
        _save(rng.integers(0, 256, (16, 32, 3), dtype=np.uint8), tmp_path / "photos" / "train" / f"{n}.png")
    objects = _task(tmp_path / "objects", size=16)
    assert objects.load_scale_note is None  # decided on first use, from the training images
    assert (objects.load_scale, objects.load_size) == (1.0, 16)
    assert "plain background" in objects.load_scale_note and "source 100%, target 100%" in objects.load_scale_note
    assert "--set data.load_scale=1.171875 gives" in objects.load_scale_note  # how to jitter anyway
    photos = _task(tmp_path / "photos", size=16)
    assert (photos.load_scale, photos.load_size) == (300 / 256, 19)
    assert photos.load_scale_note.startswith(f"folder:{tmp_path / 'photos'}: photos")
    assert "--set data.load_scale=1 turns it off" in photos.load_scale_note
    # the user's scale or load size wins, and then no image is read to decide
    given = _task(tmp_path / "objects", size=16, load_scale=1.5)
    sized = _task(tmp_path / "objects", size=16, load_size=20)
    assert (given.load_scale, given.load_size, sized.load_size) == (1.5, 24, 20)
    assert given.load_scale_note is None and not given._splits and not sized._splits


def test_the_jitter_rule_needs_every_image_field_plain(tmp_path):
    """A label map -> photo folder whose label maps have a plain border but whose photos do not is photos."""
    rng = np.random.default_rng(1)
    for n in range(6):
        pair = np.zeros((16, 32), dtype=np.uint8)
        pair[:, 16:] = rng.integers(0, 256, (16, 16))
        _save(pair, tmp_path / "train" / f"{n}.png")
    task = _task(tmp_path, size=16)
    assert task.load_scale == 300 / 256 and "source 100%" in task.load_scale_note
