"""Evaluate a run on a held-out split: generate or translate, run the metric suite that fits the task, and
write RUN/eval.json (every value with its metric, feature network and sample count)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from genlab.api import load_run
from genlab.data.tasks import ImageSplit, Task
from genlab.metrics import suite
from genlab.models.base import GenerativeModel
from genlab.utils import GenlabError, atomic_write_text, derive_seed, signed_to_uint8, uint8_to_signed

Translator = Callable[[torch.Tensor], torch.Tensor]  # source batch in [-1, 1] -> target batch in [-1, 1]


@dataclass
class EvalOptions:
    """What to compute. Feature spaces: `domain` (works offline) and `inception` (needs its weights)."""

    split: str = "test"
    batch_size: int = 32
    limit: int | None = None  # first N items of the split
    count: int | None = None  # generated images for generation runs (default: the split size, at most 1000)
    features: tuple[str, ...] = ("domain", "inception")
    inception_weights: str | None = None
    lpips: bool = True
    diversity_inputs: int = 16  # inputs translated 3 times for the diversity score (0 = skip)
    baselines: bool = False
    seed: int = 0


def evaluate_run(
    run_dir: str | Path, options: EvalOptions | None = None, device: str = "auto", write: bool = True
) -> dict[str, Any]:
    """Score a run and (by default) write RUN/eval.json."""
    options = options or EvalOptions()
    loaded = load_run(run_dir, device=device)
    task = loaded.task()
    data = _limited(task.split(options.split), options.limit)
    results: dict[str, Any] = {
        "run": str(loaded.run_dir),
        "model": loaded.config.model,
        "task": task.spec.name,
        "split": options.split,
        "step": loaded.step,
    }
    if task.spec.kind == "paired":
        results.update(evaluate_translation(loaded.model, task, data, options))
    elif task.spec.kind == "labelled":
        results.update(evaluate_generation(loaded.model, task, data, options))
    else:
        raise GenlabError(f"evaluate: {task.spec.kind} tasks have no metric suite yet")
    if write:
        atomic_write_text(Path(run_dir) / "eval.json", json.dumps(results, indent=2) + "\n")
    return results


def _limited(data: ImageSplit, limit: int | None) -> ImageSplit:
    if limit is None or limit >= len(data):
        return data
    return ImageSplit({key: value[:limit] for key, value in data.fields.items()}, data.names[:limit])


# --- translation ------------------------------------------------------------------------------------------------
@torch.no_grad()
def translate_split(translator: Translator, sources: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """uint8 sources (N, C, H, W) -> uint8 outputs, in batches."""
    outputs = []
    for start in tqdm(range(0, len(sources), batch_size), desc="translating", leave=False, unit="batch"):
        outputs.append(signed_to_uint8(translator(uint8_to_signed(sources[start : start + batch_size]))).cpu())
    return torch.cat(outputs)


def model_translator(model: GenerativeModel, seed: int = 0, **options) -> Translator:
    """Translate with a fixed seed per call order, so stochastic models give reproducible scores."""
    calls = iter(range(10**9))

    def translate(source: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed(seed, next(calls)))
        return model.translate_batch(source.to(model.device), generator=generator, **options)

    return translate


def evaluate_translation(model: GenerativeModel, task: Task, data: ImageSplit, options: EvalOptions) -> dict:
    sources, targets = data.fields["source"], data.fields["target"]
    outputs = translate_split(model_translator(model, options.seed), sources, options.batch_size)
    metrics = score_translations(outputs, targets, sources, task, options)
    if options.diversity_inputs:
        count = min(options.diversity_inputs, len(sources))
        stochastic = getattr(model, "stochastic_options", {})
        runs = [
            translate_split(
                model_translator(model, options.seed + k, **stochastic), sources[:count], options.batch_size
            )
            for k in range(3)
        ]
        metrics["diversity"] = suite.diversity_score(runs)
    result = {"count": len(data), "metrics": metrics}
    if options.baselines:
        cheap = EvalOptions(**{**options.__dict__, "features": (), "lpips": False})
        result["baselines"] = {
            name: score_translations(
                translate_split(baseline, sources, options.batch_size), targets, sources, task, cheap
            )
            for name, baseline in (
                ("mean_train_target", mean_target_baseline(task)),
                ("nearest_neighbour", nearest_neighbour_baseline(task)),
            )
        }
    return result


def score_translations(
    outputs: torch.Tensor, targets: torch.Tensor, sources: torch.Tensor, task: Task, options: EvalOptions
) -> dict[str, Any]:
    """Paired metrics, then each feature space's distribution metrics and, for label maps, the FCN-score."""
    loader = lpips_loader() if options.lpips else None
    metrics: dict[str, Any] = suite.paired_scores(
        outputs,
        targets,
        ("psnr", "ssim", "ms_ssim", "lpips") if options.lpips else ("psnr", "ssim", "ms_ssim"),
        lpips_loader=loader,
    )
    for space in options.features:
        extractor, network = feature_network(space, task, options)
        if extractor is None:
            metrics[space] = {"skipped": network["skipped"]}
            continue
        metrics[space] = suite.distribution_scores(outputs, targets, extractor, network, seed=options.seed)
        if space == "domain" and getattr(extractor, "kind", "") == "segmenter":
            metrics["fcn"] = suite.fcn_scores(extractor, outputs, sources)
            metrics["fcn_real"] = suite.fcn_scores(extractor, targets, sources)  # the ceiling: real photos
    return metrics


