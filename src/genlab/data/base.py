"""What a task is: its spec, its splits held in memory, and how training batches are drawn from it.

A task keeps each split in memory as uint8 tensors (decoded once), so batches are gathered and augmented
with tensor ops. Batches are a pure function of (seed, step): resuming at step k draws exactly the batches an
uninterrupted run would have drawn, with no data-loader state to save. The registry of named tasks is
`genlab.data.tasks`; the built-in task modules build on this one alone, so imports run one way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from genlab.config import PHOTO_LOAD_SCALE, DataConfig
from genlab.data.transforms import jitter_batch
from genlab.utils import GenlabError, derive_seed, make_generator, uint8_to_signed

TaskKind = Literal["paired", "unpaired", "labelled"]
# Reads a task's training split and returns its jitter's resize factor and a sentence saying why.
LoadScaleRule = Callable[["ImageSplit"], tuple[float, str]]
SPLITS = ("train", "val", "test")

# The fields each task kind yields (DESIGN.md section 3).
FIELDS: dict[str, tuple[str, ...]] = {
    "paired": ("source", "target"),
    "unpaired": ("a", "b"),
    "labelled": ("image", "label"),
}


@dataclass(frozen=True)
class TaskSpec:
    """What a model needs to know about its task to build its networks."""

    name: str
    kind: TaskKind
    image_size: int
    source_channels: int  # channels of "source" (paired), "a" (unpaired) or "image" (labelled)
    target_channels: int  # channels of "target" (paired), "b" (unpaired) or "image" (labelled)
    num_classes: int = 0  # > 0 for labelled tasks with class labels
    # Fields holding label maps drawn with a palette: resized with nearest-neighbour so no new colours appear.
    label_map_fields: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    # The RGB colour of each class in the label maps (class_names order); () when the task has none.
    palette: tuple[tuple[int, int, int], ...] = ()

    @staticmethod
    def from_dict(values: dict) -> TaskSpec:
        """A TaskSpec from its stored dict (checkpoints keep one; tuples come back as lists from serialisers)."""
        def as_tuple(value):
            return tuple(as_tuple(item) for item in value) if isinstance(value, (list, tuple)) else value

        return TaskSpec(**{key: as_tuple(value) for key, value in values.items()})


@dataclass
class ImageSplit:
    """One split held in memory: uint8 image tensors (N, C, H, W) and int64 labels, plus item names."""

    fields: dict[str, torch.Tensor]
    names: list[str] = field(default_factory=list)  # one per item of the first field; output file names

    def __post_init__(self) -> None:
        if not self.names:
            first = next(iter(self.fields.values()))
            self.names = [f"{index:05d}" for index in range(len(first))]

    def __len__(self) -> int:
        return len(next(iter(self.fields.values())))

    def subset(self, indices: torch.Tensor | list[int], key: str | None = None) -> dict[str, torch.Tensor]:
        """The items at `indices` of one field (or of every field of equal length when `key` is None)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        if key is not None:
            return {key: self.fields[key][index]}
        return {name: values[index] for name, values in self.fields.items()}


