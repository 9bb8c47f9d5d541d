"""Typed dataclass configs, YAML load/save, dotted `key=value` overrides with type checking.

A run is described by one `RunConfig`: the model family name, its preset, the seed, and three sections:
`data` (DataConfig), `train` (TrainConfig) and `net` (the family's own dataclass, e.g. Pix2PixConfig).
This module knows no family: resolving a family's preset and net config is `genlab.runs`' job (above models).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from genlab.utils import GenlabError, atomic_write_text

Precision = Literal["auto", "fp32", "fp16", "bf16"]


@dataclass
class DataConfig:
    """Which task to train on and how its images are prepared."""

    task: str = "facades-synth"
    image_size: int = 64  # side of the square images the model sees
    # Resize-then-crop jitter (pix2pix / the seed report: 256 -> 300 -> random crop 256). None: size * 300/256.
    load_size: int | None = None
    flip: bool = True  # random horizontal flip, identical for both images of a pair
    data_root: str | None = None  # where on-disk datasets are looked for first
    train_limit: int | None = None  # use only the first N training items (for tiny experiments and tests)
    skip_bad_files: bool = False  # skip unreadable images with a warning instead of stopping

    def resolved_load_size(self) -> int:
        if self.load_size is not None:
            return self.load_size
        return int(round(self.image_size * 300 / 256))


@dataclass
class TrainConfig:
    """The training loop: budget, batch, device, logging and checkpoint cadence."""

    # Budgets: the run stops at whichever ends first; at least one must be set. Giving one on the command line
    # (`set_budget`) replaces the preset's budget rather than adding to it.
    steps: int | None = 1000  # optimisation steps
    minutes: float | None = None  # wall-clock training time
    images: int | None = None  # training images seen (steps x batch size): equal data for different batch sizes
    batch_size: int = 1
    device: str = "auto"  # auto picks cuda > mps > cpu
    precision: Precision = "auto"  # auto: bf16 (or fp16) autocast on CUDA, fp32 elsewhere
    log_every: int = 25  # steps between rows of metrics.csv
    sample_every: int = 500  # steps between preview grids in RUN/samples/
    checkpoint_every: int = 1000  # steps between numbered checkpoints (last.pt is written with each)
    keep_checkpoints: int = 3  # numbered checkpoints kept besides last.pt
    compile: bool = False  # torch.compile the networks (GPU; slow to start on CPU)
    preview_count: int = 8  # test items shown in each preview grid


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
    train.steps, train.minutes, train.images = steps, minutes, images
    return True


@dataclass
class RunConfig:
    """Everything needed to rebuild a run: saved resolved as RUN/config.yaml and inside every checkpoint."""

    model: str
    preset: str
    seed: int = 0
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
    checked = {key: check_value(value, hints[key], f"{source}.{key}") for key, value in values.items()}
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
        config.seed = check_value(value, int, f"{source} seed")
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
    setattr(section, field_name, check_value(value, hint, f"{source} {key}"))


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
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise GenlabError(f"{where}: expected a string, got {value!r}")
        return value
    raise GenlabError(f"{where}: unsupported config type {hint}")
