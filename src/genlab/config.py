"""Typed dataclass configs, YAML load/save, dotted `key=value` overrides with type checking.

A run is described by one `RunConfig`: the model family name, its preset, the seed, and three sections:
`data` (DataConfig), `train` (TrainConfig) and `net` (the family's own dataclass, e.g. Pix2PixConfig).
This module knows no family: resolving a family's preset and net config is `genlab.runs`' job (above models).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from genlab.utils import GenlabError, atomic_write_text

Precision = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)  # the names, for argparse choices and checks
OnNaN = Literal["stop", "rollback"]
OptimizerKernel = Literal["auto", "fused", "foreach", "loop"]
Logger = Literal["csv", "tensorboard", "wandb"]


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric config field: low <= value <= high (None: unbounded on that side);
    `low_open` / `high_open` exclude the bound itself. NaN and infinity are never allowed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.high_open and value == self.high))

    def describe(self) -> str:
        """The range as a reader writes it: `>= 1`, `> 0`, `[0, 1)`."""
        if self.low is not None and self.high is not None:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{opening}{_number(self.low)}, {_number(self.high)}{closing}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_number(self.high)}"
        return "any finite number"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def ranged(default: Any, low: float | None = None, high: float | None = None, **bounds: bool) -> Any:
    """A dataclass field whose value must lie in Range(low, high, **bounds): `lr: float = ranged(1e-3, 0, 1)`.

    Example: `width: int = ranged(64, 1)` accepts 1, 2, ... and refuses 0 with "net.width: 0 is out of range (>= 1)".
    """
    return field(default=default, metadata={"range": Range(low, high, **bounds)})


def positive(default: Any) -> Any:
    """A field that must be > 0 (an int field: >= 1)."""
    if isinstance(default, int) and not isinstance(default, bool):
        return ranged(default, 1)
    return ranged(default, 0, low_open=True)


def non_negative(default: Any) -> Any:
    """A field that must be >= 0."""
    return ranged(default, 0)


def unit_interval(default: Any, high_open: bool = False) -> Any:
    """A field in [0, 1] (or [0, 1) with `high_open`): probabilities, fractions, decays."""
    return ranged(default, 0, 1, high_open=high_open)


def field_range(cls: type, name: str) -> Range | None:
    """The Range declared on field `name` of dataclass `cls`, if any."""
    for item in dataclasses.fields(cls):
        if item.name == name:
            return item.metadata.get("range")
    return None


def check_range(value: Any, allowed: Range | None, where: str) -> Any:
    """Raise a GenlabError naming `where`, the value and the allowed range when a number falls outside it.

    Lists and tuples are checked item by item; None (an optional field left unset) always passes.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_range(item, allowed, f"{where}[{index}]")
        return value
    if isinstance(value, (int, float)):
        if allowed is not None and not allowed.contains(value):
            raise GenlabError(f"{where}: {value!r} is out of range (allowed: {allowed.describe()})")
        if allowed is None and isinstance(value, float) and not math.isfinite(value):
            raise GenlabError(f"{where}: {value!r} is not a finite number")
    return value


# pix2pix's and the seed report's jitter for photos: resize 256 -> 300, then a random 256 crop.
PHOTO_LOAD_SCALE = 300 / 256


@dataclass
class DataConfig:
    """Which task to train on and how its images are prepared."""

    task: str = "facades-synth"
    image_size: int = ranged(64, 4, 4096)  # side of the square images the model sees; families may need more
    # Resize-then-crop jitter (pix2pix / the seed report: 256 -> 300 -> random crop 256). None: size * load_scale.
    load_size: int | None = ranged(None, 4, 8192)
    # load_size / image_size when load_size is None, so the jitter follows --size. None: the task's own, 300/256
    # (pix2pix's 286-300 px) for photos, 1 (no jitter) for centred objects such as Fashion-MNIST's garments,
    # whose test images are never cropped (a jittered training set is at domain FID 5.4 from them; README).
    load_scale: float | None = ranged(None, 1, 8)
    # Which side of a folder task's pairs is the source: AtoB (left/A -> right/B) or BtoA (swapped on load).
    direction: Literal["AtoB", "BtoA"] = "AtoB"
    flip: bool = True  # random horizontal flip, identical for both images of a pair
    data_root: str | None = None  # where on-disk datasets are looked for first
    # use only the first N training items (for tiny experiments and tests)
    train_limit: int | None = ranged(None, 1)
    skip_bad_files: bool = False  # skip unreadable images with a warning instead of stopping

    def resolved_load_size(self, task_load_scale: float = PHOTO_LOAD_SCALE) -> int:
        """The size training images are resized to before the random crop; `task_load_scale` stands in for an
        unset load_scale (the task's own: `Task.load_scale`)."""
        if self.load_size is not None:
            return self.load_size
        scale = task_load_scale if self.load_scale is None else self.load_scale
        return int(round(self.image_size * scale))


