"""Loading trained runs (or exported models) for use from Python and by the evaluate/translate/sample commands."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genlab import checkpoint as ckpt
from genlab.config import RunConfig
from genlab.data.tasks import Task, TaskSpec, get_task
from genlab.models import GenerativeModel, Runtime, get_model_class
from genlab.runs import run_config_from_dict
from genlab.utils import GenlabError, select_device

# An export folder (`genlab export`): inference weights as safetensors and the config and task spec as JSON.
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_CONFIG = "config.json"
EXPORT_FORMAT = "genlab-export"
EXPORT_FORMAT_VERSION = 1
EMA_PREFIX = "ema_"  # families with abilities.ema keep the average of network X as the submodule ema_X


@dataclass
class LoadedRun:
    """A trained model with the config and task it was trained with."""

    run_dir: Path
    config: RunConfig
    model: GenerativeModel
    step: int

    def task(self) -> Task:
        return get_task(self.config.data)


def is_export_dir(path: str | Path) -> bool:
    """Whether `path` is a folder written by `genlab export` (config.json and model.safetensors, no run)."""
    path = Path(path)
    return (path / EXPORT_CONFIG).is_file() and (path / EXPORT_WEIGHTS).is_file()


def load_run(
    run_dir: str | Path,
    device: str = "auto",
    checkpoint: str | None = None,
    precision: str = "fp32",
    channels_last: bool | None = None,
) -> LoadedRun:
    """Rebuild a run's model from its checkpoint alone (the config is stored inside it), in eval mode.

    `run_dir` may also be an export folder (`genlab export RUN --out DIR`): its weights are loaded without any
    optimiser state. `precision` is the autocast of its forward passes: fp32 (default, what `evaluate` scores
    with), bf16 (CUDA or CPU), fp16 (CUDA) or auto (bf16/fp16 on CUDA, fp32 elsewhere). `channels_last` is the
    weights' memory layout (None: the family's `inference_channels_last`, channels_last where that is faster).

    >>> model = load_run("runs/p2p").model  # doctest: +SKIP
    """
    if checkpoint is None and is_export_dir(run_dir) and not (Path(run_dir) / ckpt.CONFIG_FILE).is_file():
        return load_export(run_dir, device, precision, channels_last)
    run_dir = ckpt.require_run_dir(run_dir)
    path = Path(checkpoint) if checkpoint else ckpt.checkpoint_dir(run_dir) / ckpt.LAST
    document = ckpt.load_checkpoint(path)
    config = run_config_from_dict(document["config"], source=f"{path} (stored config)")
    spec = TaskSpec.from_dict(document["spec"]) if "spec" in document else get_task(config.data).spec
    model = get_model_class(config.model).build(config.net, spec)
    model.load_training_state(document["state"], weights_only=True)
    return _ready(LoadedRun(run_dir, config, model, int(document.get("step", 0))), device, precision, channels_last)


def load_export(
    folder: str | Path, device: str = "auto", precision: str = "fp32", channels_last: bool | None = None
) -> LoadedRun:
    """Rebuild a model from an export folder: config.json (run config, task spec) and model.safetensors;
    `precision` and `channels_last` as in `load_run`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    document = read_export_config(folder)
    config = run_config_from_dict(document["config"], source=f"{folder / EXPORT_CONFIG} (config)")
    spec = TaskSpec.from_dict(document["spec"])
    model = get_model_class(config.model).build(config.net, spec)
    tensors = load_file(str(folder / EXPORT_WEIGHTS))
    model.load_state_dict(inference_to_state_dict(tensors, model.state_dict().keys()))
    model.step = int(document.get("step", 0))
    return _ready(LoadedRun(folder, config, model, model.step), device, precision, channels_last)


def read_export_config(folder: Path) -> dict[str, Any]:
    """config.json of an export folder, checked: its format, version and keys."""
    try:
        document = json.loads((folder / EXPORT_CONFIG).read_text())
    except json.JSONDecodeError as error:
        raise GenlabError(f"{folder / EXPORT_CONFIG}: not valid JSON ({error})") from error
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise GenlabError(f"{folder / EXPORT_CONFIG}: not a genlab export (format is not {EXPORT_FORMAT!r})")
    if int(document.get("format_version", 0)) > EXPORT_FORMAT_VERSION:
        raise GenlabError(f"{folder}: export format {document['format_version']} is newer than this genlab; upgrade")
    for key in ("config", "spec"):
        if key not in document:
            raise GenlabError(f"{folder / EXPORT_CONFIG}: missing key {key!r}")
    return document


def inference_to_state_dict(tensors: dict[str, torch.Tensor], keys) -> dict[str, torch.Tensor]:
    """A full state dict from exported weights: a network exported only as its EMA (ema_X) gets the EMA's
    weights, so the trained network and its average agree; any other missing key is an error."""
    state = {}
    for key in keys:
        if key in tensors:
            state[key] = tensors[key]
        elif EMA_PREFIX + key in tensors:
            state[key] = tensors[EMA_PREFIX + key]
        else:
            raise GenlabError(f"exported weights lack {key!r}: the export does not match this genlab's model")
    return state


def _ready(loaded: LoadedRun, device: str, precision: str, channels_last: bool | None) -> LoadedRun:
    if channels_last is None:
        channels_last = loaded.model.inference_channels_last
    runtime = Runtime.for_device(select_device(device), precision, setting="precision", channels_last=channels_last)
    loaded.model.attach(runtime)
    loaded.model.eval()
    return loaded
