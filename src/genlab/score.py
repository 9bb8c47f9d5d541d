"""`genlab score`: the metric suite on two folders of images (paired by file name, or as two sets)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from genlab.data.imageio import list_images, load_image
from genlab.evaluate import load_feature_network
from genlab.metrics import suite
from genlab.metrics.perceptual import load_lpips
from genlab.results import Score, skipped
from genlab.utils import GenlabError

ALL_METRICS = suite.PAIRED_METRICS + suite.DISTRIBUTION_METRICS


def _load_folder(folder: str | Path) -> dict[str, torch.Tensor]:
    files = list_images(folder)
    if not files:
        raise GenlabError(f"{folder}: no images (png, jpg, jpeg, bmp, webp) in this folder")
    return {path.name: load_image(path) for path in files}


def _stack(images: dict[str, torch.Tensor], folder: str | Path) -> torch.Tensor:
    """Stack a folder's images; they must share one shape (the first image's), else the odd file is named."""
    names = list(images)
    reference = images[names[0]].shape
    for name in names:
        if images[name].shape != reference:
            raise GenlabError(
                f"{Path(folder) / name}: shape {tuple(images[name].shape)} differs from "
                f"{names[0]}'s {tuple(reference)}; distribution metrics need one image size"
            )
    return torch.stack([images[name] for name in names])


def score_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    metrics: tuple[str, ...] = ALL_METRICS,
    features: str = "inception",
    inception_weights: str | None = None,
    size: int | None = None,
) -> list[Score]:
    """Score `pred_dir` against `ref_dir`; every score carries its metric, feature network and sample count."""
    unknown = [name for name in metrics if name not in ALL_METRICS]
    if unknown:
        raise GenlabError(f"unknown metric {unknown[0]!r} (valid: {', '.join(ALL_METRICS)})")
    predicted, reference = _load_folder(pred_dir), _load_folder(ref_dir)
    scores: list[Score] = []
    paired = [name for name in metrics if name in suite.PAIRED_METRICS]
    if paired:
        common = sorted(set(predicted) & set(reference))
        if not common:
            raise GenlabError(
                f"{pred_dir} and {ref_dir} share no file names, so paired metrics "
                f"({', '.join(paired)}) cannot match images; leave them out with --metrics"
            )
        for name in common:
            if predicted[name].shape != reference[name].shape:
                raise GenlabError(
                    f"{Path(pred_dir) / name}: shape {tuple(predicted[name].shape)} differs from "
                    f"{Path(ref_dir) / name}'s {tuple(reference[name].shape)}"
                )
        unmatched = len(set(predicted) ^ set(reference))
        outputs = torch.stack([predicted[name] for name in common])
        targets = torch.stack([reference[name] for name in common])
        paired_scores = suite.paired_scores(outputs, targets, tuple(paired), lpips_loader=load_lpips)
        if unmatched:
            note = f"{unmatched} file(s) without a same-named partner left out"
            paired_scores = [replace(score, notes=(*score.notes, note)) for score in paired_scores]
        scores += paired_scores
    distribution = tuple(name for name in metrics if name in suite.DISTRIBUTION_METRICS)
    if distribution:
        fake, real = _stack(predicted, pred_dir), _stack(reference, ref_dir)
        space = features.split(":", 1)[0]
        extractor, network = _feature_network(features, inception_weights, size or fake.shape[-1])
        if extractor is None:
            scores.append(skipped(f"{space}.fid", network))
        else:
            scores += suite.distribution_scores(fake, real, extractor, network, distribution, space=space)
    return scores


def _feature_network(features: str, inception_weights: str | None, size: int):
    if features == "inception" or features.startswith("domain:"):
        return load_feature_network(features.split(":", 1)[-1], size, inception_weights)
    raise GenlabError(f"--features: unknown feature space {features!r} (valid: inception, domain:TASK)")
