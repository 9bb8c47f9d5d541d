"""`facades-synth`: an embedded procedural generator of building facades (label map -> photo-like rendering).

Each item is a label map in the 12 CMP facade classes, drawn with a fixed palette, and a rendering of it:
materials per building (brick with mortar, plaster, stone blocks; random hues), glass reflecting the sky with
frames and mullions, shadows under cornices, sills and balconies, a lighting gradient and sensor noise.

An item is a pure function of (seed, index, size). The layout (every rectangle, colour and style choice) is
drawn in relative coordinates from a generator seeded by (seed, index) alone, so the same index gives the same
building at every size; only pixel noise depends on the size. Rectangles are painted by array slicing, so
600 items at 64 px take about a second. Generated splits are cached as uint8 tensors under
`cache_dir()/facades-synth/`, with GENERATOR_VERSION in the file name: change it with the generator.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from genlab.config import DataConfig
from genlab.data.base import ImageSplit, Task, TaskSpec
from genlab.utils import GenlabError, atomic_path

GENERATOR_VERSION = "v1"  # part of the cache file names: bump it whenever the rendering changes
DATASET_SEED = 0  # the seed of the fixed dataset the task serves
MIN_SIZE = 16
# Fixed, disjoint index ranges: item i of the dataset is always the same facade.
SPLIT_RANGES: dict[str, tuple[int, int]] = {"train": (0, 400), "val": (400, 500), "test": (500, 600)}

CLASS_NAMES: tuple[str, ...] = (
    "background", "facade", "window", "door", "cornice", "sill",
    "balcony", "blind", "deco", "molding", "pillar", "shop",
)  # fmt: skip
(BACKGROUND, FACADE, WINDOW, DOOR, CORNICE, SILL, BALCONY, BLIND, DECO, MOLDING, PILLAR, SHOP) = range(12)

# The CMP / pix2pix facades colours: MATLAB's jet colormap with 12 entries, in class order (dark blue
# background, blue facade ... dark red shop). Neighbouring entries differ by at least 85 in one channel.
_PALETTE = np.array(
    [
        [0, 0, 170], [0, 0, 255], [0, 85, 255], [0, 170, 255], [0, 255, 255], [85, 255, 170],
        [170, 255, 85], [255, 255, 0], [255, 170, 0], [255, 85, 0], [255, 0, 0], [170, 0, 0],
    ],
    dtype=np.uint8,
)  # fmt: skip
PALETTE: torch.Tensor = torch.from_numpy(_PALETTE.copy())  # (12, 3) uint8


# ---------------------------------------------------------------------------------------------------------
# Public API.


def render_sample(index: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Render facade `index`: (label map uint8 (3, size, size) in PALETTE colours, photo uint8 (3, size, size)).

    Deterministic in (seed, index, size). Example: `label, photo = render_sample(12, 64)`.
    """
    classes, photo = _render(index, size, seed)
    label_rgb = _PALETTE[classes]  # (H, W, 3)
    return (
        torch.from_numpy(np.ascontiguousarray(label_rgb.transpose(2, 0, 1))),
        torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1))),
    )


