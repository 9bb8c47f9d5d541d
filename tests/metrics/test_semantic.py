import numpy as np
import pytest
import torch

from genlab.metrics.semantic import classification_accuracy, confusion_matrix, segmentation_scores


def reference_scores(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> dict[str, float]:
    """Straight from the definitions, class by class, with NumPy."""
    accuracies, ious = [], []
    for c in range(num_classes):
        in_truth = truth == c
        if not in_truth.any():
            continue
        in_prediction = predicted == c
        accuracies.append((in_truth & in_prediction).sum() / in_truth.sum())
        ious.append((in_truth & in_prediction).sum() / (in_truth | in_prediction).sum())
    return {
        "pixel_accuracy": (predicted == truth).mean(),
        "class_accuracy": np.mean(accuracies),
        "mean_iou": np.mean(ious),
    }


def test_fcn_scores_match_the_definitions():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=(3, 16, 16))  # class 5 never present in truth
    predicted = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 6, size=truth.shape))
    scores = segmentation_scores(confusion_matrix(torch.from_numpy(predicted), torch.from_numpy(truth), 6))
    expected = reference_scores(predicted, truth, 6)
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-12), key


def test_perfect_and_hand_made_cases():
    truth = torch.tensor([0, 0, 1, 1])
    perfect = segmentation_scores(confusion_matrix(truth, truth, 3))
    assert perfect == {"pixel_accuracy": 1.0, "class_accuracy": 1.0, "mean_iou": 1.0}
    scores = segmentation_scores(confusion_matrix(torch.tensor([0, 1, 1, 1]), truth, 3))
    assert scores["pixel_accuracy"] == 0.75
    assert scores["class_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert scores["mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_classification_accuracy_from_logits_or_labels():
    logits = torch.tensor([[2.0, 0.1], [0.0, 1.0], [3.0, -1.0]])
    assert classification_accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert classification_accuracy(torch.tensor([1, 1]), torch.tensor([1, 0])) == 0.5


def test_worst_class_accuracy_names_the_weakest_class_asked_for():
    from genlab.metrics.suite import class_accuracy, worst_class_accuracy
    from genlab.results import FeatureNetwork

    network = FeatureNetwork("judge")
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = torch.tensor([0, 0, 0, 1, 1, 0, 2, 2, 2, 2])  # class 0: 3/4, class 1: 1/2, class 2: 4/4
    worst = worst_class_accuracy(predicted, labels, network, ("zero", "one", "two", "three"))
    assert worst.value == 0.5 and worst.count == 2
    assert worst.notes == ("class 'one' (of 3 asked for)", "per class: zero 75%, one 50%, two 100%")
    assert worst.higher_is_better and worst.value <= class_accuracy(predicted, labels, network, 4).value
    # class 3 is never asked for, so it cannot be the worst; without names the index is shown
    assert worst_class_accuracy(predicted, labels, network).notes[0] == "class '1' (of 3 asked for)"