def lpips_loader():
    from genlab.metrics.perceptual import load_lpips

    return lambda: load_lpips("alex")


def feature_network(space: str, task: Task, options: EvalOptions):
    """(extractor, description) for `domain` or `inception`; (None, {"skipped": why}) when unavailable."""
    from genlab.metrics.features import FeatureWeightsMissing, load_inception

    if space == "inception":
        try:
            return load_inception(options.inception_weights), {"network": "inception-v3-fid"}
        except FeatureWeightsMissing as missing:
            return None, {"skipped": str(missing)}
    if space == "domain" or space.startswith("domain:"):
        from genlab.judges.domain import RECIPES, domain_network

        name = space.split(":", 1)[1] if ":" in space else task.spec.name
        if name not in RECIPES:
            return None, {"skipped": f"no domain network for task {name!r} (available: {', '.join(RECIPES)})"}
        network = domain_network(name, task.spec.image_size, data_root=task.config.data_root)
        return network, network.provenance()
    raise GenlabError(f"unknown feature space {space!r} (valid: domain, domain:TASK, inception)")


def mean_target_baseline(task: Task) -> Translator:
    """Predict the mean training target for every input: the score any useful translator must beat."""
    mean = uint8_to_signed(task.split("train").fields["target"]).mean(dim=0, keepdim=True)  # (1, C, H, W)
    return lambda source: mean.expand(len(source), -1, -1, -1)


def nearest_neighbour_baseline(task: Task, chunk: int = 256) -> Translator:
    """Return the training target whose source is nearest (L2 on pixels) to the input source."""
    train = task.split("train")
    train_sources = uint8_to_signed(train.fields["source"]).flatten(1)  # (N, D)
    train_targets = uint8_to_signed(train.fields["target"])
    return lambda source: train_targets[nearest_index(source.cpu().flatten(1), train_sources, chunk)]


def nearest_index(queries: torch.Tensor, keys: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Index of the nearest key (L2) for each query, scanning the keys in chunks to bound memory."""
    best_distance = torch.full((len(queries),), math.inf)
    best_index = torch.zeros(len(queries), dtype=torch.long)
    for start in range(0, len(keys), chunk):
        value, index = torch.cdist(queries, keys[start : start + chunk]).min(dim=1)  # (Q,)
        better = value < best_distance
        best_distance = torch.where(better, value, best_distance)
        best_index = torch.where(better, index + start, best_index)
    return best_index


# --- generation -------------------------------------------------------------------------------------------------
def evaluate_generation(model: GenerativeModel, task: Task, data: ImageSplit, options: EvalOptions) -> dict:
    from genlab.sample import sample_images

    count = options.count or min(len(data), 1000)
    real = data.fields["image"][:count]
    conditional = bool(getattr(model, "conditional", False))
    labels = torch.arange(count) % task.spec.num_classes if conditional else None
    samples = signed_to_uint8(sample_images(model, count, labels, options.seed, options.batch_size)).cpu()
    metrics: dict[str, Any] = {}
    for space in options.features:
        extractor, network = feature_network(space, task, options)
        if extractor is None:
            metrics[space] = {"skipped": network["skipped"]}
            continue
        fake_features = suite.features_of(extractor, samples)
        metrics[space] = suite.distribution_scores(fake_features, real, extractor, network, seed=options.seed)
        if conditional and space == "domain":
            predicted = fake_features["probs"].argmax(dim=1)
            metrics["class_accuracy"] = {
                "value": float((predicted == labels).double().mean()),
                "count": count,
                "classifier": network,
                "chance": 1.0 / task.spec.num_classes,
            }
    return {"count": count, "conditional": conditional, "metrics": metrics}
