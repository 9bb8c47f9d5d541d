"""`folder:PATH` tasks: a folder of images whose layout says what task it is.

Recognised layouts, tried in this order:

1. unaligned (CycleGAN): `trainA/ trainB/` and optionally `valA/ valB/ testA/ testB/` -> unpaired task, fields
   "a" and "b";
2. paired by name: `A/ B/` (flat, or with `train/ val/ test/` inside each), images matched by file stem
   -> paired task, "source" from A, "target" from B;
3. aligned (pix2pix): `train/ [val/ test/]` holding A|B images (source on the left, target on the right)
   -> paired task;
4. image folder with classes: `train/<class>/...` or `<class>/...` -> labelled task, labels from the sorted
   class folder names;
5. flat: images directly in PATH -> aligned when every image is exactly twice as wide as high, otherwise an
   unlabelled image folder (labelled task with num_classes 0, every label 0).

Missing val/test splits are carved deterministically off train: the training items are loaded (bad files
skipped first, when asked), then a fixed permutation (seed 0) gives 10% (at least one item) to each missing
split and the rest stays in train, in name order. With fewer than three training items nothing can be
spared, so a missing split reuses the training items (with a warning). CycleGAN domains are carved each on
its own. Images are resized to `config.image_size` (square, bicubic) when loaded.

Training jitter: a folder whose images show objects on a plain background (garments, product shots) trains
without pix2pix's resize-and-crop; other folders (photos) with it (`folder_load_scale`). `data.load_scale`
overrides either.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genlab.config import PHOTO_LOAD_SCALE, DataConfig
from genlab.data.base import SPLITS, ImageSplit, Task, TaskSpec
from genlab.data.imageio import image_channels, image_size, list_images, load_image, save_image
from genlab.data.transforms import PLAIN_BORDER_SHARE, plain_background_shares
from genlab.utils import GenlabError

HOLDOUT_FRACTION = 0.1  # share of train given to each missing val/test split
LAYOUTS_HELP = (
    "recognised layouts: trainA/ + trainB/ (unaligned, CycleGAN); A/ + B/ (paired by file name); "
    "train/[val/ test/] with A|B images (aligned, pix2pix); train/<class>/ or <class>/ folders (labelled); "
    "images directly in the folder (aligned if all are twice as wide as high, else an unlabelled image folder)"
)


@dataclass(frozen=True)
class FolderLayout:
    """What `detect_layout` found: the layout name and the task kind it gives."""

    name: str  # "unaligned", "paired_by_name", "aligned", "classes", "images"
    kind: str  # the TaskSpec kind
    split_folders: bool  # whether train/val/test come from folders (else all carved from one list)


def detect_layout(root: Path) -> FolderLayout:
    """Detect which of the recognised layouts `root` holds; a GenlabError when none applies."""
    if not root.exists():
        raise GenlabError(f"{root}: folder not found")
    if not root.is_dir():
        raise GenlabError(f"{root}: not a directory ({LAYOUTS_HELP})")
    if (root / "trainA").is_dir() and (root / "trainB").is_dir():
        return FolderLayout("unaligned", "unpaired", True)
    if (root / "A").is_dir() and (root / "B").is_dir():
        return FolderLayout("paired_by_name", "paired", (root / "A" / "train").is_dir())
    if (root / "train").is_dir():
        if list_images(root / "train"):
            return FolderLayout("aligned", "paired", True)
        if _class_folders(root / "train"):
            return FolderLayout("classes", "labelled", True)
        raise GenlabError(f"{root / 'train'}: no images found ({LAYOUTS_HELP})")
    files = list_images(root)
    if files:
        if _all_double_width(files):
            return FolderLayout("aligned", "paired", False)
        return FolderLayout("images", "labelled", False)
    if _class_folders(root):
        return FolderLayout("classes", "labelled", False)
    raise GenlabError(f"{root}: no images found ({LAYOUTS_HELP})")


def build_folder_task(config: DataConfig) -> Task:
    """The task for `config.task == "folder:PATH"`, its kind detected from the folder layout (module docstring).

    Only file headers are read here (to learn the channel counts); images are decoded when a split is used.
    """
    if not config.task.startswith("folder:"):
        raise GenlabError(f"data.task: expected folder:PATH, got {config.task!r}")
    root = Path(config.task[len("folder:") :]).expanduser()
    layout = detect_layout(root)
    size, skip = config.image_size, config.skip_bad_files
    swap = config.direction == "BtoA"  # B is the source: pairs (and domains) are swapped on load
    if swap and layout.kind == "labelled":
        raise GenlabError(f"data.direction=BtoA: {root} is a labelled image folder; only pairs have a direction")
    if layout.name == "unaligned":
        lists_a, lists_b = _domain_lists(root, "A"), _domain_lists(root, "B")
        if swap:
            lists_a, lists_b = lists_b, lists_a
        channels_a = _first_channels(lists_a["train"], skip)
        channels_b = _first_channels(lists_b["train"], skip)
        spec = TaskSpec(config.task, "unpaired", size, channels_a, channels_b)
        domain_a = _SplitSource(lists_a, lambda paths: _load_images(paths, "a", size, skip, channels_a))
        domain_b = _SplitSource(lists_b, lambda paths: _load_images(paths, "b", size, skip, channels_b))

        def load_split(split: str) -> ImageSplit:
            a, b = domain_a(split), domain_b(split)
            return ImageSplit({"a": a.fields["a"], "b": b.fields["b"]}, a.names)

    elif layout.name == "paired_by_name":
        pairs = _paired_files(root, layout.split_folders, skip)
        if swap:
            pairs = {split: None if items is None else [(b, a) for a, b in items] for split, items in pairs.items()}
        source_channels = _first_channels([a for a, _ in pairs["train"]], skip)
        target_channels = _first_channels([b for _, b in pairs["train"]], skip)
        spec = TaskSpec(config.task, "paired", size, source_channels, target_channels)
        load_split = _SplitSource(pairs, lambda items: _load_pairs(items, size, skip, source_channels, target_channels))

    elif layout.name == "aligned":
        files = _aligned_split_lists(root)
        channels = _first_channels(files["train"], skip)
        spec = TaskSpec(config.task, "paired", size, channels, channels)
        load_split = _SplitSource(files, lambda paths: _load_aligned(paths, size, skip, channels, swap))

    else:
        items, class_names = _labelled_items(root, layout)
        channels = _first_channels([path for path, _ in items["train"]], skip)
        spec = TaskSpec(
            config.task, "labelled", size, channels, channels, num_classes=len(class_names), class_names=class_names
        )
        load_split = _SplitSource(items, lambda chosen: _load_labelled(chosen, class_names, size, skip, channels))

    return Task(spec, load_split, config, default_load_scale=partial(folder_load_scale, config.task))


def folder_load_scale(task: str, train: ImageSplit) -> tuple[float, str]:
    """A folder's training jitter, read off its training images: none (1) when every image field shows objects
    on a plain background (most of the border at one value: centred garments, product shots), whose test images
    are centred and uncropped as well; else pix2pix's photo jitter (300/256). Returns it and a sentence saying why.

    Measured on garments (README, "The training jitter"): the jitter moves the objects where no test image has
    them, and costs Pix2Pix 1.1 dB PSNR and three times the domain FID at 32 px."""
    shares = plain_background_shares(train.fields)
    found = ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
    if shares and min(shares.values()) > PLAIN_BORDER_SHARE:
        return 1.0, (
            f"{task}: objects on a plain background (border pixels at the background value: {found}), so training "
            f"takes no resize-and-crop jitter (data.load_scale=1); --set data.load_scale={PHOTO_LOAD_SCALE} "
            "gives pix2pix's photo jitter"
        )
    return PHOTO_LOAD_SCALE, (
        f"{task}: photos (border pixels at one background value: {found}), so training takes pix2pix's "
        f"resize-and-crop jitter (data.load_scale={PHOTO_LOAD_SCALE}); --set data.load_scale=1 turns it off"
    )


def load_aligned_split(
    root: str | os.PathLike,
    split: str,
    size: int,
    skip_bad_files: bool = False,
    swap_halves: bool = False,
    channels: int | None = None,
    nearest_source: bool = False,
) -> ImageSplit:
    """Load one split of a pix2pix aligned folder (A|B images) as uint8 "source" and "target" (N, C, size, size).

    `swap_halves` makes the right half the source (datasets stored B|A, such as pix2pix facades); `channels`
    is the channel count every image must have (default: that of the first training image); `nearest_source`
    resizes the source with nearest-neighbour (label maps). Missing val/test are carved off train as the
    module docstring says.
    """
    root = Path(root)
    if split not in SPLITS:
        raise GenlabError(f"unknown split {split!r} (valid: {', '.join(SPLITS)})")
    files = _aligned_split_lists(root)
    if channels is None:
        channels = _first_channels(files["train"], skip_bad_files)
    source = _SplitSource(
        files, lambda paths: _load_aligned(paths, size, skip_bad_files, channels, swap_halves, nearest_source)
    )
    return source(split)


def write_aligned_pairs(
    split: ImageSplit, out_dir: str | os.PathLike, names: Sequence[str] | None = None
) -> list[Path]:
    """Write each (source, target) pair of a paired split as a pix2pix A|B PNG `out_dir/NAME.png`.

    A 1-channel image next to a 3-channel one is repeated to 3 channels so both halves share a mode.
    Returns the written paths. Example: `write_aligned_pairs(task.split("test"), "export/test")`.
    """
    if "source" not in split.fields or "target" not in split.fields:
        raise GenlabError(f"write_aligned_pairs needs a paired split (source, target), got {sorted(split.fields)}")
    source, target = split.fields["source"], split.fields["target"]
    names = list(names) if names is not None else list(split.names)
    if len(names) != len(source) or len(target) != len(source):
        raise GenlabError(f"write_aligned_pairs: {len(source)} sources, {len(target)} targets, {len(names)} names")
    if source.shape[-2] != target.shape[-2]:
        raise GenlabError(f"write_aligned_pairs: source height {source.shape[-2]} != target {target.shape[-2]}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, left, right in zip(names, source, target, strict=True):
        if left.shape[0] != right.shape[0]:
            channels = max(left.shape[0], right.shape[0])
            left, right = left.expand(channels, -1, -1), right.expand(channels, -1, -1)
        written.append(save_image(torch.cat([left, right], dim=2), out_dir / f"{name}.png"))
    return written


def resize_image(image: torch.Tensor, size: int, nearest: bool = False) -> torch.Tensor:
    """Resize a uint8 image (C, H, W) to (C, size, size): bicubic (antialiased when shrinking) or nearest."""
    if image.shape[-2:] == (size, size):
        return image
    batch = image[None].float()
    if nearest:
        resized = F.interpolate(batch, size=(size, size), mode="nearest-exact")
    else:
        shrinking = size < max(image.shape[-2:])
        resized = F.interpolate(batch, size=(size, size), mode="bicubic", align_corners=False, antialias=shrinking)
    return resized[0].clamp_(0, 255).round_().to(torch.uint8)


# ---------------------------------------------------------------------------------------------------------
# Finding files.


def _class_folders(folder: Path) -> list[Path]:
    """Subfolders (not hidden) holding at least one image, sorted by name."""
    return [
        child
        for child in sorted(folder.iterdir(), key=lambda entry: entry.name)
        if child.is_dir() and not child.name.startswith(".") and list_images(child)
    ]


def _all_double_width(files: list[Path]) -> bool:
    """True when every readable image is exactly twice as wide as high (the pix2pix A|B shape)."""
    readable = 0
    for path in files:
        try:
            width, height = image_size(path)
        except GenlabError:
            continue  # a bad file is reported when loaded, not here
        if width != 2 * height:
            return False
        readable += 1
    return readable > 0


def _optional_images(folder: Path) -> list[Path] | None:
    return list_images(folder) if folder.is_dir() else None


def _aligned_split_lists(root: Path) -> dict[str, list[Path] | None]:
    """The A|B files of each split; None for a split without its own folder (flat: everything is train)."""
    if not (root / "train").is_dir():
        if not root.is_dir():
            raise GenlabError(f"{root}: not a directory")
        files = list_images(root)
        if not files:
            raise GenlabError(f"{root}: no images found ({LAYOUTS_HELP})")
        return {"train": files, "val": None, "test": None}
    lists = {split: _optional_images(root / split) for split in SPLITS}
    if not lists["train"]:
        raise GenlabError(f"{root / 'train'}: no images found ({LAYOUTS_HELP})")
    return lists


def _domain_lists(root: Path, domain: str) -> dict[str, list[Path] | None]:
    """Files of one CycleGAN domain per split (trainA, valA, testA); None for a split without a folder."""
    lists = {split: _optional_images(root / f"{split}{domain}") for split in SPLITS}
    if not lists["train"]:
        raise GenlabError(f"{root / ('train' + domain)}: no images found ({LAYOUTS_HELP})")
    return lists


def _paired_files(root: Path, split_folders: bool, skip: bool) -> dict[str, list[tuple[Path, Path]] | None]:
    """(A, B) file pairs matched by stem, per split; unmatched files are errors (or skipped with a warning)."""
    if not split_folders:
        return {"train": _match_by_stem(root / "A", root / "B", skip), "val": None, "test": None}
    lists: dict[str, list[tuple[Path, Path]] | None] = {}
    for split in SPLITS:
        folder_a, folder_b = root / "A" / split, root / "B" / split
        lists[split] = _match_by_stem(folder_a, folder_b, skip) if folder_a.is_dir() or folder_b.is_dir() else None
    if not lists["train"]:
        raise GenlabError(f"{root / 'A' / 'train'}: no image pairs found ({LAYOUTS_HELP})")
    return lists


def _match_by_stem(folder_a: Path, folder_b: Path, skip: bool) -> list[tuple[Path, Path]]:
    for folder in (folder_a, folder_b):
        if not folder.is_dir():
            raise GenlabError(f"{folder}: missing (paired-by-name folders need both A and B for each split)")
    files_a = {path.stem: path for path in list_images(folder_a)}
    files_b = {path.stem: path for path in list_images(folder_b)}
    for path in [files_a[stem] for stem in sorted(set(files_a) - set(files_b))] + [
        files_b[stem] for stem in sorted(set(files_b) - set(files_a))
    ]:
        other = folder_b if path.parent == folder_a else folder_a
        _bad_file(f"{path}: no file with the same name (any image extension) in {other}", skip)
    return [(files_a[stem], files_b[stem]) for stem in sorted(set(files_a) & set(files_b))]


def _labelled_items(
    root: Path, layout: FolderLayout
) -> tuple[dict[str, list[tuple[Path, int]] | None], tuple[str, ...]]:
    """(file, label) items per split (None: no folder) and the class names (empty for an unlabelled folder)."""
    if layout.name == "images":
        items: dict[str, list[tuple[Path, int]] | None] = {
            "train": [(path, 0) for path in list_images(root)], "val": None, "test": None
        }
        return items, ()
    base = root / "train" if layout.split_folders else root
    class_names = tuple(folder.name for folder in _class_folders(base))
    index = {name: label for label, name in enumerate(class_names)}

    def collect(folder: Path) -> list[tuple[Path, int]]:
        collected = []
        for class_folder in _class_folders(folder):
            if class_folder.name not in index:
                raise GenlabError(
                    f"{class_folder}: class {class_folder.name!r} is not among the training classes "
                    f"({', '.join(class_names)})"
                )
            collected += [(path, index[class_folder.name]) for path in list_images(class_folder)]
        return collected

    items = {"train": collect(base), "val": None, "test": None}
    if layout.split_folders:
        for split in ("val", "test"):
            if (root / split).is_dir():
                items[split] = collect(root / split)
    return items, class_names


def _carve_indices(count: int, missing: list[str]) -> dict[str, list[int]]:
    """Indices of the loaded training items for train and each missing split (module docstring)."""
    everything = list(range(count))
    share = max(1, int(round(count * HOLDOUT_FRACTION)))
    if count - share * len(missing) < 1:
        warnings.warn(
            f"only {count} training item(s): the missing {' and '.join(missing)} split(s) reuse the training "
            "items, so they say nothing about generalisation",
            stacklevel=4,
        )
        return {"train": everything, **{split: everything for split in missing}}
    # A fixed permutation, not the tail of the sorted list: names often follow capture order or class.
    order = np.random.default_rng(0).permutation(count)
    result: dict[str, list[int]] = {}
    for position, split in enumerate(missing):
        result[split] = sorted(int(i) for i in order[position * share : (position + 1) * share])
    taken = {i for chosen in result.values() for i in chosen}
    result["train"] = [i for i in everything if i not in taken]
    return result


def _subset(split: ImageSplit, indices: list[int]) -> ImageSplit:
    index = torch.as_tensor(indices, dtype=torch.long)
    return ImageSplit({key: value[index] for key, value in split.fields.items()}, [split.names[i] for i in indices])


class _SplitSource:
    """Loads each split from its own items; splits without a folder are carved off the loaded train items.

    Carving after loading means a skipped bad file never leaves a carved split short or empty.
    """

    def __init__(self, lists: dict[str, list | None], load: Callable[[list], ImageSplit]) -> None:
        self.lists = lists
        self.load = load
        self.missing = [split for split in ("val", "test") if lists.get(split) is None]
        self.pool: ImageSplit | None = None

    def __call__(self, split: str) -> ImageSplit:
        if split not in SPLITS:
            raise GenlabError(f"unknown split {split!r} (valid: {', '.join(SPLITS)})")
        if not self.missing or (split != "train" and split not in self.missing):
            return self.load(self.lists[split] or [])
        if self.pool is None:
            self.pool = self.load(self.lists["train"] or [])
        return _subset(self.pool, _carve_indices(len(self.pool), self.missing)[split])


# ---------------------------------------------------------------------------------------------------------
# Loading images.


def _bad_file(message: str, skip: bool) -> None:
    """Raise the message as a GenlabError, or only warn when the user asked to skip bad files."""
    if not skip:
        raise GenlabError(message + " (set data.skip_bad_files=true to skip bad files with a warning)")
    warnings.warn(f"skipping {message}", stacklevel=3)


def _first_channels(files: list[Path], skip: bool) -> int:
    """The channel count of the first readable file, the reference every other file of its field must match."""
    for path in files:
        try:
            return image_channels(path)
        except GenlabError as error:
            _bad_file(str(error), skip)
    raise GenlabError(f"no readable images among {len(files)} file(s) (first: {files[0] if files else 'none'})")


class _Loader:
    """Loads and resizes images for one split, turning each bad file into an error or a warning."""

    def __init__(self, size: int, skip: bool) -> None:
        self.size = size
        self.skip = skip

    def read(self, path: Path, channels: int) -> torch.Tensor | None:
        """The decoded image (not resized), or None when it is bad and skipping is on."""
        try:
            image = load_image(path)
        except GenlabError as error:
            _bad_file(str(error), self.skip)
            return None
        if image.shape[0] != channels:
            _bad_file(
                f"{path}: has {image.shape[0]} channel(s) where the others have {channels} "
                "(mixed grayscale and colour images; convert them to one mode)",
                self.skip,
            )
            return None
        return image

    def load(self, path: Path, channels: int, nearest: bool = False) -> torch.Tensor | None:
        image = self.read(path, channels)
        return None if image is None else resize_image(image, self.size, nearest)

    def load_many(self, paths: list[Path], channels: int) -> tuple[torch.Tensor, list[str]]:
        images, names = [], []
        for path in paths:
            image = self.load(path, channels)
            if image is not None:
                images.append(image)
                names.append(path.stem)
        return _stack(images, channels, self.size), names


def _load_images(paths: list[Path], key: str, size: int, skip: bool, channels: int) -> ImageSplit:
    images, names = _Loader(size, skip).load_many(paths, channels)
    return ImageSplit({key: images}, names)


def _load_labelled(
    items: list[tuple[Path, int]], class_names: tuple[str, ...], size: int, skip: bool, channels: int
) -> ImageSplit:
    loader = _Loader(size, skip)
    images, labels, names = [], [], []
    for path, label in items:
        image = loader.load(path, channels)
        if image is not None:
            images.append(image)
            labels.append(label)
            # Class folders may reuse file names: the class keeps output names unique.
            names.append(f"{class_names[label]}_{path.stem}" if class_names else path.stem)
    return ImageSplit(
        {"image": _stack(images, channels, size), "label": torch.tensor(labels, dtype=torch.long)}, names
    )


def _stack(images: list[torch.Tensor], channels: int, size: int) -> torch.Tensor:
    if not images:
        return torch.empty((0, channels, size, size), dtype=torch.uint8)
    return torch.stack(images)


# How far an aligned A|B image may stray from 2:1 before it is refused: each half is resized to a square, so a
# wider tolerance would squash the pictures visibly.
ALIGNED_ASPECT_TOLERANCE = 0.1


def _load_aligned(
    files: list[Path], size: int, skip: bool, channels: int, swap_halves: bool = False, nearest_source: bool = False
) -> ImageSplit:
    loader = _Loader(size, skip)
    sources, targets, names = [], [], []
    for path in files:
        image = loader.read(path, channels)
        if image is None:
            continue
        width = image.shape[-1]
        if width % 2:
            _bad_file(
                f"{path}: width {width} is odd; an aligned image holds source | target as two equal halves", skip
            )
            continue
        height = image.shape[-2]
        if abs(width / (2 * height) - 1) > ALIGNED_ASPECT_TOLERANCE:
            _bad_file(
                f"{path}: {width}x{height} is not an A|B pair of two square halves (width:height {width / height:.2f}, "
                f"expected 2 within {ALIGNED_ASPECT_TOLERANCE:.0%}); refused rather than squashed",
                skip,
            )
            continue
        left, right = image[..., : width // 2], image[..., width // 2 :]
        source, target = (right, left) if swap_halves else (left, right)
        sources.append(resize_image(source, size, nearest=nearest_source))
        targets.append(resize_image(target, size))
        names.append(path.stem)
    return ImageSplit(
        {"source": _stack(sources, channels, size), "target": _stack(targets, channels, size)}, names
    )


def _load_pairs(
    pairs: list[tuple[Path, Path]], size: int, skip: bool, source_channels: int, target_channels: int
) -> ImageSplit:
    loader = _Loader(size, skip)
    sources, targets, names = [], [], []
    for path_a, path_b in pairs:
        try:
            size_a, size_b = image_size(path_a), image_size(path_b)
        except GenlabError as error:
            _bad_file(str(error), skip)
            continue
        if size_a != size_b:
            _bad_file(
                f"{path_b}: {size_b[0]}x{size_b[1]} but its pair {path_a} is {size_a[0]}x{size_a[1]} "
                "(paired images must have equal sizes)",
                skip,
            )
            continue
        source, target = loader.load(path_a, source_channels), loader.load(path_b, target_channels)
        if source is None or target is None:
            continue
        sources.append(source)
        targets.append(target)
        names.append(path_a.stem)
    return ImageSplit(
        {"source": _stack(sources, source_channels, size), "target": _stack(targets, target_channels, size)}, names
    )

