"""`genlab score`: the metric suite on two folders of images (paired by file name, or as two sets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genlab.data.imageio import list_images, load_image
from genlab.metrics import suite
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
) -> dict[str, Any]:
    """Score `pred_dir` against `ref_dir`; every value carries its metric, feature network and sample count."""
    unknown = [name for name in metrics if name not in ALL_METRICS]
    if unknown:
        raise GenlabError(f"unknown metric {unknown[0]!r} (valid: {', '.join(ALL_METRICS)})")
    predicted, reference = _load_folder(pred_dir), _load_folder(ref_dir)
    results: dict[str, Any] = {"pred_dir": str(pred_dir), "ref_dir": str(ref_dir), "metrics": {}}
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
        results["paired_count"] = len(common)
        results["unmatched"] = len(set(predicted) ^ set(reference))
        outputs = torch.stack([predicted[name] for name in common])
        targets = torch.stack([reference[name] for name in common])
        from genlab.evaluate import lpips_loader

        results["metrics"].update(suite.paired_scores(outputs, targets, tuple(paired), lpips_loader=lpips_loader()))
    distribution = tuple(name for name in metrics if name in suite.DISTRIBUTION_METRICS)
    if distribution:
        fake, real = _stack(predicted, pred_dir), _stack(reference, ref_dir)
        extractor, network = _feature_network(features, inception_weights, size or fake.shape[-1])
        if extractor is None:
            results["metrics"][features] = {"skipped": network["skipped"]}
        else:
            results["metrics"][features] = suite.distribution_scores(fake, real, extractor, network, distribution)
    return results


def _feature_network(features: str, inception_weights: str | None, size: int):
    from genlab.metrics.features import FeatureWeightsMissing, load_inception

    if features == "inception":
        try:
            return load_inception(inception_weights), {"network": "inception-v3-fid"}
        except FeatureWeightsMissing as missing:
            return None, {"skipped": str(missing)}
    if features.startswith("domain:"):
        from genlab.judges.domain import domain_network

        network = domain_network(features.split(":", 1)[1], size)
        return network, network.provenance()
    raise GenlabError(f"--features: unknown feature space {features!r} (valid: inception, domain:TASK)")
