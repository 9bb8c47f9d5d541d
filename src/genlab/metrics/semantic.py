"""Semantic scores: the pix2pix FCN-score (pixel accuracy, mean class accuracy, mIoU) and class accuracy."""

from __future__ import annotations

import torch


def confusion_matrix(predicted: torch.Tensor, truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts (num_classes, num_classes) of truth (rows) vs predicted (columns) over all pixels or items."""
    predicted, truth = predicted.flatten().long(), truth.flatten().long()
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and truth {tuple(truth.shape)} differ in size")
    index = truth * num_classes + predicted
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, float]:
    """FCN-score from a confusion matrix (Long et al. 2015, as used by pix2pix table 2).

    per-pixel accuracy = sum_i n_ii / sum_ij n_ij; mean class accuracy = mean_i n_ii / t_i and
    mIoU = mean_i n_ii / (t_i + sum_j n_ji - n_ii), both over the classes present in the ground truth.
    """
    confusion = confusion.double()
    diagonal = confusion.diag()
    truth_totals = confusion.sum(dim=1)  # t_i
    predicted_totals = confusion.sum(dim=0)
    present = truth_totals > 0
    class_accuracy = diagonal[present] / truth_totals[present]
    iou = diagonal[present] / (truth_totals + predicted_totals - diagonal)[present]
    return {
        "pixel_accuracy": float(diagonal.sum() / confusion.sum()),
        "class_accuracy": float(class_accuracy.mean()),
        "mean_iou": float(iou.mean()),
    }


def classification_accuracy(logits_or_labels: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of items whose predicted class (argmax of logits, or given labels) equals `truth`."""
    predicted = logits_or_labels.argmax(dim=1) if logits_or_labels.dim() == 2 else logits_or_labels
    return float((predicted.cpu() == truth.cpu()).double().mean())
