"""Paired jitter: both images of a pair get the same crop and flip; label maps keep palette colours;
batches are a pure function of (seed, step)."""

from __future__ import annotations

import pytest
import torch

from genlab.config import DataConfig
from genlab.data.facades_synth import PALETTE, build_task, render_sample
from genlab.data.tasks import ImageSplit, Task, TaskSpec, epoch_batch_indices
from genlab.data.transforms import crop_and_flip, jitter_batch, resize
from genlab.utils import make_generator, signed_to_uint8, uint8_to_signed


def _coordinates(batch: int, size: int) -> torch.Tensor:
    """Images whose pixels encode their own position: channel 0 = row, channel 1 = column, channel 2 = item."""
    rows = torch.arange(size).view(1, size, 1).expand(batch, size, size)
    columns = torch.arange(size).view(1, 1, size).expand(batch, size, size)
    items = torch.arange(batch).view(batch, 1, 1).expand(batch, size, size)
    return torch.stack([rows, columns, items], dim=1).float()


def test_crop_and_flip_known_offsets():
    images = _coordinates(3, 10)
    tops, lefts = torch.tensor([0, 2, 5]), torch.tensor([1, 0, 5])
    flips = torch.tensor([False, True, False])
    cropped = crop_and_flip(images, tops, lefts, flips, crop_size=5)
    assert cropped.shape == (3, 3, 5, 5)
    assert torch.equal(cropped[0], images[0, :, 0:5, 1:6])
    assert torch.equal(cropped[1], images[1, :, 2:7, 0:5].flip(-1))
    assert torch.equal(cropped[2], images[2, :, 5:10, 5:10])


def test_jitter_crops_and_flips_both_images_identically():
    source = uint8_to_signed(torch.randint(0, 256, (8, 3, 24, 24), dtype=torch.uint8))
    out = jitter_batch(
        {"source": source, "target": source.clone()}, load_size=28, crop_size=24, flip=True,
        generator=make_generator(3),
    )  # fmt: skip
    assert out["source"].shape == (8, 3, 24, 24)
    assert torch.equal(out["source"], out["target"])
    # Different channel counts (edges -> garment) still share the crop and flip.
    coords = _coordinates(6, 20)
    out = jitter_batch(
        {"source": coords[:, :1], "target": coords}, load_size=20, crop_size=16, flip=True,
        generator=make_generator(5),
    )  # fmt: skip
    assert torch.equal(out["source"], out["target"][:, :1])


def test_jitter_offsets_follow_the_generator():
    images = _coordinates(4, 12)
    out = jitter_batch({"image": images}, load_size=12, crop_size=8, flip=True, generator=make_generator(11))
    generator = make_generator(11)
    tops = torch.randint(0, 5, (4,), generator=generator)
    lefts = torch.randint(0, 5, (4,), generator=generator)
    flips = torch.rand(4, generator=generator) < 0.5
    for n in range(4):
        expected = images[n, :, tops[n] : tops[n] + 8, lefts[n] : lefts[n] + 8]
        assert torch.equal(out["image"][n], expected.flip(-1) if flips[n] else expected)
    # Every crop is a window of the original: rows and columns are consecutive.
    assert (out["image"][:, 0].diff(dim=1) == 1).all()
    assert (out["image"][:, 1].diff(dim=2).abs() == 1).all()


def test_no_flip_when_disabled():
    images = _coordinates(16, 10)
    out = jitter_batch({"image": images}, load_size=10, crop_size=10, flip=False, generator=make_generator(0))
    assert torch.equal(out["image"], images)


def test_nearest_fields_keep_only_palette_colours():
    labels = torch.stack([render_sample(index, 32)[0] for index in range(4)])
    batch = {"source": uint8_to_signed(labels), "target": uint8_to_signed(labels)}
    out = jitter_batch(batch, load_size=45, crop_size=32, flip=True, nearest_fields=("source",),
                       generator=make_generator(1))  # fmt: skip
    palette = {tuple(colour) for colour in PALETTE.tolist()}
    nearest_colours = {tuple(c) for c in signed_to_uint8(out["source"]).permute(0, 2, 3, 1).reshape(-1, 3).tolist()}
    assert nearest_colours <= palette
    bicubic_colours = {tuple(c) for c in signed_to_uint8(out["target"]).permute(0, 2, 3, 1).reshape(-1, 3).tolist()}
    assert not bicubic_colours <= palette  # the bicubic field does blend colours: the test can tell them apart


def test_resize_nearest_and_bicubic():
    images = uint8_to_signed(torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8))
    assert resize(images, 8) is images
    up = resize(images, 16, nearest=True)
    assert torch.equal(up[:, :, ::2, ::2], images)
    smooth = resize(images, 5)
    assert smooth.shape == (2, 3, 5, 5) and smooth.abs().max() <= 1


