"""Evaluate a run on a held-out split: generate, score, and write RUN/eval.json."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from genlab.api import load_run
from genlab.data.tasks import ImageSplit, Task
from genlab.metrics.pixel import psnr, ssim
from genlab.utils import GenlabError, atomic_write_text, signed_to_uint8, uint8_to_signed

Translator = Callable[[torch.Tensor], torch.Tensor]  # source batch in [-1, 1] -> target batch in [-1, 1]


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    batch_size: int = 16,
    device: str = "auto",
    limit: int | None = None,
    baselines: bool = False,
    write: bool = True,
) -> dict[str, Any]:
    """Score a run on `split` and write RUN/eval.json; `baselines` adds the mean-photo and nearest-neighbour rows."""
    loaded = load_run(run_dir, device=device)
    task = loaded.task()
    if task.spec.kind != "paired":
        raise GenlabError(
            f"evaluate: {task.spec.kind} tasks ({task.spec.name}) have no metric suite yet; paired tasks do"
        )
    data = _limited(task.split(split), limit)
    model = loaded.model
    results: dict[str, Any] = {
        "run": str(loaded.run_dir), "model": loaded.config.model, "task": task.spec.name, "split": split,
        "step": loaded.step, "count": len(data),
        "metrics": score_translator(lambda source: model.translate_batch(source.to(model.device)), data, batch_size),
    }
    if baselines:
        results["baselines"] = {
            "mean_train_target": score_translator(mean_target_baseline(task), data, batch_size),
            "nearest_neighbour": score_translator(nearest_neighbour_baseline(task), data, batch_size),
        }
    if write:
        atomic_write_text(Path(run_dir) / "eval.json", json.dumps(results, indent=2) + "\n")
    return results


def _limited(data: ImageSplit, limit: int | None) -> ImageSplit:
    if limit is None or limit >= len(data):
        return data
    return ImageSplit({key: value[:limit] for key, value in data.fields.items()}, data.names[:limit])


@torch.no_grad()
def score_translator(translator: Translator, data: ImageSplit, batch_size: int = 16) -> dict[str, Any]:
    """PSNR and SSIM (on [0, 1], after 8-bit quantisation as saved images would be) over a paired split."""
    psnr_values, ssim_values = [], []
    sources, targets = data.fields["source"], data.fields["target"]
    for start in tqdm(range(0, len(data), batch_size), desc="evaluating", leave=False, unit="batch"):
        source = uint8_to_signed(sources[start : start + batch_size])
        target = targets[start : start + batch_size].float() / 255.0
        output = signed_to_uint8(translator(source)).cpu().float() / 255.0
        psnr_values.append(psnr(output.double(), target.double(), data_range=1.0, reduction="none"))
        ssim_values.append(ssim(output.double(), target.double(), data_range=1.0, reduction="none"))
    return {
        "psnr": _summary(torch.cat(psnr_values), "dB, data range [0, 1]"),
        "ssim": _summary(torch.cat(ssim_values), "Gaussian window 11, sigma 1.5"),
    }


def _summary(values: torch.Tensor, note: str) -> dict[str, Any]:
    finite = values[torch.isfinite(values)]
    return {
        "value": float(finite.mean()) if len(finite) else math.inf,
        "std": float(finite.std()) if len(finite) > 1 else 0.0,
        "count": len(values),
        "identical_images": int((~torch.isfinite(values)).sum()),  # PSNR is +inf there; left out of the mean
        "note": note,
    }


def mean_target_baseline(task: Task) -> Translator:
    """Predict the mean training target for every input: the score any useful translator must beat."""
    mean = uint8_to_signed(task.split("train").fields["target"]).mean(dim=0, keepdim=True)  # (1, C, H, W)
    return lambda source: mean.expand(len(source), -1, -1, -1)


def nearest_neighbour_baseline(task: Task, chunk: int = 256) -> Translator:
    """Return the training target whose source is nearest (L2 on pixels) to the input source."""
    train = task.split("train")
    train_sources = uint8_to_signed(train.fields["source"]).flatten(1)  # (N, D)
    train_targets = uint8_to_signed(train.fields["target"])

    def translate(source: torch.Tensor) -> torch.Tensor:
        queries = source.cpu().flatten(1)
        return train_targets[_nearest_index(queries, train_sources, chunk)]

    return translate


def _nearest_index(queries: torch.Tensor, keys: torch.Tensor, chunk: int) -> torch.Tensor:
    """Index of the nearest key (L2) for each query, scanning the keys in chunks to bound memory."""
    best_distance = torch.full((len(queries),), math.inf)
    best_index = torch.zeros(len(queries), dtype=torch.long)
    for start in range(0, len(keys), chunk):
        distances = torch.cdist(queries, keys[start : start + chunk])  # (Q, chunk)
        value, index = distances.min(dim=1)
        better = value < best_distance
        best_distance = torch.where(better, value, best_distance)
        best_index = torch.where(better, index + start, best_index)
    return best_index
