"""The metric suite on image tensors: paired, distribution, semantic and diversity scores as typed `Score`s.

A metric that cannot be computed is a `Score` with `skipped` set (and the reason) rather than missing, so a
report always shows what was and was not measured; what may mislead (FID on fewer images than feature
dimensions, a shrunk KID subset, a negative KID) carries a note. Images are uint8 (N, C, H, W).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from genlab.metrics.distribution import fid, inception_score, kid, precision_recall
from genlab.metrics.features import FeatureWeightsMissing
from genlab.metrics.pixel import MS_SSIM_MIN_SIZE, ms_ssim, psnr, ssim
from genlab.metrics.semantic import confusion_matrix, segmentation_scores
from genlab.results import FeatureNetwork, Score, higher_is_better, skipped
from genlab.utils import GenlabError, uint8_to_signed

PAIRED_METRICS = ("psnr", "ssim", "ms_ssim", "lpips")
DISTRIBUTION_METRICS = ("fid", "kid", "is", "precision", "recall")
Extractor = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def summary(metric: str, values: torch.Tensor, network: FeatureNetwork | None = None, unit: str = "") -> Score:
    """Mean and std of per-image values (kept in `per_item` for bootstraps); infinite PSNRs (identical
    images) are counted in a note and left out of the mean."""
    values = values.double().cpu()
    finite = values[torch.isfinite(values)]
    notes = ()
    if len(finite) < len(values):
        notes = (f"{len(values) - len(finite)} identical image pair(s) (infinite PSNR) left out of the mean",)
    return Score(
        metric,
        value=float(finite.mean()) if len(finite) else math.inf,
        std=float(finite.std()) if len(finite) > 1 else 0.0,
        count=len(values),
        higher_is_better=higher_is_better(metric),
        network=network,
        unit=unit,
        notes=notes,
        per_item=tuple(float(v) for v in finite),
    )


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
    prefix: str = "",
) -> list[Score]:
    """PSNR, SSIM, MS-SSIM (data range [0, 1]) and LPIPS between outputs[i] and targets[i]."""
    check_same_shape(outputs, targets)
    results: list[Score] = []
    unit_out, unit_target = outputs.double() / 255.0, targets.double() / 255.0
    if "psnr" in metrics:
        values = psnr(unit_out, unit_target, 1.0, reduction="none")
        results.append(summary(prefix + "psnr", values, unit="dB"))
    if "ssim" in metrics:
        results.append(summary(prefix + "ssim", ssim(unit_out, unit_target, 1.0, reduction="none")))
    if "ms_ssim" in metrics:
        if min(outputs.shape[-2:]) < MS_SSIM_MIN_SIZE:
            size = outputs.shape[-1]
            reason = f"images are {size} px; MS-SSIM's 5 scales need {MS_SSIM_MIN_SIZE} px or more"
            results.append(skipped(prefix + "ms_ssim", reason))
        else:
            results.append(summary(prefix + "ms_ssim", ms_ssim(unit_out, unit_target, 1.0, reduction="none")))
    if "lpips" in metrics:
        results.append(_lpips(prefix + "lpips", outputs, targets, lpips_loader, batch_size))
    return results


def _lpips(metric, outputs, targets, loader, batch_size) -> Score:
    if loader is None:
        return skipped(metric, "no LPIPS network given")
    images_a, images_b = _three_channels(outputs), _three_channels(targets)
    if min(images_a.shape[-2:]) < 32:
        return skipped(metric, f"images are {images_a.shape[-1]} px; LPIPS needs 32 px or more")
    try:
        network = loader()
    except FeatureWeightsMissing as missing:
        return skipped(metric, str(missing))
    device = next(network.parameters()).device
    values = []
    with torch.no_grad():
        for start in range(0, len(outputs), batch_size):
            a = uint8_to_signed(images_a[start : start + batch_size]).to(device)
            b = uint8_to_signed(images_b[start : start + batch_size]).to(device)
            values.append(network(a, b).cpu())
    return summary(metric, torch.cat(values), FeatureNetwork(f"lpips-{getattr(network, 'net_name', 'alex')}"))


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
    network: FeatureNetwork,
    metrics: tuple[str, ...] = DISTRIBUTION_METRICS,
    kid_subset_size: int = 1000,
    seed: int = 0,
    space: str = "domain",
) -> list[Score]:
    """FID, KID, IS and precision/recall of generated vs real images in one feature space, named `space.metric`.

    `fake`/`real` are uint8 images or already-extracted features (from `features_of`). KID's subset size
    shrinks to the smaller set, and the score says so.
    """
    fake_features = fake if isinstance(fake, dict) else features_of(extractor, fake)
    real_features = real if isinstance(real, dict) else features_of(extractor, real)
    count, reference_count = len(fake_features["features"]), len(real_features["features"])
    dims = fake_features["features"].shape[1]

    def score(name: str, value: float, std: float | None = None, notes: tuple[str, ...] = ()) -> Score:
        metric = f"{space}.{name}"
        std = None if std is None else float(std)
        return Score(metric, float(value), std, None, count, higher_is_better(metric), network, notes=notes)

    results: list[Score] = []
    if "fid" in metrics:
        notes = ()
        if min(count, reference_count) < dims:
            notes = (
                f"FID on {min(count, reference_count)} images, fewer than the {dims} feature dimensions: "
                "biased upwards; compare only at equal sample counts",
            )
        results.append(score("fid", fid(fake_features["features"], real_features["features"]), notes=notes))
    if "kid" in metrics:
        size = min(kid_subset_size, count, reference_count)
        if size < 2:
            results.append(skipped(f"{space}.kid", "KID needs at least 2 images in each set"))
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
            notes = []
            if size < kid_subset_size:
                notes.append(f"KID subset size shrunk to {size} (fewer images than {kid_subset_size})")
            if mean < 0:
                notes.append("KID below zero: the sets are indistinguishable at this sample count")
            results.append(score("kid", mean, std, tuple(notes)))
    if "is" in metrics:
        if "probs" not in fake_features:
            results.append(skipped(f"{space}.is", f"{network.name} gives no class probabilities"))
        else:
            splits = max(1, min(10, count // 50))
            mean, std = inception_score(fake_features["probs"], splits=splits)
            results.append(score("is", mean, std))
    if "precision" in metrics or "recall" in metrics:
        k = 3
        if min(count, reference_count) <= k:
            reason = f"precision/recall need more than {k} images"
            results += [skipped(f"{space}.precision", reason), skipped(f"{space}.recall", reason)]
        else:
            precision, recall = precision_recall(real_features["features"], fake_features["features"], k=k)
            results += [score("precision", precision), score("recall", recall)]
    return results


def fcn_scores(
    segmenter, network: FeatureNetwork, photos: torch.Tensor, label_maps: torch.Tensor, batch_size: int = 64
) -> list[Score]:
    """Per-pixel accuracy, class accuracy and mIoU of the segmenter's labels of `photos` vs the true label maps
    (the pix2pix paper's FCN-score), as `fcn.pixel_accuracy`, `fcn.class_accuracy`, `fcn.mean_iou`.

    `segmenter` is any object with `segment(photos in [-1, 1]) -> (B, H, W)` classes, `classes_of(uint8 label
    maps) -> (B, H, W)` (how its task's palette maps to classes) and `num_classes`.
    """
    num_classes = segmenter.num_classes
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for start in range(0, len(photos), batch_size):
        predicted = segmenter.segment(uint8_to_signed(photos[start : start + batch_size])).cpu()
        truth = segmenter.classes_of(label_maps[start : start + batch_size])
        if predicted.shape[-2:] != truth.shape[-2:]:
            predicted = torch.nn.functional.interpolate(
                predicted[:, None].float(), size=truth.shape[-2:], mode="nearest"
            )[:, 0].long()
        confusion += confusion_matrix(predicted, truth, num_classes)
    return [
        Score(f"fcn.{name}", float(value), count=len(photos), higher_is_better=True, network=network)
        for name, value in segmentation_scores(confusion).items()
    ]


def class_accuracy(predicted: torch.Tensor, labels: torch.Tensor, network: FeatureNetwork, classes: int) -> Score:
    """How often generated images are classified as the class they were asked for (chance: 1 / classes)."""
    correct = (predicted.cpu() == labels.cpu()).double()
    return Score(
        "class_accuracy",
        float(correct.mean()),
        count=len(labels),
        higher_is_better=True,
        network=network,
        notes=(f"chance {1 / classes:.1%}",),
        per_item=tuple(float(v) for v in correct),
    )


def worst_class_accuracy(
    predicted: torch.Tensor, labels: torch.Tensor, network: FeatureNetwork, class_names: Sequence[str] = ()
) -> Score:
    """The lowest class accuracy over the classes asked for: a model can score well on average while one class
    (Fashion-MNIST's shirt, say) is rarely drawn right. The notes name the class and list every class's."""
    predicted, labels = predicted.cpu(), labels.cpu()
    if len(labels) == 0:
        raise GenlabError("worst_class_accuracy: no labels")
    num_classes = max(len(class_names), int(labels.max()) + 1, int(predicted.max()) + 1)
    confusion = confusion_matrix(predicted, labels, num_classes).double()  # truth rows, predicted columns
    totals = confusion.sum(dim=1)
    classes = totals.nonzero().flatten()  # (K',) the classes asked for, ascending
    accuracies = confusion.diag()[classes] / totals[classes]
    names = [class_names[int(c)] if int(c) < len(class_names) else str(int(c)) for c in classes]
    worst = int(accuracies.argmin())
    listing = ", ".join(f"{name} {float(value):.0%}" for name, value in zip(names, accuracies, strict=True))
    return Score(
        "worst_class_accuracy",
        float(accuracies[worst]),
        count=int(totals[classes[worst]]),
        higher_is_better=True,
        network=network,
        notes=(f"class {names[worst]!r} (of {len(classes)} asked for)", f"per class: {listing}"),
    )


def diversity_score(outputs: list[torch.Tensor]) -> Score:
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
    return summary("diversity", per_input)