@dataclass
class TrainConfig:
    """The training loop: budget, batch, device, logging and checkpoint cadence."""

    # Budgets: the run stops at whichever ends first; at least one must be set. Giving one on the command line
    # (`set_budget`) replaces the preset's budget rather than adding to it.
    steps: int | None = ranged(1000, 1)  # optimisation steps
    minutes: float | None = ranged(None, 0, low_open=True)  # wall-clock training time
    # training images seen (steps x batch size): equal data for different batch sizes
    images: int | None = ranged(None, 1)
    batch_size: int = ranged(1, 1, 65536)
    device: str = "auto"  # auto picks cuda > mps > cpu
    # auto: bf16 (or fp16) autocast on CUDA, fp32 elsewhere; bf16 also runs on CPUs; fp16 needs CUDA
    precision: Precision = "auto"
    log_every: int = ranged(25, 1)  # steps between rows of metrics.csv
    # where rows and preview grids also go: metrics.csv is always written; tensorboard -> RUN/tensorboard/,
    # wandb -> an offline W&B run in RUN/wandb/ (each needs its pip package)
    logger: Logger = "csv"
    sample_every: int = ranged(500, 1)  # steps between preview grids in RUN/samples/
    checkpoint_every: int = ranged(1000, 1)  # steps between numbered checkpoints (last.pt is written with each)
    keep_checkpoints: int = ranged(3, 0)  # numbered checkpoints kept besides last.pt
    compile: bool = False  # torch.compile the networks (GPU; slow to start on CPU)
    channels_last: bool = False  # conv weights and image batches in channels_last memory format
    # Adam/AdamW/SGD update kernel: auto (fused on CUDA and CPU), fused, foreach, or loop (torch's per-tensor loop)
    fused_optimizer: OptimizerKernel = "auto"
    # Batches are gathered from in-memory uint8 tensors (no DataLoader, no workers): this page-locks each batch
    # before its asynchronous copy to a CUDA device; it does nothing on the CPU.
    pin_memory: bool = True
    preview_count: int = ranged(8, 1, 256)  # test items shown in each preview grid
    # A NaN/Inf loss or weight: stop (keeping the last finite checkpoint) or roll back to it with every
    # optimiser's learning rate multiplied by nan_lr_factor, at most max_rollbacks times.
    on_nan: OnNaN = "stop"
    nan_lr_factor: float = ranged(0.5, 0, 1, low_open=True, high_open=True)
    max_rollbacks: int = ranged(3, 0, 100)

    def step_budget(self) -> int | None:
        """The step at which the steps or images budget ends (None: only a minutes budget)."""
        limits = []
        if self.steps is not None:
            limits.append(self.steps)
        if self.images is not None:
            limits.append(-(-self.images // self.batch_size))  # ceil: the last batch may pass the budget
        return min(limits) if limits else None


def set_budget(
    train: TrainConfig, steps: int | None = None, minutes: float | None = None, images: int | None = None
) -> bool:
    """Replace the budget by the ones given (the others are cleared); nothing given keeps it. Returns whether
    it changed. The one place where "--minutes replaces the preset's steps" is decided."""
    if steps is None and minutes is None and images is None:
        return False
    hints = typing.get_type_hints(TrainConfig)
    for name, value in (("steps", steps), ("minutes", minutes), ("images", images)):
        where = f"train.{name}"
        check_range(check_value(value, hints[name], where), field_range(TrainConfig, name), where)
    train.steps, train.minutes, train.images = steps, None if minutes is None else float(minutes), images
    return True


@dataclass
class RunConfig:
    """Everything needed to rebuild a run: saved resolved as RUN/config.yaml and inside every checkpoint."""

    model: str
    preset: str
    seed: int = ranged(0, 0, 2**63 - 1)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    net: Any = None  # the family's config dataclass

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-safe values (tuples become lists)."""
        return _plain(
            {
                "model": self.model,
                "preset": self.preset,
                "seed": self.seed,
                "data": dataclasses.asdict(self.data),
                "train": dataclasses.asdict(self.train),
                "net": dataclasses.asdict(self.net) if self.net is not None else {},
            }
        )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_yaml())


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def dataclass_from_dict(cls: type, values: dict[str, Any], source: str) -> Any:
    """Instantiate dataclass `cls` from `values`, rejecting unknown keys and ill-typed values."""
    if not isinstance(values, dict):
        raise GenlabError(f"{source}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise GenlabError(f"{source}: unknown key {key!r} (valid: {', '.join(names)})")
    checked = {
        key: check_range(check_value(value, hints[key], f"{source}.{key}"), field_range(cls, key), f"{source}.{key}")
        for key, value in values.items()
    }
    return cls(**checked)


def apply_override(config: RunConfig, assignment: str) -> None:
    """Apply one `section.key=value` (or `seed=value`) override in place; the value is parsed as YAML."""
    if "=" not in assignment:
        raise GenlabError(f"--set {assignment!r}: expected key=value, for example train.steps=500")
    key, raw_value = assignment.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError as error:
        raise GenlabError(f"--set {key}: cannot parse value {raw_value!r}") from error
    set_value(config, key, value, source="--set")


def set_value(config: RunConfig, key: str, value: Any, source: str = "config") -> None:
    """Set a dotted key (`train.steps`, `net.width`, `seed`) with type checking; errors list valid keys."""
    if key == "seed":
        config.seed = check_range(check_value(value, int, f"{source} seed"), SEED_RANGE, f"{source} seed")
        return
    sections = {"data": config.data, "train": config.train, "net": config.net}
    section_name, _, field_name = key.partition(".")
    if section_name not in sections or not field_name:
        valid = ["seed"] + [f"{name}.{f.name}" for name, obj in sections.items() for f in dataclasses.fields(obj)]
        raise GenlabError(f"{source}: unknown key {key!r} (valid: {', '.join(valid)})")
    section = sections[section_name]
    names = [f.name for f in dataclasses.fields(section)]
    if field_name not in names:
        valid = ", ".join(f"{section_name}.{name}" for name in names)
        raise GenlabError(f"{source}: unknown key {key!r} (valid: {valid})")
    hint = typing.get_type_hints(type(section))[field_name]
    where = f"{source} {key}"
    checked = check_range(check_value(value, hint, where), field_range(type(section), field_name), where)
    if dataclasses.is_dataclass(section) and section.__dataclass_params__.frozen:
        raise GenlabError(f"{where}: the section is read-only")
    setattr(section, field_name, checked)


SEED_RANGE = Range(0, 2**63 - 1)


def validate_config(config: RunConfig, source: str = "config") -> None:
    """Check every field of a resolved config against its type and declared range (what `--dry-run` checks).

    Catches values set directly on the dataclasses, which `set_value` never saw.
    """
    check_range(check_value(config.seed, int, f"{source} seed"), SEED_RANGE, f"{source} seed")
    for section_name, section in (("data", config.data), ("train", config.train), ("net", config.net)):
        if section is None:
            continue
        hints = typing.get_type_hints(type(section))
        for item in dataclasses.fields(section):
            where = f"{source} {section_name}.{item.name}"
            value = check_value(getattr(section, item.name), hints[item.name], where)
            check_range(value, item.metadata.get("range"), where)


def valid_keys(config: RunConfig) -> list[str]:
    sections = {"data": config.data, "train": config.train, "net": config.net}
    return ["seed"] + [f"{name}.{f.name}" for name, obj in sections.items() for f in dataclasses.fields(obj)]


def check_value(value: Any, hint: Any, where: str) -> Any:
    """Return `value` converted to `hint` (int -> float allowed), or raise a GenlabError naming `where`."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise GenlabError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return check_value(value, option, where)
            except GenlabError as error:
                errors.append(str(error))
        raise GenlabError(errors[0] if len(errors) == 1 else f"{where}: {value!r} has the wrong type ({hint})")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise GenlabError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and len(args) > 1 and args[-1] is not Ellipsis:  # a fixed length: tuple[float, float]
            if len(value) != len(args):
                raise GenlabError(f"{where}: expected {len(args)} values, got {len(value)} ({value!r})")
            return tuple(check_value(item, item_hint, f"{where}[{index}]")
                         for index, (item, item_hint) in enumerate(zip(value, args, strict=True)))
        item_hint = args[0] if args else Any
        items = [check_value(item, item_hint, f"{where}[{index}]") for index, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise GenlabError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GenlabError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GenlabError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError as error:
            raise GenlabError(f"{where}: {value!r} is too large for a number") from error
    if hint is str:
        if not isinstance(value, str):
            raise GenlabError(f"{where}: expected a string, got {value!r}")
        return value
    raise GenlabError(f"{where}: unsupported config type {hint}")


# What may change when a run is resumed: budgets, device and cadences. Everything else (the model, its data,
# batch size, seed, net.*) decides what the checkpoint holds or which batches come next, and is refused.
RESUME_SAFE_KEYS = frozenset(
    {
        "train.steps",
        "train.minutes",
        "train.images",
        "train.device",
        "train.log_every",
        "train.logger",
        "train.sample_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "train.preview_count",
        "train.on_nan",
        "train.nan_lr_factor",
        "train.max_rollbacks",
        # how the same computation runs (speed), not what it computes
        "train.precision",
        "train.compile",
        "train.channels_last",
        "train.fused_optimizer",
        "train.pin_memory",
        "data.data_root",
        "data.skip_bad_files",
    }
)


def flatten_config(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"steps": 5}} -> {"train.steps": 5} (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def resume_changes(stored: dict[str, Any], config: RunConfig) -> list[str]:
    """The dotted keys whose value in `config` differs from the `stored` config dict (a checkpoint's or a saved
    config.yaml's), sorted; compare them with RESUME_SAFE_KEYS to decide what a resume may change. Keys only one
    side has (a field added by a later genlab) are not changes."""
    old, new = flatten_config(_plain(stored)), flatten_config(config.to_dict())
    return sorted(key for key in set(old) & set(new) if key != "preset" and old[key] != new[key])