def generate_split(split: str, size: int, seed: int = DATASET_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate one split without the cache: (label maps, photos), each uint8 (N, 3, size, size)."""
    start, stop = _split_range(split)
    _check_size(size)
    labels = np.empty((stop - start, 3, size, size), dtype=np.uint8)
    photos = np.empty_like(labels)
    for row, index in enumerate(range(start, stop)):
        classes, photo = _render(index, size, seed)
        labels[row] = _PALETTE[classes].transpose(2, 0, 1)
        photos[row] = photo.transpose(2, 0, 1)
    return torch.from_numpy(labels), torch.from_numpy(photos)


def item_names(split: str) -> list[str]:
    """The item names of a split: facade_NNNNN with the global index (disjoint across splits)."""
    start, stop = _split_range(split)
    return [f"facade_{index:05d}" for index in range(start, stop)]


def load_split(split: str, size: int) -> ImageSplit:
    """One split of the dataset (seed DATASET_SEED) as an ImageSplit, generated once then read from the cache."""
    from genlab.cache import cache_dir

    path = cache_dir() / "facades-synth" / f"{GENERATOR_VERSION}-{size}-{split}.pt"
    start, stop = _split_range(split)
    expected = (stop - start, 3, size, size)
    fields = _read_cache(path, expected)
    if fields is None:
        labels, photos = generate_split(split, size)
        fields = {"source": labels, "target": photos}
        _write_cache(path, fields)
    return ImageSplit(fields, item_names(split))


def facades_spec(name: str, image_size: int) -> TaskSpec:
    """The spec of a CMP-facades-style task: RGB label map ("source") -> RGB photo ("target"), 12 classes."""
    return TaskSpec(
        name=name,
        kind="paired",
        image_size=image_size,
        source_channels=3,
        target_channels=3,
        label_map_fields=("source",),
        class_names=CLASS_NAMES,
        palette=tuple(tuple(int(value) for value in colour) for colour in PALETTE.tolist()),
    )


def build_task(config: DataConfig) -> Task:
    """The facades-synth task: label map ("source", 3 channels) -> photo ("target", 3 channels), 400/100/100."""
    _check_size(config.image_size)
    spec = facades_spec("facades-synth", config.image_size)
    return Task(spec, lambda split: load_split(split, config.image_size), config)


def label_map_to_classes(label_rgb: torch.Tensor | np.ndarray, chunk: int = 16) -> torch.Tensor:
    """Class indices (N, H, W) int64 from label maps uint8 (N, 3, H, W) or (3, H, W), by nearest PALETTE colour.

    Nearest rather than exact, so resized or JPEG-compressed label maps still map to classes.
    """
    images = torch.as_tensor(label_rgb)
    single = images.dim() == 3
    if single:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3:
        raise GenlabError(f"label maps must be shaped (N, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    if images.is_floating_point():  # model outputs in [-1, 1]
        images = ((images.clamp(-1, 1) + 1) * 127.5).round()
    palette = PALETTE.to(device=images.device, dtype=torch.int32)[:, :, None, None]  # (12, 3, 1, 1)
    result = torch.empty((images.shape[0], *images.shape[2:]), dtype=torch.long, device=images.device)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].to(torch.int32)[:, None]  # (B, 1, 3, H, W)
        distances = (block - palette[None]).square().sum(dim=2)  # (B, 12, H, W)
        result[start : start + chunk] = distances.argmin(dim=1)
    return result[0] if single else result


def classes_to_label_map(classes: torch.Tensor) -> torch.Tensor:
    """Class indices (..., H, W) -> label maps uint8 (..., 3, H, W) in PALETTE colours."""
    rgb = PALETTE.to(classes.device)[classes.long()]  # (..., H, W, 3)
    return rgb.movedim(-1, -3).contiguous()


# ---------------------------------------------------------------------------------------------------------
# Cache.


def _split_range(split: str) -> tuple[int, int]:
    if split not in SPLIT_RANGES:
        raise GenlabError(f"unknown split {split!r} (valid: {', '.join(SPLIT_RANGES)})")
    return SPLIT_RANGES[split]


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < MIN_SIZE:
        raise GenlabError(f"data.image_size: facades-synth needs an integer size of at least {MIN_SIZE}, got {size}")


def _read_cache(path, expected: tuple[int, ...]) -> dict[str, torch.Tensor] | None:
    """The cached fields, or None when absent or not as expected (then they are regenerated)."""
    if not path.exists():
        return None
    try:
        fields = torch.load(path, weights_only=True)
    except Exception:  # a damaged cache is only a cache: regenerate it
        return None
    ok = isinstance(fields, dict) and set(fields) == {"source", "target"}
    ok = ok and all(
        isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and tuple(value.shape) == expected
        for value in fields.values()
    )
    return fields if ok else None


def _write_cache(path, fields: dict[str, torch.Tensor]) -> None:
    try:
        with atomic_path(path) as temporary:
            torch.save(fields, temporary)
    except OSError as error:  # a read-only cache only costs regeneration time
        warnings.warn(f"facades-synth: could not cache {path} ({error}); generating it each time", stacklevel=3)


# ---------------------------------------------------------------------------------------------------------
# Rendering: a canvas of class indices and float RGB, painted by slicing.


class _Canvas:
    """Class indices (H, W), a float photo (H, W, 3) in [0, 255] and a multiplicative shade map (H, W)."""

    def __init__(self, size: int, noise: np.random.Generator) -> None:
        self.size = size
        self.noise = noise
        self.classes = np.zeros((size, size), dtype=np.uint8)
        self.photo = np.zeros((size, size, 3), dtype=np.float32)
        self.shade = np.ones((size, size), dtype=np.float32)

    def box(self, y0: float, y1: float, x0: float, x1: float) -> tuple[int, int, int, int] | None:
        """Relative rectangle -> pixel slice bounds, at least one pixel thick, clipped; None when outside."""
        size = self.size
        top, left = int(round(y0 * size)), int(round(x0 * size))
        bottom, right = max(int(round(y1 * size)), top + 1), max(int(round(x1 * size)), left + 1)
        top, left, bottom, right = max(top, 0), max(left, 0), min(bottom, size), min(right, size)
        if bottom <= top or right <= left:
            return None
        return top, bottom, left, right

    def paint(self, cls: int | None, box: tuple[int, int, int, int] | None, pixels) -> None:
        """Set the class (unless None: photo-only detail) and the photo of `box` to a colour or an array.

        `pixels` is an RGB triple, a local (h, w, 3) array, or a full-canvas (H, W, 3) texture sliced here.
        """
        if box is None:
            return
        top, bottom, left, right = box
        if cls is not None:
            self.classes[top:bottom, left:right] = cls
        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim == 3 and pixels.shape[:2] == (self.size, self.size):
            pixels = pixels[top:bottom, left:right]
        self.photo[top:bottom, left:right] = pixels

    def cast_shadow(self, box: tuple[int, int, int, int] | None, depth: float, strength: float) -> None:
        """Darken a band of relative height `depth` below `box`, fading downwards (light comes from above)."""
        if box is None:
            return
        top, bottom, left, right = box
        rows = max(1, int(round(depth * self.size)))
        end = min(self.size, bottom + rows)
        if end <= bottom:
            return
        ramp = 1.0 - strength * _ramp(1.0, 0.2, end - bottom)
        self.shade[bottom:end, left:right] *= ramp[:, None]


@functools.lru_cache(maxsize=4096)
def _ramp(start: float, stop: float, count: int) -> np.ndarray:
    """np.linspace as float32, cached and read-only: the same few ramps are asked for thousands of times."""
    ramp = np.linspace(start, stop, count, dtype=np.float32)
    ramp.flags.writeable = False
    return ramp


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinearly interpolated random grid: (size, size) low-frequency noise, zero mean, unit-ish variance."""
    grid = rng.standard_normal((cells + 1, cells + 1), dtype=np.float32)
    coords = np.linspace(0, cells, size, endpoint=False, dtype=np.float32)
    low = coords.astype(np.int64)
    frac = coords - low
    rows = grid[low] * (1 - frac)[:, None] + grid[low + 1] * frac[:, None]  # (size, cells + 1)
    return rows[:, low] * (1 - frac)[None] + rows[:, low + 1] * frac[None]


def _shading_profile(length: int, low: float, high: float, reverse: bool = False) -> np.ndarray:
    """A 1-D light-to-dark ramp, used to give cornices and pillars some relief."""
    ramp = _ramp(high, low, length)
    return ramp[::-1] if reverse else ramp


# ---------------------------------------------------------------------------------------------------------
# Materials: full-canvas textures (H, W, 3) in [0, 255].


def _plaster(canvas: _Canvas, colour: np.ndarray) -> np.ndarray:
    stains = _smooth_noise(canvas.noise, canvas.size, 5) * 0.05 + _smooth_noise(canvas.noise, canvas.size, 17) * 0.03
    return colour[None, None] * (1.0 + stains)[:, :, None]


def _brick(canvas: _Canvas, colour: np.ndarray, mortar: np.ndarray, course: float) -> np.ndarray:
    """Running-bond brickwork: courses of relative height `course`, bricks 2.2x as long, mortar joints."""
    size = canvas.size
    brick_h = course * size
    brick_w = brick_h * 2.2
    ys = np.arange(size, dtype=np.float32)[:, None]
    xs = np.arange(size, dtype=np.float32)[None, :]
    row = np.floor(ys / brick_h).astype(np.int64)
    shifted = xs + (row % 2) * brick_w * 0.5
    column = np.floor(shifted / brick_w).astype(np.int64)
    tones = 1.0 + 0.09 * canvas.noise.standard_normal((size + 2, size + 2), dtype=np.float32)
    tone = tones[row % (size + 2), column % (size + 2)]  # (H, W): one tone per brick
    texture = colour[None, None] * tone[:, :, None]
    if brick_h >= 3.0:  # below that a joint would cover most of the brick: tone variation alone reads as brick
        joints = ((ys - row * brick_h) < 1.0) | ((shifted - column * brick_w) < 1.0)
        texture = np.where(joints[:, :, None], mortar[None, None], texture)
    return texture


def _stone(canvas: _Canvas, colour: np.ndarray, block: float) -> np.ndarray:
    """Ashlar: large blocks with darker joints and per-block tone."""
    size = canvas.size
    block_h = block * size
    ys = np.arange(size, dtype=np.float32)[:, None]
    xs = np.arange(size, dtype=np.float32)[None, :]
    row = np.floor(ys / block_h).astype(np.int64)
    offsets = canvas.noise.uniform(0, 2.5 * block_h, size + 1).astype(np.float32)
    shifted = xs + offsets[row % (size + 1)]
    column = np.floor(shifted / (2.5 * block_h)).astype(np.int64)
    tones = 1.0 + 0.06 * canvas.noise.standard_normal((size + 1, size + 1), dtype=np.float32)
    tone = tones[row % (size + 1), column % (size + 1)]
    grain = 1.0 + 0.04 * _smooth_noise(canvas.noise, size, max(4, size // 6))
    texture = colour[None, None] * (tone * grain)[:, :, None]
    if block_h >= 3.0:
        joints = ((ys - row * block_h) < 1.0) | ((shifted - column * 2.5 * block_h) < 1.0)
        texture = np.where(joints[:, :, None], texture * 0.78, texture)
    return texture


def _rustication(canvas: _Canvas, colour: np.ndarray, course: float) -> np.ndarray:
    """Ground-floor banded stone: plain courses separated by deep horizontal grooves."""
    size = canvas.size
    ys = np.arange(size, dtype=np.float32)
    period = max(2.0, course * size)
    groove = (ys % period) < max(1.0, period * 0.18)
    texture = _plaster(canvas, colour)
    return np.where(groove[:, None, None], texture * 0.7, texture)


# ---------------------------------------------------------------------------------------------------------
# Local patterns for one element, (h, w, 3).


def _glass(h: int, w: int, style: _Style, tint: float, curtain: bool, rng: np.random.Generator) -> np.ndarray:
    """Glass reflecting the sky: light at the top, dark below, with a diagonal highlight; sometimes a curtain."""
    v = _ramp(0.0, 1.0, h)[:, None, None]
    u = _ramp(0.0, 1.0, w)[None, :, None]
    fade = np.clip(v * 1.3 * tint, 0.0, 1.0)
    pixels = style.glass_top * (1 - fade) + style.glass_bottom * fade
    streak = np.exp(-(((u - 0.7 * v) - style.streak) / 0.14) ** 2)
    pixels = pixels + 45.0 * streak
    if curtain:
        hang = (v > 0.15) & ((u < 0.3) | (u > 0.7))
        pixels = np.where(hang, style.curtain * (0.85 + 0.15 * u), pixels)
    return pixels + rng.normal(0, 3.0, (h, w, 1)).astype(np.float32)


def _framed(pixels: np.ndarray, frame: np.ndarray, thickness: int, mullions: bool) -> np.ndarray:
    """Draw a frame border (and a cross of mullion and transom) over a glass patch."""
    h, w = pixels.shape[:2]
    if h < 3 or w < 3:
        return pixels
    t = max(1, min(thickness, (min(h, w) - 1) // 3))
    pixels[:t], pixels[-t:], pixels[:, :t], pixels[:, -t:] = frame, frame, frame, frame
    if mullions and w >= 7:
        middle = w // 2
        pixels[:, middle - t // 2 : middle - t // 2 + t] = frame
    if mullions and h >= 9:
        transom = int(round(h * 0.3))
        pixels[transom : transom + t] = frame
    return pixels


def _slats(h: int, w: int, colour: np.ndarray, vertical: bool, period: int) -> np.ndarray:
    """Blinds: parallel slats, every `period`-th line darker."""
    pixels = np.broadcast_to(colour, (h, w, 3)).astype(np.float32).copy()
    lines = (np.arange(w if vertical else h) % max(2, period)) == 0
    if vertical:
        pixels[:, lines] *= 0.72
    else:
        pixels[lines] *= 0.72
    return pixels


# ---------------------------------------------------------------------------------------------------------
# The building: style choices, then the layout painted element by element.


@dataclass
class _Style:
    """Every appearance choice of one building (drawn from the layout generator, so size-independent)."""

    material: str
    wall: np.ndarray
    mortar: np.ndarray
    course: float  # brick course / stone block height, relative
    trim: np.ndarray  # cornices, sills, mouldings, pillars
    frame: np.ndarray
    glass_top: np.ndarray
    glass_bottom: np.ndarray
    streak: float
    curtain: np.ndarray
    blind: np.ndarray
    door: np.ndarray
    sign: np.ndarray
    metal: np.ndarray
    sky_top: np.ndarray
    sky_bottom: np.ndarray
    neighbour: np.ndarray
    roof: np.ndarray


def _pick(rng: np.random.Generator, colours: list[tuple[int, int, int]], jitter: float) -> np.ndarray:
    base = np.array(colours[int(rng.integers(len(colours)))], dtype=np.float32)
    return np.clip(base + rng.uniform(-jitter, jitter, 3), 0, 255).astype(np.float32)


def _draw_style(rng: np.random.Generator) -> _Style:
    material = str(rng.choice(["brick", "plaster", "stone"], p=[0.35, 0.42, 0.23]))
    if material == "brick":
        wall = _pick(rng, [(150, 70, 50), (170, 92, 62), (128, 62, 46), (182, 122, 82), (158, 108, 88)], 12)
    elif material == "plaster":
        wall = _pick(
            rng,
            [(226, 212, 182), (212, 190, 160), (232, 222, 204), (204, 172, 142), (214, 200, 190), (190, 200, 206),
             (232, 200, 158), (206, 186, 172), (182, 172, 162), (236, 226, 216), (204, 152, 122), (222, 182, 150)],
            12,
        )  # fmt: skip
    else:
        wall = _pick(rng, [(192, 182, 166), (172, 167, 157), (202, 192, 172), (152, 147, 142), (186, 171, 146)], 10)
    trim = _pick(rng, [(236, 232, 222), (214, 206, 190), (190, 184, 172)], 8)
    if material == "plaster" and rng.random() < 0.4:
        trim = np.clip(wall * rng.uniform(1.08, 1.2), 0, 255)
    if np.abs(trim - wall).mean() < 28:
        # Trim the colour of the wall would make mouldings, sills and pillars invisible in the photo while the
        # label map shows them: darken it (or lighten it on a dark wall) so every labelled part can be seen.
        trim = wall * 0.78 if wall.mean() > 150 else np.clip(wall * 1.3 + 20, 0, 255)
    return _Style(
        material=material,
        wall=wall,
        mortar=_pick(rng, [(200, 196, 186), (170, 166, 160)], 10),
        course=float(rng.uniform(1 / 70, 1 / 45)) if material == "brick" else float(rng.uniform(1 / 22, 1 / 14)),
        trim=trim,
        frame=_pick(rng, [(238, 238, 232), (238, 238, 232), (70, 50, 35), (60, 62, 66), (40, 70, 50)], 10),
        glass_top=_pick(rng, [(170, 190, 210), (150, 165, 180), (190, 200, 205)], 15),
        glass_bottom=_pick(rng, [(40, 50, 62), (55, 60, 70), (30, 38, 45)], 8),
        streak=float(rng.uniform(-0.2, 0.6)),
        curtain=_pick(rng, [(230, 226, 214), (210, 190, 160), (180, 60, 50)], 10),
        blind=_pick(rng, [(60, 100, 60), (120, 80, 50), (225, 225, 218), (120, 135, 150), (170, 150, 110)], 12),
        door=_pick(rng, [(92, 58, 34), (70, 42, 28), (40, 60, 45), (110, 30, 30), (45, 45, 50)], 10),
        sign=_pick(rng, [(170, 30, 30), (30, 60, 130), (30, 100, 60), (230, 230, 225), (30, 30, 30)], 15),
        metal=_pick(rng, [(35, 35, 38), (50, 52, 55), (220, 220, 215)], 8),
        sky_top=_pick(rng, [(90, 140, 205), (120, 160, 215), (170, 180, 190)], 12),
        sky_bottom=_pick(rng, [(190, 210, 230), (210, 215, 220)], 10),
        neighbour=_pick(rng, [(150, 140, 130), (120, 110, 105), (190, 180, 165), (110, 90, 80)], 15),
        roof=_pick(rng, [(80, 80, 85), (130, 60, 45), (100, 95, 90)], 10),
    )


def _render(index: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class indices (H, W) uint8 and photo (H, W, 3) uint8 of facade `index`."""
    if index < 0:
        raise GenlabError(f"facade index must be non-negative, got {index}")
    layout = np.random.default_rng([seed, index, 0])  # structure and colours: independent of size
    canvas = _Canvas(size, np.random.default_rng([seed, index, 1, size]))
    style = _draw_style(layout)
    _paint_building(canvas, layout, style)
    return canvas.classes, _finish_photo(canvas, layout)


def _paint_building(canvas: _Canvas, rng: np.random.Generator, style: _Style) -> None:
    # Background: sky, then neighbouring buildings at the sides (CMP labels everything off-facade background).
    sky = _ramp(0, 1, canvas.size)[:, None, None]
    canvas.paint(BACKGROUND, (0, canvas.size, 0, canvas.size), style.sky_top * (1 - sky) + style.sky_bottom * sky)
    left = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.03, 0.15))
    right = 1.0 if rng.random() < 0.5 else 1.0 - float(rng.uniform(0.03, 0.15))
    top = 0.0 if rng.random() < 0.2 else float(rng.uniform(0.04, 0.2))
    neighbour_top = float(rng.uniform(0.0, 0.3))
    if left > 0 or right < 1:
        neighbour = _plaster(canvas, style.neighbour * 0.85)
        for x0, x1 in ((0.0, left), (right, 1.0)):
            if x1 - x0 > 0.005:
                canvas.paint(BACKGROUND, canvas.box(neighbour_top, 1.0, x0, x1), neighbour)
    if top > 0.07 and rng.random() < 0.4:  # a pitched roof seen above the cornice
        roof = _rustication(canvas, style.roof, 1 / 40)
        canvas.paint(BACKGROUND, canvas.box(top - float(rng.uniform(0.04, 0.07)), top, left, right), roof)

    # The facade wall.
    wall = _wall_texture(canvas, style)
    canvas.paint(FACADE, canvas.box(top, 1.0, left, right), wall)

    floors = int(rng.integers(2, 6))  # upper floors
    columns = int(rng.choice([2, 3, 3, 4, 4, 5, 5, 6]))
    roof_cornice = float(rng.uniform(0.02, 0.045))
    ground_ratio = float(rng.uniform(1.15, 1.6))
    floor_h = (1.0 - top - roof_cornice) / (floors + ground_ratio)
    ground_top = 1.0 - ground_ratio * floor_h
    column_w = (right - left) / columns

    if rng.random() < 0.5:  # the ground floor in banded stone (photo only: still facade)
        rusticated = _rustication(canvas, np.clip(style.trim * 0.92, 0, 255), 1 / 36)
        canvas.paint(None, canvas.box(ground_top, 1.0, left, right), rusticated)

    _paint_pillars(canvas, rng, style, left, right, top + roof_cornice, ground_top, columns, column_w)

    # Cornices: one under the roof line, one above the ground floor, sometimes one per floor.
    course_h = float(rng.uniform(0.012, 0.022))
    _paint_cornice(canvas, style, top, top + roof_cornice, left, right)
    _paint_cornice(canvas, style, ground_top - course_h, ground_top, left, right)
    if rng.random() < 0.45:
        for floor in range(1, floors):
            y = top + roof_cornice + floor * floor_h
            _paint_cornice(canvas, style, y - course_h * 0.8, y, left, right)

    window = _WindowStyle.draw(rng)
    balcony_floors = _balcony_floors(rng, floors)
    for floor in range(floors):
        floor_top = top + roof_cornice + floor * floor_h
        for column in range(columns):
            centre = left + (column + 0.5) * column_w
            _paint_window_bay(canvas, rng, style, window, centre, column_w, floor_top, floor_h, floor in balcony_floors)
        if floor in balcony_floors and window.balcony_wide:
            _paint_balcony(canvas, rng, style, left + 0.01, right - 0.01, floor_top + floor_h * 0.68,
                           floor_top + floor_h * 0.97)  # fmt: skip

    _paint_ground_floor(canvas, rng, style, window, left, ground_top, columns, column_w)


def _wall_texture(canvas: _Canvas, style: _Style) -> np.ndarray:
    if style.material == "brick":
        return _brick(canvas, style.wall, style.mortar, style.course)
    if style.material == "stone":
        return _stone(canvas, style.wall, style.course)
    return _plaster(canvas, style.wall)


@dataclass
class _WindowStyle:
    """Per-building window choices, so every window of a building looks alike (as on real facades)."""

    width: float  # relative to the column width
    height: float  # relative to the floor height
    offset: float  # top of the window below the floor line, relative to the floor height
    molding: bool
    deco: str  # "none", "cap", "pediment"
    sill: bool
    blinds: str  # "none", "shutters", "roller"
    blind_rate: float
    balcony_wide: bool
    mullions: bool

    @staticmethod
    def draw(rng: np.random.Generator) -> _WindowStyle:
        return _WindowStyle(
            width=float(rng.uniform(0.36, 0.6)),
            height=float(rng.uniform(0.45, 0.66)),
            offset=float(rng.uniform(0.14, 0.26)),
            molding=bool(rng.random() < 0.5),
            deco=str(rng.choice(["none", "cap", "pediment"], p=[0.55, 0.25, 0.2])),
            sill=bool(rng.random() < 0.85),
            blinds=str(rng.choice(["none", "shutters", "roller"], p=[0.5, 0.25, 0.25])),
            blind_rate=float(rng.uniform(0.3, 0.9)),
            balcony_wide=bool(rng.random() < 0.35),
            mullions=bool(rng.random() < 0.7),
        )


def _balcony_floors(rng: np.random.Generator, floors: int) -> set[int]:
    if rng.random() >= 0.45:
        return set()
    if rng.random() < 0.5:
        return {floors - 1}  # the classic piano-nobile balcony on the first floor above the ground
    return {floor for floor in range(floors) if rng.random() < 0.5}


def _paint_pillars(canvas, rng, style, left, right, top, ground_top, columns, column_w) -> None:
    """Pilasters at column boundaries: full height, or only on the ground floor."""
    if rng.random() >= 0.4:
        return
    width = float(rng.uniform(0.025, 0.045))
    full_height = rng.random() < 0.5
    y0 = top if full_height else ground_top
    positions = [left + c * column_w for c in range(columns + 1)]
    if rng.random() < 0.4:
        positions = [positions[0], positions[-1]]
    for x in positions:
        x0, x1 = max(left, x - width / 2), min(right, x + width / 2)
        box = canvas.box(y0, 1.0, x0, x1)
        if box is None:
            continue
        # Lit from the left: a rounded profile reads as a shaft standing out from the wall.
        across = _ramp(-1.0, 1.0, box[3] - box[2])
        relief = 1.05 - 0.12 * across - 0.12 * across**2
        canvas.paint(PILLAR, box, style.trim[None, None] * relief[None, :, None] * np.ones((box[1] - box[0], 1, 1)))


def _paint_cornice(canvas: _Canvas, style: _Style, y0: float, y1: float, x0: float, x1: float) -> None:
    """A projecting horizontal band: lit top, dark underside, and a soft shadow cast on the wall below."""
    box = canvas.box(y0, y1, x0, x1)
    if box is None:
        return
    height = box[1] - box[0]
    relief = _shading_profile(height, 0.7, 1.12)
    canvas.paint(CORNICE, box, style.trim[None, None] * relief[:, None, None] * np.ones((1, box[3] - box[2], 1)))
    canvas.cast_shadow(box, depth=(y1 - y0) * 1.2 + 0.01, strength=0.45)


def _paint_window_bay(canvas, rng, style, window, centre, column_w, floor_top, floor_h, balcony) -> None:
    """One window with its surround, ornament, sill, blinds and (on balcony floors) its balcony."""
    # Windows stay upright (at most 1.1 times as wide as high), as on the facades they imitate.
    w = min(column_w * window.width, floor_h * window.height * 1.1)
    x0, x1 = centre - w / 2, centre + w / 2
    y0 = floor_top + floor_h * window.offset
    y1 = y0 + floor_h * window.height
    if balcony:  # balcony floors have French windows down to the balcony floor
        y1 = floor_top + floor_h * 0.95
    if window.molding:
        margin = w * 0.14
        box = canvas.box(y0 - margin, y1 + (0 if window.sill else margin), x0 - margin, x1 + margin)
        surround = np.clip(style.trim * 1.0, 0, 255)
        canvas.paint(MOLDING, box, surround)
        canvas.cast_shadow(canvas.box(y0 - margin, y0, x0 - margin, x1 + margin), 0.006, 0.25)
    if window.deco != "none":
        _paint_deco(canvas, style, window.deco, y0 - (w * 0.14 if window.molding else 0.0), x0, x1, w)
    box = canvas.box(y0, y1, x0, x1)
    if box is not None:
        h_px, w_px = box[1] - box[0], box[3] - box[2]
        glass = _glass(h_px, w_px, style, float(rng.uniform(0.7, 1.3)), bool(rng.random() < 0.2), canvas.noise)
        glass = _framed(glass, style.frame, max(1, int(round(min(h_px, w_px) * 0.08))), window.mullions)
        canvas.paint(WINDOW, box, glass)
        canvas.cast_shadow(canvas.box(y0, y0 + 0.001, x0, x1), 0.008, 0.35)  # the reveal at the lintel
    if window.blinds != "none" and rng.random() < window.blind_rate:
        _paint_blinds(canvas, rng, style, window.blinds, y0, y1, x0, x1, w)
    if window.sill and not balcony:
        sill = canvas.box(y1, y1 + float(rng.uniform(0.01, 0.016)), x0 - w * 0.1, x1 + w * 0.1)
        canvas.paint(SILL, sill, np.clip(style.trim * 1.04, 0, 255))
        canvas.cast_shadow(sill, 0.012, 0.4)
    if balcony and not window.balcony_wide:
        _paint_balcony(canvas, rng, style, x0 - w * 0.18, x1 + w * 0.18, y1 - floor_h * 0.3, y1 + floor_h * 0.02)


def _paint_deco(canvas, style, kind: str, y_bottom: float, x0: float, x1: float, w: float) -> None:
    """Ornament above a window: a flat cap (lintel) or a triangular pediment."""
    if kind == "cap":
        box = canvas.box(y_bottom - w * 0.2, y_bottom, x0 - w * 0.2, x1 + w * 0.2)
        if box is not None:
            relief = _shading_profile(box[1] - box[0], 0.75, 1.1)
            canvas.paint(DECO, box, style.trim[None, None] * relief[:, None, None] * np.ones((1, box[3] - box[2], 1)))
            canvas.cast_shadow(box, 0.01, 0.35)
        return
    box = canvas.box(y_bottom - w * 0.38, y_bottom, x0 - w * 0.22, x1 + w * 0.22)
    if box is None:
        return
    top, bottom, left, right = box
    rows = _ramp(0.0, 1.0, bottom - top)[:, None]
    cols = _ramp(-1.0, 1.0, right - left)[None, :]
    inside = np.abs(cols) <= rows + 1.0 / max(1, right - left)  # a triangle widening downwards
    region_classes = canvas.classes[top:bottom, left:right]
    region_photo = canvas.photo[top:bottom, left:right]
    region_classes[inside] = DECO
    tone = np.where(rows > 0.75, 0.72, 1.05) * np.ones_like(cols)
    region_photo[inside] = (style.trim[None, None] * tone[:, :, None])[inside]
    canvas.cast_shadow(box, 0.008, 0.3)


def _paint_blinds(canvas, rng, style, kind: str, y0, y1, x0, x1, w) -> None:
    """Shutters beside the window, or a roller blind pulled part-way down over the glass."""
    if kind == "shutters":
        for s0, s1 in ((x0 - w * 0.48, x0), (x1, x1 + w * 0.48)):
            box = canvas.box(y0, y1, s0, s1)
            if box is not None:
                canvas.paint(BLIND, box, _slats(box[1] - box[0], box[3] - box[2], style.blind, False, 2))
        return
    drop = float(rng.uniform(0.25, 0.8))
    box = canvas.box(y0, y0 + (y1 - y0) * drop, x0, x1)
    if box is not None:
        canvas.paint(BLIND, box, _slats(box[1] - box[0], box[3] - box[2], style.blind, False, 2))


def _paint_balcony(canvas, rng, style, x0: float, x1: float, y0: float, y1: float) -> None:
    """A railing (metal bars over what is behind) or a solid parapet, on a slab that casts a shadow."""
    box = canvas.box(y0, y1, x0, x1)
    if box is None:
        return
    top, bottom, left, right = box
    h, w = bottom - top, right - left
    behind = canvas.photo[top:bottom, left:right].copy()
    if rng.random() < 0.55:
        pixels = behind * 0.8
        pitch = max(2, int(round(canvas.size / 60)))
        pixels[:, ::pitch] = style.metal
        pixels[: max(1, h // 6)] = style.metal
    else:
        relief = _shading_profile(h, 0.8, 1.08)
        pixels = style.trim[None, None] * relief[:, None, None] * np.ones((1, w, 1))
    slab = max(1, h // 6)
    pixels[-slab:] = style.trim * 0.9
    canvas.paint(BALCONY, box, pixels)
    canvas.cast_shadow(box, (y1 - y0) * 0.5, 0.45)


def _paint_ground_floor(canvas, rng, style, window: _WindowStyle, left, ground_top, columns, column_w) -> None:
    """Shop fronts or windows, and a door (most facades have one)."""
    height = 1.0 - ground_top
    door_column = int(rng.integers(columns))
    shops = rng.random() < 0.5
    has_door = (not shops) or rng.random() < 0.75
    for column in range(columns):
        centre = left + (column + 0.5) * column_w
        if has_door and column == door_column:
            _paint_door(canvas, rng, style, centre, column_w, ground_top, height)
        elif shops:
            _paint_shop(canvas, rng, style, centre, column_w, ground_top, height)
        else:
            _paint_window_bay(canvas, rng, style, window, centre, column_w, ground_top + height * 0.05,
                              height * 0.9, balcony=False)  # fmt: skip


def _paint_door(canvas, rng, style, centre, column_w, ground_top, height) -> None:
    w = column_w * float(rng.uniform(0.38, 0.6))
    y0 = ground_top + height * float(rng.uniform(0.12, 0.28))
    box = canvas.box(y0, 1.0, centre - w / 2, centre + w / 2)
    if box is None:
        return
    h_px, w_px = box[1] - box[0], box[3] - box[2]
    pixels = np.broadcast_to(style.door, (h_px, w_px, 3)).astype(np.float32).copy()
    pixels *= (1.0 + 0.05 * canvas.noise.standard_normal((1, w_px, 1))).astype(np.float32)  # wood grain
    inset = max(1, int(round(w_px * 0.15)))
    if h_px > 4 * inset and w_px > 3 * inset:
        if rng.random() < 0.4:  # glazed upper panel
            pixels[inset : h_px // 2 - inset // 2, inset:-inset] = _glass(
                h_px // 2 - inset // 2 - inset, w_px - 2 * inset, style, 1.3, False, canvas.noise
            )
        else:
            pixels[inset : h_px // 2 - inset // 2, inset:-inset] *= 0.8
        pixels[h_px // 2 + inset // 2 : h_px - inset, inset:-inset] *= 0.8
        pixels[: max(1, inset // 2)] = style.frame
    canvas.paint(DOOR, box, pixels)
    canvas.cast_shadow(canvas.box(y0, y0 + 0.001, centre - w / 2, centre + w / 2), 0.012, 0.4)


def _paint_shop(canvas, rng, style, centre, column_w, ground_top, height) -> None:
    """A shop front: a sign band over a wide, dark display window with a frame."""
    margin = column_w * float(rng.uniform(0.05, 0.12))
    x0, x1 = centre - column_w / 2 + margin, centre + column_w / 2 - margin
    sign_y0 = ground_top + height * 0.08
    sign_y1 = sign_y0 + height * float(rng.uniform(0.1, 0.16))
    sign = canvas.box(sign_y0, sign_y1, x0, x1)
    if sign is not None:
        h_px, w_px = sign[1] - sign[0], sign[3] - sign[2]
        pixels = np.broadcast_to(style.sign, (h_px, w_px, 3)).astype(np.float32).copy()
        if h_px >= 3 and w_px >= 6:  # lettering: a row of light blocks
            letters = (np.arange(w_px) % 3 != 0) & (np.arange(w_px) > w_px * 0.15) & (np.arange(w_px) < w_px * 0.85)
            pixels[h_px // 3 : h_px - h_px // 3, letters] = 255.0 - style.sign * 0.5
        canvas.paint(SHOP, sign, pixels)
    display = canvas.box(sign_y1, 1.0 - height * 0.05, x0, x1)
    if display is not None:
        h_px, w_px = display[1] - display[0], display[3] - display[2]
        glass = _glass(h_px, w_px, style, 1.6, False, canvas.noise) * 0.75
        glass = _framed(glass, style.metal, max(1, int(round(w_px * 0.04))), mullions=w_px >= 12)
        canvas.paint(SHOP, display, glass)
    canvas.cast_shadow(sign, 0.02, 0.4)


def _finish_photo(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Apply shadows, a lighting gradient with vignetting, a slight optical blur and sensor noise; to uint8."""
    size = canvas.size
    coords = _ramp(-0.5, 0.5, size)
    gx, gy = rng.uniform(-0.3, 0.3), rng.uniform(-0.25, 0.15)
    exposure = float(rng.uniform(0.88, 1.08))
    lighting = exposure * (1.0 + gx * coords[None, :] + gy * coords[:, None])
    lighting *= 1.0 - 0.35 * (coords[None, :] ** 2 + coords[:, None] ** 2)
    photo = canvas.photo * (canvas.shade * lighting)[:, :, None]
    if size >= 96:
        # A [1, 2, 1] blur in each direction: real lenses never give one-pixel-sharp edges. Small images
        # stand for downsampled photos, which are sharp at the pixel level, so they are left alone.
        padded = np.pad(photo, ((1, 1), (1, 1), (0, 0)), mode="edge")
        photo = (padded[:-2] + 2 * padded[1:-1] + padded[2:])[:, 1:-1] * 0.25
        padded = np.pad(photo, ((0, 0), (1, 1), (0, 0)), mode="edge")
        photo = (padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]) * 0.25
    sigma = float(rng.uniform(2.0, 5.0))
    photo = photo + canvas.noise.standard_normal(photo.shape, dtype=np.float32) * sigma
    return np.clip(photo + 0.5, 0, 255).astype(np.uint8)