class Task:
    """A named dataset with a spec and lazily built splits."""

    def __init__(
        self,
        spec: TaskSpec,
        load_split: Callable[[str], ImageSplit],
        config: DataConfig | None = None,
        default_load_scale: float | LoadScaleRule = PHOTO_LOAD_SCALE,
    ) -> None:
        """`default_load_scale` is the training jitter's resize factor where `config.load_scale` is unset: the
        task's own (1 = no jitter for tasks whose test images are centred and uncropped), or a rule that reads
        it off the training split (folders: `load_scale_note` then says what it found)."""
        self.spec = spec
        self.config = config or DataConfig(task=spec.name, image_size=spec.image_size)
        self._load_split = load_split
        self._splits: dict[str, ImageSplit] = {}
        self._load_scale_rule = default_load_scale if callable(default_load_scale) else None
        self._load_scale: float | None = self.config.load_scale
        if self._load_scale is None and self._load_scale_rule is None:
            self._load_scale = default_load_scale
        self.load_scale_note: str | None = None
        known = self.config.load_size is not None or self._load_scale is not None  # without reading any image
        if known and spec.image_size * 2 < (load_size := self.load_size):
            warnings.warn(
                f"data.image_size {spec.image_size} is less than half of data.load_size {load_size}: each training "
                "crop sees under a quarter of the image (was --size changed but not --load-size?)",
                stacklevel=2,
            )

    @property
    def load_scale(self) -> float:
        """The training jitter's resize factor: the config's, the task's own, or its rule's reading of the
        training split (decided on first use; the trainer records it in config.yaml, so a resume keeps it)."""
        if self._load_scale is None:
            assert self._load_scale_rule is not None
            self._load_scale, self.load_scale_note = self._load_scale_rule(self.split("train"))
        return self._load_scale

    @property
    def load_size(self) -> int:
        """The size training images are resized to before their random crop of spec.image_size."""
        if self.config.load_size is not None:
            return self.config.load_size  # the scale (which a rule may have to read images for) is not needed
        return self.config.resolved_load_size(self.load_scale)

    def split(self, name: str) -> ImageSplit:
        if name not in SPLITS:
            raise GenlabError(f"unknown split {name!r} (valid: {', '.join(SPLITS)})")
        if name not in self._splits:
            loaded = self._load_split(name)
            if name == "train" and self.config.train_limit is not None:
                limit = self.config.train_limit
                loaded = ImageSplit({key: value[:limit] for key, value in loaded.fields.items()}, loaded.names[:limit])
            if len(loaded) == 0:
                raise GenlabError(f"task {self.spec.name}: the {name} split is empty")
            self._splits[name] = loaded
        return self._splits[name]

    def training_batch(
        self,
        step: int,
        batch_size: int,
        seed: int,
        unpaired: bool = False,
        device: torch.device | None = None,
        pin_memory: bool = False,
    ) -> dict[str, torch.Tensor]:
        """The augmented training batch for `step`: float images in [-1, 1], int64 labels.

        With `device` the uint8 rows move there first (a quarter of the bytes of float images; page-locked
        first with `pin_memory`, for an asynchronous copy to CUDA), so the conversion, resize, crop and flip run
        as batch tensor ops on the training device. The crop and flip draws come from a CPU generator seeded by
        (seed, step) either way.

        `unpaired=True` (models that train on unpaired data, such as CycleGAN) draws the two fields of a paired
        task with two independent epoch permutations, so "source" and "target" arrive unaligned; each field is
        still a permutation of its training set over an epoch. Unpaired tasks are always drawn that way, and
        labelled tasks ignore the flag.
        """
        split = self.split("train")
        generator = make_generator(derive_seed(seed, step, 1))
        if self.spec.kind == "unpaired" or (unpaired and self.spec.kind == "paired"):
            # CycleGAN draws the two domains independently; each has its own epoch permutation.
            items = {}
            for offset, key in enumerate(FIELDS[self.spec.kind]):
                count = len(split.fields[key])
                indices = epoch_batch_indices(count, batch_size, step, derive_seed(seed, offset))
                items.update(split.subset(indices, key))
        else:
            indices = epoch_batch_indices(len(split), batch_size, step, seed)
            items = split.subset(indices)
        if device is not None:
            pin = pin_memory and torch.device(device).type == "cuda"
            items = {key: (value.pin_memory() if pin else value).to(device, non_blocking=pin)
                     for key, value in items.items()}
        return self.prepare(items, generator=generator, augment=True)

    def prepare(
        self, items: dict[str, torch.Tensor], generator: torch.Generator | None = None, augment: bool = False
    ) -> dict[str, torch.Tensor]:
        """uint8 items -> model batch: images to float [-1, 1] (jittered when `augment`), labels as int64."""
        images = {key: value for key, value in items.items() if value.dtype == torch.uint8}
        batch = {key: value.long() for key, value in items.items() if value.dtype != torch.uint8}
        floats = {key: uint8_to_signed(value) for key, value in images.items()}
        if augment:
            floats = jitter_batch(
                floats,
                load_size=self.load_size,
                crop_size=self.spec.image_size,
                flip=self.config.flip,
                nearest_fields=self.spec.label_map_fields,
                generator=generator,
            )
        batch.update(floats)
        return batch


def epoch_batch_indices(count: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the batch for `step`: shuffled epochs without replacement, each epoch seeded by (seed, epoch)."""
    if count <= 0:
        raise GenlabError("cannot draw batches from an empty split")
    batches_per_epoch = max(1, count // batch_size)
    epoch, position = divmod(step, batches_per_epoch)
    permutation = torch.randperm(count, generator=make_generator(derive_seed(seed, epoch)))
    if count < batch_size:  # tiny sets: repeat the permutation to fill the batch
        permutation = permutation.repeat(-(-batch_size // count))
    return permutation[position * batch_size : (position + 1) * batch_size]


def label_map_legend(spec: TaskSpec) -> list[tuple[str, tuple[int, int, int]]] | None:
    """(class name, RGB colour) per class of the task's label maps, for grid legends; None when it has none."""
    if not spec.label_map_fields or not spec.palette:
        return None
    return list(zip(spec.class_names, spec.palette))
