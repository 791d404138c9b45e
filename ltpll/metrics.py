"""Evaluation metrics on debiased outputs: top-k, per-class, Many/Medium/Few, prior distance.

Everything here is numpy on the host, run once per evaluation, never in the training step.
"""

import numpy as np

from ltpll.data.files import is_streamed

# CIFAR-100-LT convention: Many > 100 training images, Few < 20, Medium in between.
MANY_THRESHOLD = 100
FEW_THRESHOLD = 20
# With fewer classes than this, thresholds say little (CIFAR-10-LT has 5000..50 images per
# class), so classes are split by rank instead: the most frequent 30%, the middle, the least 30%.
MIN_CLASSES_FOR_THRESHOLDS = 20


def frequency_groups(train_counts):
    """Class indices of the Many, Medium and Few groups by training-class count.

    With 10 classes this gives the 3 most frequent / middle 4 / 3 least frequent classes.

    Returns:
        ``{"many": array, "medium": array, "few": array}`` of class ids.
    """
    counts = np.asarray(train_counts)
    num_classes = len(counts)
    if num_classes >= MIN_CLASSES_FOR_THRESHOLDS:
        return {
            "many": np.flatnonzero(counts > MANY_THRESHOLD),
            "medium": np.flatnonzero((counts >= FEW_THRESHOLD) & (counts <= MANY_THRESHOLD)),
            "few": np.flatnonzero(counts < FEW_THRESHOLD),
        }
    order = np.argsort(-counts, kind="stable")
    edge = int(round(0.3 * num_classes))
    return {
        "many": np.sort(order[:edge]),
        "medium": np.sort(order[edge:num_classes - edge]),
        "few": np.sort(order[num_classes - edge:]),
    }


def top_k_accuracy(logits, labels, k):
    """Fraction of samples whose label is among the k highest scores."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def per_class_accuracy(logits, labels, num_classes):
    """Top-1 accuracy of each class; NaN for a class absent from ``labels``."""
    predictions = np.argmax(logits, axis=1)
    accuracy = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mask = labels == c
        if mask.any():
            accuracy[c] = np.mean(predictions[mask] == c)
    return accuracy


def evaluate_logits(logits, labels, train_counts):
    """All evaluation metrics of one set of (debiased) logits.

    Args:
        logits: ``[N, C]`` scores.
        labels: ``[N]`` true labels.
        train_counts: ``[C]`` training images per class (true labels), for the groups.

    Returns:
        A JSON-ready dict: ``top1``, ``top5``, ``per_class`` (list, None where a class has no
        test image), ``many``/``medium``/``few`` (mean per-class accuracy of each group, None
        for an empty group), ``groups`` (class ids per group), ``num_samples``.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    num_classes = logits.shape[1]
    per_class = per_class_accuracy(logits, labels, num_classes)
    groups = frequency_groups(train_counts)
    result = {
        "top1": top_k_accuracy(logits, labels, 1),
        "top5": top_k_accuracy(logits, labels, 5),
        "per_class": [None if np.isnan(a) else float(a) for a in per_class],
        "groups": {name: ids.tolist() for name, ids in groups.items()},
        "num_samples": len(labels),
    }
    for name, ids in groups.items():
        values = per_class[ids] if len(ids) else np.array([])
        values = values[~np.isnan(values)]
        result[name] = float(values.mean()) if len(values) else None
    return result


def prior_distance(estimated_prior, train_counts):
    """L2 distance between an estimated class prior and the true training distribution."""
    counts = np.asarray(train_counts, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(estimated_prior) - counts / counts.sum()))


EVAL_BATCH_SIZE = 512


def predict_logits(model, images, batch_size=EVAL_BATCH_SIZE):
    """Debiased logits of a uint8 image array or of images on disk, batch by batch."""
    # Imports Keras, which the rest of this module does not need.
    from ltpll.data.pipeline import predict_batches, unreadable_files_as_errors

    if is_streamed(images):
        with unreadable_files_as_errors(images, "the images to predict"):
            return np.asarray(model.predict(predict_batches(images, batch_size), verbose=0))
    return np.asarray(model.predict(images, batch_size=batch_size, verbose=0))
