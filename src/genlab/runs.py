"""Resolving a run's config: family defaults < the family's preset < options < `--set` overrides.

It sits above `genlab.models` (it needs the registry of families) and below the trainer and the CLI, which
call it; `genlab.config` holds the typed sections and knows no family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from genlab.config import (
    DataConfig,
    RunConfig,
    TrainConfig,
    apply_override,
    check_value,
    dataclass_from_dict,
    set_value,
)
from genlab.models import get_model_class
from genlab.utils import GenlabError


def run_config_from_dict(values: dict[str, Any], source: str = "config") -> RunConfig:
    """Build a RunConfig from a plain dict (as loaded from YAML), validating every key and type."""
    if not isinstance(values, dict):
        raise GenlabError(f"{source}: expected a mapping at the top level, got {type(values).__name__}")
    allowed = {"model", "preset", "seed", "data", "train", "net"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise GenlabError(f"{source}: unknown key {unknown[0]!r} (valid: {', '.join(sorted(allowed))})")
    if "model" not in values:
        raise GenlabError(f"{source}: missing key 'model'")
    model_class = get_model_class(str(values["model"]))
    return RunConfig(
        model=model_class.name,
        preset=str(values.get("preset", model_class.default_preset)),
        seed=check_value(values.get("seed", 0), int, f"{source}: seed"),
        data=dataclass_from_dict(DataConfig, values.get("data") or {}, f"{source}: data"),
        train=dataclass_from_dict(TrainConfig, values.get("train") or {}, f"{source}: train"),
        net=dataclass_from_dict(model_class.config_class, values.get("net") or {}, f"{source}: net"),
    )


def load_run_config(path: str | Path) -> RunConfig:
    """Read a RunConfig from a YAML file, with errors that name the file and key."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise GenlabError(f"{path}: config file not found") from error
    except yaml.YAMLError as error:
        raise GenlabError(f"{path}: not valid YAML ({error})") from error
    return run_config_from_dict(values or {}, source=str(path))


def build_run_config(
    model: str, preset: str | None = None, values: dict[str, Any] | None = None, assignments: list[str] | None = None
) -> RunConfig:
    """Resolve a run config: dataclass defaults < the family's preset < the preset's settings for the run's image
    size (`size_presets`) < its settings for the run's task (`task_presets`) < `values` (dotted keys) <
    `assignments`."""
    model_class = get_model_class(model)
    preset = preset or model_class.default_preset
    if preset not in model_class.presets:
        valid = ", ".join(model_class.presets)
        raise GenlabError(f"unknown preset {preset!r} for model {model_class.name!r} (valid: {valid})")
    config = RunConfig(model=model_class.name, preset=preset, net=model_class.config_class())
    for key, value in model_class.presets[preset].items():
        set_value(config, key, value, source=f"preset {preset}")
    given = {key: value for key, value in (values or {}).items() if value is not None}
    for key, value in given.items():
        set_value(config, key, value, source="option")
    for assignment in assignments or []:
        apply_override(config, assignment)
    # The task is known only now (the preset's, an option's or a --set's): its refinements go in under what
    # the user gave explicitly.
    explicit = set(given) | {assignment.split("=", 1)[0].strip() for assignment in assignments or []}
    task_settings = model_class.task_presets.get(preset, {}).get(config.data.task, {})
    for key, value in task_settings.items():
        if key not in explicit:
            set_value(config, key, value, source=f"preset {preset} for task {config.data.task}")
    # Then the size (the task's refinement may have set it): what holds for any images that small, under what
    # the task's refinement says.
    size = config.data.image_size
    for key, value in size_settings(model_class.size_presets.get(preset, {}), size).items():
        if key not in explicit and key not in task_settings:
            set_value(config, key, value, source=f"preset {preset} at {size} px")
    return config


def size_settings(by_largest_size: dict[int, dict[str, Any]], size: int) -> dict[str, Any]:
    """The settings of the smallest size bound at or above `size` ({32: {...}}: for images up to 32 px)."""
    bounds = sorted(bound for bound in by_largest_size if size <= bound)
    return by_largest_size[bounds[0]] if bounds else {}
