"""The metric suite on image tensors: paired, distribution, semantic and diversity scores.

Every entry is a dict {"value", "count", ...}; an entry that cannot be computed says why in "skipped" rather
than disappearing, so a report always shows what was and was not measured. Images are uint8 (N, C, H, W).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from genlab.metrics.distribution import fid, inception_score, kid, precision_recall
from genlab.metrics.features import FeatureWeightsMissing
from genlab.metrics.pixel import MS_SSIM_MIN_SIZE, ms_ssim, psnr, ssim
from genlab.utils import GenlabError, uint8_to_signed

PAIRED_METRICS = ("psnr", "ssim", "ms_ssim", "lpips")
DISTRIBUTION_METRICS = ("fid", "kid", "is", "precision", "recall")
Extractor = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def summary(values: torch.Tensor, **extra: Any) -> dict[str, Any]:
    """Mean, std and count of per-image values; infinite PSNRs (identical images) are counted and left out."""
    values = values.double().cpu()
    finite = values[torch.isfinite(values)]
    entry = {
        "value": float(finite.mean()) if len(finite) else float("inf"),
        "std": float(finite.std()) if len(finite) > 1 else 0.0,
        "count": len(values),
    }
    if len(finite) < len(values):
        entry["identical_images"] = len(values) - len(finite)
    entry.update(extra)
    return entry


def check_same_shape(outputs: torch.Tensor, targets: torch.Tensor, what: str = "images") -> None:
    if outputs.shape != targets.shape:
        raise GenlabError(
            f"paired metrics need {what} of one shape: got {tuple(outputs.shape)} and {tuple(targets.shape)}"
        )


def paired_scores(
    outputs: torch.Tensor,
    targets: torch.Tensor,
    metrics: tuple[str, ...] = PAIRED_METRICS,
    lpips_loader: Callable[[], Any] | None = None,
    batch_size: int = 32,
) -> dict[str, dict[str, Any]]:
    """PSNR, SSIM, MS-SSIM (data range [0, 1]) and LPIPS between outputs[i] and targets[i]."""
    check_same_shape(outputs, targets)
    results: dict[str, dict[str, Any]] = {}
    unit_out, unit_target = outputs.double() / 255.0, targets.double() / 255.0
    if "psnr" in metrics:
        results["psnr"] = summary(psnr(unit_out, unit_target, 1.0, reduction="none"), unit="dB, data range [0, 1]")
    if "ssim" in metrics:
        results["ssim"] = summary(ssim(unit_out, unit_target, 1.0, reduction="none"), note="Gaussian 11, sigma 1.5")
    if "ms_ssim" in metrics:
        if min(outputs.shape[-2:]) < MS_SSIM_MIN_SIZE:
            results["ms_ssim"] = {
                "skipped": f"images are {outputs.shape[-1]} px; MS-SSIM's 5 scales need {MS_SSIM_MIN_SIZE} px or more"
            }
        else:
            results["ms_ssim"] = summary(ms_ssim(unit_out, unit_target, 1.0, reduction="none"))
    if "lpips" in metrics:
        results["lpips"] = _lpips(outputs, targets, lpips_loader, batch_size)
    return results


def _lpips(outputs, targets, loader, batch_size) -> dict[str, Any]:
    if loader is None:
        return {"skipped": "no LPIPS network given"}
    try:
        network = loader()
    except FeatureWeightsMissing as missing:
        return {"skipped": str(missing)}
    device = next(network.parameters()).device
    images_a, images_b = _three_channels(outputs), _three_channels(targets)
    if min(images_a.shape[-2:]) < 32:
        return {"skipped": f"images are {images_a.shape[-1]} px; LPIPS needs 32 px or more"}
    values = []
    with torch.no_grad():
        for start in range(0, len(outputs), batch_size):
            a = uint8_to_signed(images_a[start : start + batch_size]).to(device)
            b = uint8_to_signed(images_b[start : start + batch_size]).to(device)
            values.append(network(a, b).cpu())
    return summary(torch.cat(values), network=f"lpips-{getattr(network, 'net_name', 'alex')}")


def _three_channels(images: torch.Tensor) -> torch.Tensor:
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


def features_of(extractor: Extractor, images: torch.Tensor, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Run a feature extractor over uint8 images in batches; returns concatenated `features` (and `probs`)."""
    collected: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            output = extractor(uint8_to_signed(images[start : start + batch_size]))
            for key in ("features", "probs"):
                if key in output:
                    collected.setdefault(key, []).append(output[key].detach().double().cpu())
    return {key: torch.cat(values) for key, values in collected.items()}


