"""`genlab export`: a run's inference weights as safetensors plus its config, for sharing without optimiser
state. The export folder loads with `genlab.load(DIR)` like a run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from genlab import __version__
from genlab.api import (
    EMA_PREFIX,
    EXPORT_CONFIG,
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    EXPORT_WEIGHTS,
    load_run,
)
from genlab.models.base import GenerativeModel
from genlab.utils import atomic_path, atomic_write_text


def inference_weights(model: GenerativeModel) -> dict[str, torch.Tensor]:
    """The model's networks and buffers without optimiser state; where the model keeps an EMA (abilities.ema) the
    averaged network (ema_X) replaces the trained one (X), which sampling does not use."""
    state = model.state_dict()
    averaged = averaged_keys(model, state)
    # contiguous copies: safetensors refuses tensors that share storage
    return {key: value.detach().cpu().contiguous().clone() for key, value in state.items() if key not in averaged}


def averaged_keys(model: GenerativeModel, state: dict[str, torch.Tensor]) -> set[str]:
    """The keys of networks X whose average ema_X the model keeps (none for a family or run without one)."""
    if not model.abilities.ema:
        return set()
    return {key[len(EMA_PREFIX) :] for key in state if key.startswith(EMA_PREFIX)} & set(state)


def export_run(run_dir: str | Path, out_dir: str | Path, checkpoint: str | None = None) -> list[Path]:
    """Write OUT/model.safetensors (inference weights) and OUT/config.json (run config, task spec, step).

    >>> export_run("runs/p2p", "exports/p2p")  # doctest: +SKIP
    """
    from safetensors.torch import save

    # contiguous weights: safetensors stores tensors in their default layout only
    loaded = load_run(run_dir, device="cpu", checkpoint=checkpoint, channels_last=False)
    out_dir = Path(out_dir)
    weights, config = out_dir / EXPORT_WEIGHTS, out_dir / EXPORT_CONFIG
    with atomic_path(weights) as temporary:
        # bytes into atomic_path's file (save_file would replace it, losing its permissions)
        temporary.write_bytes(save(inference_weights(loaded.model), metadata={"format": EXPORT_FORMAT}))
    document = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "genlab_version": __version__,
        "model": loaded.config.model,
        "step": loaded.step,
        "ema": bool(averaged_keys(loaded.model, loaded.model.state_dict())),
        "config": loaded.config.to_dict(),
        "spec": dataclasses.asdict(loaded.model.spec),
    }
    atomic_write_text(config, json.dumps(document, indent=2) + "\n")
    return [weights, config]
