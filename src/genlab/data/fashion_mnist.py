"""Fashion-MNIST from its IDX files, and the edges2fashion translation tasks built on it.

The four IDX files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
`t10k-labels-idx1-ubyte`, each raw or .gz) are looked for in `data.data_root`, then `$GENLAB_DATA`, then
/usr/share/datasets/fashion-mnist (the Debian package dataset-fashion-mnist); in each place also in a
`fashion-mnist/` subfolder. Splits: train = the first 50,000 training images, val = the last 10,000,
test = the 10,000 t10k images. Images are resized from 28 px to `data.image_size` (bicubic, antialiased
when shrinking); edge maps, slow to compute, are cached bit-packed under `cache_dir()/fashion-mnist/`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genlab.config import DataConfig
from genlab.data.base import ImageSplit, Task, TaskSpec
from genlab.utils import GenlabError, atomic_path

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
NATIVE_SIZE = 28
TRAIN_COUNT = 50_000  # the rest of the 60,000 training images is the val split
CACHE_VERSION = "v1"  # part of cache file names: bump it when resizing or edge detection changes
DATA_ENV = "GENLAB_DATA"
SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)
DEBIAN_PACKAGE = "dataset-fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type codes (third byte of the magic number) -> big-endian numpy dtypes.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension


# ---------------------------------------------------------------------------------------------------------
# IDX files.


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or gzip, detected from its first bytes) into a native-endian numpy array.

    Checks the magic number (and `expected_magic` when given), the dimensions and that the data length is
    exactly what the header announces; every failure is a GenlabError naming the file.
    Example: `read_idx("train-labels-idx1-ubyte.gz").shape` -> `(60000,)`.
    """
    path = Path(path)
    if not path.is_file():
        raise GenlabError(f"{path}: file not found")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise GenlabError(f"{path}: corrupt or truncated gzip file ({error})") from error
    else:
        data = raw
    if len(data) < 4:
        raise GenlabError(f"{path}: {len(data)} bytes, too short for an IDX header (empty or truncated file)")
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _IDX_TYPES or not 1 <= ndim <= 4:
        raise GenlabError(f"{path}: bad magic number 0x{magic:08x}; not an IDX file")
    if expected_magic is not None and magic != expected_magic:
        raise GenlabError(f"{path}: magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise GenlabError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[type_code])
    needed = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != needed:
        raise GenlabError(
            f"{path}: {len(data) - header} data bytes, but the header (dimensions {dims}) announces {needed} "
            "(truncated or corrupt file)"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # a writable native-endian copy


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write a numpy array as an IDX file (gzip when the name ends in .gz, or `compress`); for tests and tools."""
    path = Path(path)
    codes = {np.dtype(code).newbyteorder("="): key for key, code in _IDX_TYPES.items()}
    dtype = np.dtype(array.dtype).newbyteorder("=")
    if dtype not in codes:
        raise GenlabError(f"{path}: dtype {array.dtype} has no IDX type code")
    header = bytes([0, 0, codes[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=_IDX_TYPES[codes[dtype]]).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=1)
    with atomic_path(path) as temporary:
        temporary.write_bytes(payload)
    return path


# ---------------------------------------------------------------------------------------------------------
# Finding and decoding the dataset.


def search_dirs(config: DataConfig) -> list[tuple[str, Path | None]]:
    """Where the IDX files are looked for, in order: (what the place is, its path or None when unset)."""
    places: list[tuple[str, Path | None]] = [
        ("data.data_root / --data-root", Path(config.data_root).expanduser() if config.data_root else None),
        (f"${DATA_ENV}", Path(os.environ[DATA_ENV]).expanduser() if os.environ.get(DATA_ENV) else None),
    ]
    places += [(f"Debian package {DEBIAN_PACKAGE}", folder) for folder in SYSTEM_DATA_DIRS]
    return places


def _files_in(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in `folder` (each raw or .gz), or None when any is missing."""
    found = {}
    for key, name in FILES.items():
        candidates = [folder / name, folder / f"{name}.gz"]
        present = next((candidate for candidate in candidates if candidate.is_file()), None)
        if present is None:
            return None
        found[key] = present
    return found


def find_files(config: DataConfig) -> dict[str, Path]:
    """The four IDX files from the first place holding all of them; a GenlabError listing where it looked."""
    looked = []
    for what, folder in search_dirs(config):
        if folder is None:
            looked.append(f"{what} (not set)")
            continue
        for candidate in (folder, folder / "fashion-mnist"):
            found = _files_in(candidate) if candidate.is_dir() else None
            if found is not None:
                return found
        looked.append(f"{what}: {folder} ({'incomplete' if folder.is_dir() else 'missing'})")
    names = ", ".join(f"{name}[.gz]" for name in FILES.values())
    raise GenlabError(
        "Fashion-MNIST IDX files not found; looked in " + "; ".join(looked) + f". Needed: {names}. "
        f"Install them with `apt-get install {DEBIAN_PACKAGE}`, or pass --data-root DIR "
        f"(or set ${DATA_ENV}) pointing to a folder holding them."
    )


def available(config: DataConfig) -> bool:
    """True when the four Fashion-MNIST IDX files can be found (nothing is decoded)."""
    try:
        find_files(config)
    except GenlabError:
        return False
    return True


def _file_key(files: dict[str, Path]) -> tuple[tuple[str, int, int], ...]:
    """Identity of the files (path, size, mtime): the in-memory and disk caches follow the files."""
    return tuple(
        (str(files[key].resolve()), files[key].stat().st_size, files[key].stat().st_mtime_ns) for key in sorted(files)
    )


@functools.lru_cache(maxsize=2)
def _decode(key: tuple[tuple[str, int, int], ...]) -> dict[str, np.ndarray]:
    """Decode and validate the four files (keyed by `_file_key`, so each is decoded once per process)."""
    files = dict(zip(sorted(FILES), (Path(path) for path, _, _ in key), strict=True))
    arrays = {}
    for part in ("train", "test"):
        images_path, labels_path = files[f"{part}_images"], files[f"{part}_labels"]
        images = read_idx(images_path, IMAGES_MAGIC)
        labels = read_idx(labels_path, LABELS_MAGIC)
        if images.shape[1:] != (NATIVE_SIZE, NATIVE_SIZE):
            raise GenlabError(f"{images_path}: images are {images.shape[1:]}, Fashion-MNIST has 28x28")
        if len(images) != len(labels):
            raise GenlabError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}")
        if labels.size and labels.max() >= len(CLASS_NAMES):
            raise GenlabError(f"{labels_path}: label {int(labels.max())} out of range 0-9")
        arrays[f"{part}_images"], arrays[f"{part}_labels"] = images, labels.astype(np.int64)
    return arrays


def _split_bounds(train_total: int) -> int:
    """Index where val starts in the training file: 50,000 for the real set, 90% for smaller (test) sets."""
    return TRAIN_COUNT if train_total > TRAIN_COUNT else max(1, int(train_total * 0.9))


def resize_images(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size): bicubic, antialiased when shrinking; a copy when equal."""
    if images.shape[-2:] == (size, size):
        return images.clone()
    shrinking = size < images.shape[-1]
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].float()
        resized = F.interpolate(block, size=(size, size), mode="bicubic", align_corners=False, antialias=shrinking)
        out[start : start + chunk] = resized.clamp_(0, 255).round_().to(torch.uint8)
    return out


def edge_map(images: torch.Tensor, low: float = 0.06, high: float = 0.16, chunk: int = 256) -> torch.Tensor:
    """A Canny-like edge map of uint8 images (N, 1, H, W): white one-pixel edges on black, uint8 {0, 255}.

    Gaussian blur, Sobel gradient, non-maximum suppression across the edge, then double thresholding where
    weak edges are kept next to strong ones. Thresholds are on the gradient of [0, 1] images per 28 px, so
    edge density does not depend on the image size.
    """
    source = images.numpy()
    out = np.empty_like(source)
    # NumPy on small chunks: the temporaries stay in the CPU cache, and NumPy's single-threaded slicing
    # arithmetic beats torch's thread pool many times over on a busy machine.
    for start in range(0, len(source), chunk):
        out[start : start + chunk, 0] = _edges(source[start : start + chunk, 0], low, high)
    return torch.from_numpy(out)


def _edges(images: np.ndarray, low: float, high: float) -> np.ndarray:
    """Edges of uint8 images (N, H, W) -> uint8 (N, H, W) in {0, 255}; the filters are separable slices."""
    padded = np.pad(images.astype(np.float32) * (1.0 / 255.0), ((0, 0), (1, 1), (1, 1)), mode="edge")
    rows = padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]
    blurred = (rows[:, :, :-2] + 2 * rows[:, :, 1:-1] + rows[:, :, 2:]) * (1.0 / 16.0)  # [1, 2, 1] Gaussian
    padded = np.pad(blurred, ((0, 0), (1, 1), (1, 1)), mode="edge")
    dx = padded[:, :, 2:] - padded[:, :, :-2]  # (N, H + 2, W)
    gx = (dx[:, :-2] + 2 * dx[:, 1:-1] + dx[:, 2:]) * (1.0 / 8.0)  # Sobel x
    dy = padded[:, 2:] - padded[:, :-2]  # (N, H, W + 2)
    gy = (dy[:, :, :-2] + 2 * dy[:, :, 1:-1] + dy[:, :, 2:]) * (1.0 / 8.0)  # Sobel y
    magnitude = np.sqrt(gx * gx + gy * gy) * (images.shape[-1] / NATIVE_SIZE)
    # Non-maximum suppression: keep a pixel only if it is not beaten by its two neighbours along the gradient.
    m = np.pad(magnitude, ((0, 0), (1, 1), (1, 1)))
    h, w = magnitude.shape[-2:]

    def shifted(dy: int, dx: int) -> np.ndarray:
        return m[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    ax, ay = np.abs(gx), np.abs(gy)
    tan_22_5 = 0.41421356
    neighbour_max = np.where(
        ay <= ax * tan_22_5,  # gradient along x: compare left and right
        np.maximum(shifted(0, -1), shifted(0, 1)),
        np.where(
            ax <= ay * tan_22_5,  # gradient along y: compare above and below
            np.maximum(shifted(-1, 0), shifted(1, 0)),
            np.where(
                (gx * gy) > 0,
                np.maximum(shifted(-1, -1), shifted(1, 1)),
                np.maximum(shifted(-1, 1), shifted(1, -1)),
            ),
        ),
    )
    thin = magnitude >= neighbour_max
    strong = thin & (magnitude > high)
    weak = thin & (magnitude > low)
    # Weak edges survive next to a strong one (one step of hysteresis): a 3x3 dilation of `strong`.
    grown = np.pad(strong, ((0, 0), (1, 1), (1, 1)))
    grown = grown[:, :-2] | grown[:, 1:-1] | grown[:, 2:]
    grown = grown[:, :, :-2] | grown[:, :, 1:-1] | grown[:, :, 2:]
    return (strong | (weak & grown)).astype(np.uint8) * 255


@functools.lru_cache(maxsize=4)
def _resized(key: tuple, size: int, part: str) -> torch.Tensor:
    """The images of one file part ("train" or "test") resized to `size`, uint8 (N, 1, size, size).

    Not cached on disk: resizing all 70,000 images takes about two seconds, less than reading them back.
    """
    return resize_images(torch.from_numpy(_decode(key)[f"{part}_images"])[:, None], size)


@functools.lru_cache(maxsize=4)
def _edge_maps(key: tuple, size: int, part: str) -> torch.Tensor:
    """Edge maps of one resized file part, uint8 (N, 1, size, size) in {0, 255}; cached on disk, bit-packed.

    Edge detection is the slow step (tens of seconds for 70,000 images at 64 px), so it runs once per size.
    """
    from genlab.cache import cache_dir

    images = _resized(key, size, part)
    digest = hashlib.sha256(repr((CACHE_VERSION, key)).encode()).hexdigest()[:16]
    path = cache_dir() / "fashion-mnist" / f"{CACHE_VERSION}-edges-{size}-{part}-{digest}.pt"
    if path.exists():
        try:
            packed = torch.load(path, weights_only=True)
            bits = np.unpackbits(packed.numpy(), count=images.numel())
            return torch.from_numpy(bits.reshape(images.shape)).mul_(255)
        except Exception:  # a damaged or mismatched cache is only a cache: recompute it
            pass
    edges = edge_map(images)
    try:
        with atomic_path(path) as temporary:
            torch.save(torch.from_numpy(np.packbits(edges.numpy() > 0)), temporary)
    except OSError as error:
        warnings.warn(f"fashion-mnist: could not cache {path} ({error}); recomputing each time", stacklevel=2)
    return edges


def _split_slice(key: tuple, split: str) -> tuple[str, slice, str]:
    """(which file part, the slice of it, the name prefix) for a split."""
    train_total = len(_decode(key)["train_labels"])
    boundary = _split_bounds(train_total)
    if split == "train":
        return "train", slice(0, boundary), "train"
    if split == "val":
        return "train", slice(boundary, train_total), "train"
    if split == "test":
        return "test", slice(None), "t10k"
    raise GenlabError(f"unknown split {split!r} (valid: train, val, test)")


def load_split_arrays(config: DataConfig, split: str, edges: bool = False) -> dict[str, torch.Tensor | list[str]]:
    """One split: "image" uint8 (N, 1, S, S), "label" int64 (N,), "names", and "edges" when asked for."""
    key = _file_key(find_files(config))
    part, window, prefix = _split_slice(key, split)
    arrays = _decode(key)
    labels = torch.from_numpy(arrays[f"{part}_labels"][window])
    images = _resized(key, config.image_size, part)[window]
    start = window.start or 0
    result: dict[str, torch.Tensor | list[str]] = {
        "image": images,
        "label": labels,
        "names": [f"{prefix}_{start + offset:05d}" for offset in range(len(labels))],
    }
    if edges:
        result["edges"] = _edge_maps(key, config.image_size, part)[window]
    return result


# ---------------------------------------------------------------------------------------------------------
# Tasks.


# No resize-crop jitter by default: the garments are centred at one scale in every split, and the jitter's
# scaled and shifted copies are a different distribution. 1000 training images jittered as pix2pix's photos
# (300/256) are at domain FID 5.4 from the test set, unjittered at 0.21 (README, "The training jitter").
GARMENT_LOAD_SCALE = 1.0


def _check_size(config: DataConfig) -> None:
    if config.image_size < 8:
        raise GenlabError(f"data.image_size: Fashion-MNIST needs at least 8 px, got {config.image_size}")


def build_fashion_mnist_task(config: DataConfig) -> Task:
    """Fashion-MNIST generation: "image" uint8 (N, 1, S, S) and "label" int64, 10 classes, 50k/10k/10k."""
    _check_size(config)
    spec = TaskSpec(
        "fashion-mnist", "labelled", config.image_size, 1, 1, num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES
    )

    def load_split(split: str) -> ImageSplit:
        arrays = load_split_arrays(config, split)
        return ImageSplit({"image": arrays["image"], "label": arrays["label"]}, arrays["names"])

    return Task(spec, load_split, config, default_load_scale=GARMENT_LOAD_SCALE)


def build_edges2fashion_task(config: DataConfig) -> Task:
    """edges2fashion: an edge map of the garment ("source", 1 channel) -> the garment ("target", 1 channel).

    Each pair keeps its garment's class ("label", int64), so evaluation can say how often the translations are
    classified as the garment they should be; the translators themselves do not see it."""
    _check_size(config)
    spec = TaskSpec("edges2fashion", "paired", config.image_size, 1, 1, class_names=CLASS_NAMES)

    def load_split(split: str) -> ImageSplit:
        arrays = load_split_arrays(config, split, edges=True)
        fields = {"source": arrays["edges"], "target": arrays["image"], "label": arrays["label"]}
        return ImageSplit(fields, arrays["names"])

    return Task(spec, load_split, config, default_load_scale=GARMENT_LOAD_SCALE)


def build_edges2fashion_unpaired_task(config: DataConfig) -> Task:
    """edges2fashion without pairs: "a" = edges of the first half of each split, "b" = garments of the second.

    The halves are disjoint, so no edge map has its own garment in the other domain (CycleGAN's setting).
    """
    _check_size(config)
    spec = TaskSpec("edges2fashion-unpaired", "unpaired", config.image_size, 1, 1, class_names=CLASS_NAMES)

    def load_split(split: str) -> ImageSplit:
        arrays = load_split_arrays(config, split, edges=True)
        half = len(arrays["label"]) // 2
        return ImageSplit(
            {"a": arrays["edges"][:half], "b": arrays["image"][half : 2 * half]}, list(arrays["names"][:half])
        )

    return Task(spec, load_split, config, default_load_scale=GARMENT_LOAD_SCALE)
