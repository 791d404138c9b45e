"""Top-k, per-class and Many/Medium/Few metrics."""

import numpy as np

from ltpll.metrics import (
    evaluate_logits,
    frequency_groups,
    prior_distance,
    top_k_accuracy,
)


def test_ten_classes_split_three_four_three_by_frequency():
    counts = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])[::-1]  # shuffled order
    groups = frequency_groups(counts)
    assert sorted(groups["many"].tolist()) == [7, 8, 9]
    assert sorted(groups["medium"].tolist()) == [3, 4, 5, 6]
    assert sorted(groups["few"].tolist()) == [0, 1, 2]


def test_hundred_classes_use_cifar100_lt_thresholds():
    counts = np.array([500] * 30 + [100] * 10 + [20] * 10 + [19] * 50)
    groups = frequency_groups(counts)
    assert len(groups["many"]) == 30      # > 100
    assert len(groups["medium"]) == 20    # 20..100
    assert len(groups["few"]) == 50       # < 20


def test_top_k_and_per_class():
    logits = np.array([[3, 2, 1], [1, 3, 2], [1, 2, 3], [3, 2, 1]], dtype=float)
    labels = np.array([0, 2, 2, 1])
    assert top_k_accuracy(logits, labels, 1) == 0.5
    assert top_k_accuracy(logits, labels, 2) == 1.0
    result = evaluate_logits(logits, labels, train_counts=[100, 10, 1])
    assert result["per_class"] == [1.0, 0.0, 0.5]
    assert result["top1"] == 0.5 and result["num_samples"] == 4


def test_prior_distance():
    assert np.isclose(prior_distance([0.5, 0.5], [3, 1]), np.sqrt(2) * 0.25)