def distribution_scores(
    fake: torch.Tensor | dict[str, torch.Tensor],
    real: torch.Tensor | dict[str, torch.Tensor],
    extractor: Extractor,
    network: dict[str, Any],
    metrics: tuple[str, ...] = DISTRIBUTION_METRICS,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """FID, KID, IS and precision/recall of generated vs real images in one feature space.

    `fake`/`real` are uint8 images or already-extracted features (from `features_of`). `network` describes the
    feature network and is recorded in every entry. KID's subset size shrinks to the smaller set (and says so).
    """
    fake_features = fake if isinstance(fake, dict) else features_of(extractor, fake)
    real_features = real if isinstance(real, dict) else features_of(extractor, real)
    counts = {"count": len(fake_features["features"]), "reference_count": len(real_features["features"])}
    results: dict[str, dict[str, Any]] = {}
    common = {**counts, "features": network}
    if "fid" in metrics:
        results["fid"] = {"value": float(fid(fake_features["features"], real_features["features"])), **common}
    if "kid" in metrics:
        size = min(kid_subset_size, counts["count"], counts["reference_count"])
        if size < 2:
            results["kid"] = {"skipped": "KID needs at least 2 images in each set"}
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mean, std = kid(
                    fake_features["features"],
                    real_features["features"],
                    subsets=100,
                    subset_size=size,
                    generator=torch.Generator().manual_seed(seed),
                )
            results["kid"] = {"value": float(mean), "std": float(std), "subset_size": size, **common}
    if "is" in metrics:
        if "probs" not in fake_features:
            results["is"] = {"skipped": f"{network.get('network')} gives no class probabilities"}
        else:
            splits = max(1, min(10, counts["count"] // 50))
            mean, std = inception_score(fake_features["probs"], splits=splits)
            results["is"] = {"value": float(mean), "std": float(std), "splits": splits, **common}
    if "precision" in metrics or "recall" in metrics:
        k = 3
        if min(counts.values()) <= k:
            results["precision"] = results["recall"] = {"skipped": f"precision/recall need more than {k} images"}
        else:
            precision, recall = precision_recall(real_features["features"], fake_features["features"], k=k)
            results["precision"] = {"value": float(precision), "k": k, **common}
            results["recall"] = {"value": float(recall), "k": k, **common}
    return results


def fcn_scores(segmenter, photos: torch.Tensor, label_maps: torch.Tensor, batch_size: int = 64) -> dict[str, Any]:
    """Per-pixel accuracy, class accuracy and mIoU of the segmenter's labels of `photos` vs the true label maps."""
    from genlab.data.facades_synth import label_map_to_classes
    from genlab.metrics.semantic import confusion_matrix, segmentation_scores

    num_classes = segmenter.net.classify.out_channels
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for start in range(0, len(photos), batch_size):
        predicted = segmenter.segment(uint8_to_signed(photos[start : start + batch_size])).cpu()
        truth = label_map_to_classes(label_maps[start : start + batch_size])
        if predicted.shape[-2:] != truth.shape[-2:]:
            predicted = torch.nn.functional.interpolate(
                predicted[:, None].float(), size=truth.shape[-2:], mode="nearest"
            )[:, 0].long()
        confusion += confusion_matrix(predicted, truth, num_classes)
    return {**segmentation_scores(confusion), "count": len(photos), "segmenter": segmenter.provenance()}


def diversity_score(outputs: list[torch.Tensor]) -> dict[str, Any]:
    """Mean pairwise L1 distance (on [0, 1]) between several outputs for the same inputs: 0 = deterministic.

    `outputs` holds K >= 2 uint8 batches (N, C, H, W), output k of input i at outputs[k][i].
    """
    if len(outputs) < 2:
        raise GenlabError("diversity needs at least two outputs per input")
    distances = [
        (outputs[a].double() - outputs[b].double()).abs().mean(dim=(1, 2, 3)) / 255.0
        for a in range(len(outputs))
        for b in range(a + 1, len(outputs))
    ]
    per_input = torch.stack(distances).mean(dim=0)  # (N,)
    return summary(per_input, samples_per_input=len(outputs), distance="mean absolute difference on [0, 1]")