def test_epoch_batch_indices_cover_each_item_once_per_epoch():
    count, batch = 12, 4
    for epoch in range(3):
        drawn = torch.cat([epoch_batch_indices(count, batch, epoch * 3 + step, seed=7) for step in range(3)])
        assert sorted(drawn.tolist()) == list(range(count))
    # With a remainder, an epoch never repeats an item.
    drawn = torch.cat([epoch_batch_indices(10, 3, step, seed=7) for step in range(3)])
    assert len(set(drawn.tolist())) == 9
    # Epochs are shuffled differently.
    assert not torch.equal(epoch_batch_indices(12, 12, 0, seed=7), epoch_batch_indices(12, 12, 1, seed=7))
    # Tiny sets fill a batch by repetition.
    assert sorted(epoch_batch_indices(2, 4, 0, seed=1).tolist()) == [0, 0, 1, 1]


def test_epoch_batch_indices_are_a_pure_function_of_seed_and_step():
    first = [epoch_batch_indices(50, 8, step, seed=3) for step in (0, 5, 17)]
    torch.manual_seed(999)  # global RNG state must not matter
    second = [epoch_batch_indices(50, 8, step, seed=3) for step in (0, 5, 17)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(epoch_batch_indices(50, 8, 0, seed=3), epoch_batch_indices(50, 8, 0, seed=4))


def test_training_batches_repeat_for_the_same_seed_and_step(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path))
    task = build_task(DataConfig(image_size=16, train_limit=20))
    a = task.training_batch(step=3, batch_size=4, seed=0)
    b = task.training_batch(step=3, batch_size=4, seed=0)
    assert torch.equal(a["source"], b["source"]) and torch.equal(a["target"], b["target"])
    assert a["source"].shape == (4, 3, 16, 16) and a["source"].dtype == torch.float32
    assert not torch.equal(a["target"], task.training_batch(step=4, batch_size=4, seed=0)["target"])


def test_the_jitter_runs_on_the_training_device_from_uint8_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path))
    task = build_task(DataConfig(image_size=16, train_limit=20))
    seen = []
    prepare = task.prepare

    def spy(items, **kwargs):
        seen.append({key: (value.dtype, value.device) for key, value in items.items()})
        return prepare(items, **kwargs)

    monkeypatch.setattr(task, "prepare", spy)
    moved = task.training_batch(step=3, batch_size=4, seed=0, device=torch.device("cpu"), pin_memory=True)
    # what reaches the jitter is still uint8 and already on the device: the copy moves a quarter of the bytes
    assert seen[-1]["source"] == (torch.uint8, torch.device("cpu"))
    here = task.training_batch(step=3, batch_size=4, seed=0)
    assert torch.equal(moved["source"], here["source"]) and torch.equal(moved["target"], here["target"])


def test_unpaired_domains_are_drawn_independently():
    spec = TaskSpec("toy", "unpaired", 8, 1, 1)
    a = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 1, 8, 8).contiguous()
    b = (100 + torch.arange(9, dtype=torch.uint8)).view(9, 1, 1, 1).expand(9, 1, 8, 8).contiguous()
    task = Task(spec, lambda split: ImageSplit({"a": a, "b": b}), DataConfig(task="toy", image_size=8, load_size=8))
    batch = task.training_batch(step=0, batch_size=3, seed=0)
    assert batch["a"].shape == batch["b"].shape == (3, 1, 8, 8)


def test_plain_border_share_counts_border_pixels_at_the_background_value():
    from genlab.data.transforms import BORDER_TOLERANCE, plain_border_share

    images = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)  # a 1-pixel ring at 16 px: 60 border pixels an image
    images[:, :, 4:12, 4:12] = 255  # the objects, inside the ring: not counted
    images[0, :, 0, :15] = 200  # 15 border pixels of image 0 far from the background
    images[1, 1, 15, :5] = 200  # 5 of image 1, off in one channel only: still not background
    images[2, :, 5, 0] = BORDER_TOLERANCE  # within the tolerance: background
    images[3, :, 6, 0] = BORDER_TOLERANCE + 1  # just beyond it
    assert plain_border_share(images) == pytest.approx((240 - 15 - 5 - 1) / 240)
    # the background is the border's commonest value, per channel (white here), not zero
    assert plain_border_share(255 - images) == pytest.approx((240 - 15 - 5 - 1) / 240)
    ring = torch.zeros(1, 1, 64, 64, dtype=torch.uint8)
    ring[..., 4:60, 4:60] = 255  # at 64 px the ring is 64 // 16 = 4 pixels wide: all of it background
    assert plain_border_share(ring) == 1.0
    ring[..., 3, 30] = 255
    assert plain_border_share(ring) == pytest.approx(1 - 1 / (64 * 64 - 56 * 56))
    with pytest.raises(ValueError, match="uint8"):
        plain_border_share(images.float())


def test_plain_background_shares_read_the_image_fields_on_an_even_stride():
    from genlab.data.transforms import BORDER_SAMPLE, plain_background_shares

    count = 2 * BORDER_SAMPLE
    photos = torch.randint(0, 256, (count, 1, 8, 8), dtype=torch.uint8)
    # class-sorted: the first half on black, the second half noise; a stride covers both halves
    photos[: count // 2] = 0
    shares = plain_background_shares({"image": photos, "label": torch.zeros(count, dtype=torch.long)})
    assert list(shares) == ["image"]  # labels are not images
    assert 0.5 < shares["image"] < 0.56  # half the images plain, plus noise pixels within 10 levels of 0
