"""facades-synth: deterministic, palette-exact label maps, every class present, any size, fixed splits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genlab.config import DataConfig
from genlab.data import facades_synth
from genlab.data.facades_synth import (
    CLASS_NAMES,
    PALETTE,
    SPLIT_RANGES,
    build_task,
    classes_to_label_map,
    item_names,
    label_map_to_classes,
    render_sample,
)
from genlab.utils import GenlabError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def train_32():
    return facades_synth.generate_split("train", 32)


def _palette_only(label_rgb: torch.Tensor) -> bool:
    pixels = label_rgb.movedim(-3, -1).reshape(-1, 1, 3).int()
    return bool((pixels == PALETTE.int()[None]).all(dim=2).any(dim=1).all())


def test_palette_and_names():
    assert len(CLASS_NAMES) == 12 and CLASS_NAMES[0] == "background" and CLASS_NAMES[-1] == "shop"
    assert PALETTE.dtype == torch.uint8 and PALETTE.shape == (12, 3)
    distances = (PALETTE.int()[:, None] - PALETTE.int()[None]).abs().max(dim=2).values
    assert int(distances[~torch.eye(12, dtype=torch.bool)].min()) >= 80  # clearly distinct colours


def test_deterministic_in_seed_and_index():
    label, photo = render_sample(7, 48)
    again_label, again_photo = render_sample(7, 48)
    assert label.dtype == photo.dtype == torch.uint8 and label.shape == photo.shape == (3, 48, 48)
    assert torch.equal(label, again_label) and torch.equal(photo, again_photo)
    assert not torch.equal(photo, render_sample(8, 48)[1])
    assert not torch.equal(photo, render_sample(7, 48, seed=1)[1])
    assert not torch.equal(label, render_sample(7, 48, seed=1)[0])


@pytest.mark.parametrize("size", [16, 32, 64, 100, 128, 256])
def test_any_size_gives_palette_exact_label_maps(size):
    for index in (0, 3):
        label, photo = render_sample(index, size)
        assert label.shape == photo.shape == (3, size, size)
        assert _palette_only(label)
        assert photo.float().std() > 10  # a picture, not a flat colour


def test_the_layout_does_not_depend_on_the_size():
    # The same building at 64 and 256 px: most pixels agree (thin parts differ by rounding); another
    # building agrees far less.
    for index in (0, 2, 3):
        small = label_map_to_classes(render_sample(index, 64)[0])
        large = label_map_to_classes(render_sample(index, 256)[0])
        reduced = F.interpolate(large[None, None].float(), size=(64, 64), mode="nearest")[0, 0].long()
        other = label_map_to_classes(render_sample(index + 1, 64)[0])
        assert (reduced == small).float().mean() > 0.8 > 0.5 > (other == small).float().mean()


def test_every_class_appears_across_the_train_split(train_32):
    labels, photos = train_32
    assert labels.shape == photos.shape == (400, 3, 32, 32)
    classes = label_map_to_classes(labels)
    counts = torch.bincount(classes.flatten(), minlength=12)
    assert (counts > 0).all(), dict(zip(CLASS_NAMES, counts.tolist(), strict=True))
    assert _palette_only(labels)


def test_label_map_to_classes_round_trips(train_32):
    labels = train_32[0][:20]
    classes = label_map_to_classes(labels)
    assert classes.dtype == torch.int64 and classes.shape == (20, 32, 32)
    assert torch.equal(classes_to_label_map(classes), labels)
    assert torch.equal(label_map_to_classes(labels[0]), classes[0])  # a single (3, H, W) map
    noisy = (labels.int() + torch.randint(-30, 31, labels.shape)).clamp(0, 255).to(torch.uint8)
    assert torch.equal(label_map_to_classes(noisy), classes)  # nearest colour absorbs JPEG-like noise
    signed = labels.float() / 127.5 - 1  # model-range floats
    assert torch.equal(label_map_to_classes(signed), classes)
    with pytest.raises(GenlabError):
        label_map_to_classes(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


def test_splits_are_fixed_disjoint_and_sized():
    assert {split: stop - start for split, (start, stop) in SPLIT_RANGES.items()} == {
        "train": 400, "val": 100, "test": 100
    }  # fmt: skip
    names = {split: item_names(split) for split in SPLIT_RANGES}
    assert [len(names[s]) for s in ("train", "val", "test")] == [400, 100, 100]
    assert names["train"][12] == "facade_00012"
    assert not set(names["train"]) & set(names["val"]) and not set(names["val"]) & set(names["test"])
    assert not set(names["train"]) & set(names["test"])
    with pytest.raises(GenlabError):
        item_names("holdout")


def test_build_task_spec_splits_and_cache(tmp_path, monkeypatch):
    task = build_task(DataConfig(task="facades-synth", image_size=32))
    spec = task.spec
    assert (spec.name, spec.kind, spec.image_size) == ("facades-synth", "paired", 32)
    assert (spec.source_channels, spec.target_channels) == (3, 3)
    assert spec.label_map_fields == ("source",) and spec.class_names == CLASS_NAMES
    val = task.split("val")
    assert len(val) == 100 and val.names[0] == "facade_00400"
    assert val.fields["source"].shape == val.fields["target"].shape == (100, 3, 32, 32)
    assert torch.equal(val.fields["source"][3], render_sample(403, 32)[0])
    assert torch.equal(val.fields["target"][3], render_sample(403, 32)[1])
    cached = tmp_path / "cache" / "facades-synth" / f"{facades_synth.GENERATOR_VERSION}-32-val.pt"
    assert cached.is_file()

    def no_generation(*args, **kwargs):
        raise AssertionError("the cached split should have been read")

    monkeypatch.setattr(facades_synth, "generate_split", no_generation)
    again = build_task(DataConfig(task="facades-synth", image_size=32)).split("val")
    assert torch.equal(again.fields["target"], val.fields["target"])
    cached.write_bytes(b"damaged")  # a damaged cache is regenerated, not trusted
    monkeypatch.undo()
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    assert torch.equal(build_task(DataConfig(image_size=32)).split("val").fields["source"], val.fields["source"])


def test_train_limit_and_too_small_size():
    task = build_task(DataConfig(image_size=16, train_limit=5))
    assert len(task.split("train")) == 5
    with pytest.raises(GenlabError, match="image_size"):
        build_task(DataConfig(image_size=8))


def test_the_spec_carries_the_palette_and_round_trips_through_a_dict():
    import dataclasses

    from genlab.data.facades_synth import facades_spec
    from genlab.data.tasks import TaskSpec, label_map_legend

    spec = facades_spec("facades-synth", 16)
    assert spec.palette == tuple(tuple(colour) for colour in PALETTE.tolist()) and len(spec.palette) == 12
    as_lists = {key: list(map(list, value)) if key == "palette" else value
                for key, value in dataclasses.asdict(spec).items()}
    assert TaskSpec.from_dict(as_lists) == spec  # nested lists from a serialiser come back as tuples
    older = {key: value for key, value in dataclasses.asdict(spec).items() if key != "palette"}
    assert TaskSpec.from_dict(older).palette == () and label_map_legend(TaskSpec.from_dict(older)) is None
