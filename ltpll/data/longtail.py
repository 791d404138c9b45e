"""Long-tailed subsampling: how many images each class keeps, and which ones.

LT-PLL benchmarks (CIFAR-10-LT, CIFAR-100-LT, CIFAR-100-LT-NU) are made from balanced datasets
by keeping ``n_c`` images of class ``c``. The counts follow the formula used by LDAM, RECORDS and
most long-tail papers, so that our CIFAR-10-LT with ``rho=100`` has the published
``5000, 2997, ..., 50`` images per class.

Everything here is plain numpy and seeded: the same seed always keeps the same images.
"""

from __future__ import annotations

import numpy as np

from ltpll.errors import LTPLLError

PROFILES = ("exp", "step")


def class_counts(
    n_max: int, num_classes: int, imbalance_ratio: float, profile: str = "exp"
) -> np.ndarray:
    """Number of images to keep per class, head class first.

    Args:
        n_max: images of the largest (first) class.
        num_classes: number of classes ``C``.
        imbalance_ratio: ``rho = n_max / n_min``; 1 means balanced.
        profile: ``"exp"``: ``n_c = int(n_max * rho ** (-c / (C - 1)))``, an exponential decay
            from ``n_max`` down to ``n_max / rho``. ``"step"``: the first ``C // 2`` classes keep
            ``n_max``, the others ``int(n_max / rho)`` (as in LDAM's step imbalance).

    Returns:
        int64 array of length ``num_classes``.

    Raises:
        LTPLLError: ``rho < 1``, ``n_max < 1``, ``num_classes < 1`` or an unknown profile.

    Example:
        >>> class_counts(5000, 10, 100).tolist()
        [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    """
    if profile not in PROFILES:
        raise LTPLLError(
            f"unknown imbalance profile {profile!r}; expected one of {', '.join(PROFILES)}"
        )
    if not n_max >= 1:
        raise LTPLLError(f"the largest class must keep at least 1 image; got n_max={n_max}")
    if not num_classes >= 1:
        raise LTPLLError(f"need at least one class; got num_classes={num_classes}")
    if not (np.isfinite(imbalance_ratio) and imbalance_ratio >= 1):
        raise LTPLLError(
            f"imbalance ratio must be a number >= 1 (n_max / n_min); got {imbalance_ratio}"
        )
    if profile == "exp":
        return _exp_counts(n_max, num_classes, imbalance_ratio)
    return _step_counts(n_max, num_classes, imbalance_ratio)


def _exp_counts(n_max: int, num_classes: int, rho: float) -> np.ndarray:
    if num_classes == 1:
        return np.array([int(n_max)], dtype=np.int64)
    last = num_classes - 1
    counts = [int(n_max * rho ** (-c / last)) for c in range(num_classes)]
    return np.array(counts, dtype=np.int64)


def _step_counts(n_max: int, num_classes: int, rho: float) -> np.ndarray:
    head = num_classes // 2
    counts = [int(n_max)] * head + [int(n_max / rho)] * (num_classes - head)
    return np.array(counts, dtype=np.int64)


def shuffled_class_order(num_classes: int, seed: int) -> np.ndarray:
    """A seeded random permutation of the class ids.

    CIFAR-100-LT-NU gives the long-tailed counts to classes in a random order instead of by class
    id, so head classes are not simply the alphabetically first ones. Pass the result as
    ``class_order`` to :func:`longtail_indices`.
    """
    if num_classes < 1:
        raise LTPLLError(f"need at least one class; got num_classes={num_classes}")
    return np.random.default_rng(seed).permutation(num_classes).astype(np.int64)


def longtail_indices(
    labels: np.ndarray,
    counts: np.ndarray,
    seed: int,
    class_order: np.ndarray | None = None,
    *,
    class_names: list[str] | None = None,
) -> np.ndarray:
    """Indices of the images a long-tailed subsample keeps.

    Each class draws its own seeded shuffle of its images (seeded by ``(seed, class)``) and keeps
    the first ``n``. So a class's selection does not depend on the other classes' counts, and with
    the same seed a smaller count keeps a subset of what a larger one keeps.

    Args:
        labels: int array [N] of class ids.
        counts: images to keep; ``counts[k]`` goes to class ``class_order[k]``.
        seed: random seed.
        class_order: a permutation of ``range(len(counts))``; None means class id order.
        class_names: optional names, only used to word error messages.

    Returns:
        int64 array of the kept indices, sorted ascending (so the subsample keeps the source order).

    Raises:
        LTPLLError: a label outside the classes counted, a bad ``class_order``, or a class with
            fewer images than asked for (the message names the class).
    """
    labels = np.asarray(labels)
    counts = np.asarray(counts, dtype=np.int64)
    num_classes = len(counts)
    order = _check_class_order(class_order, num_classes)
    _check_labels(labels, num_classes)
    if (counts < 0).any():
        raise LTPLLError(f"class counts must be >= 0; got {counts.tolist()}")

    kept = []
    for position, cls in enumerate(order):
        members = np.flatnonzero(labels == cls)
        wanted = int(counts[position])
        if len(members) < wanted:
            name = _class_label(int(cls), class_names)
            raise LTPLLError(
                f"{name} has {len(members)} images but the long-tail profile asks for {wanted}; "
                "lower n_max or the imbalance ratio"
            )
        rng = np.random.default_rng([seed, int(cls)])
        kept.append(rng.permutation(members)[:wanted])
    return np.sort(np.concatenate(kept)).astype(np.int64)


def _check_class_order(class_order, num_classes: int) -> np.ndarray:
    if class_order is None:
        return np.arange(num_classes)
    order = np.asarray(class_order)
    if order.shape != (num_classes,) or not np.array_equal(np.sort(order), np.arange(num_classes)):
        raise LTPLLError(
            f"class_order must be a permutation of 0..{num_classes - 1}; got {order.tolist()}"
        )
    return order


def _check_labels(labels: np.ndarray, num_classes: int) -> None:
    if labels.ndim != 1:
        raise LTPLLError(f"labels must be a 1-D array of class ids; got shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise LTPLLError(
            f"labels must lie in 0..{num_classes - 1} (one count per class); "
            f"found {labels.min()}..{labels.max()}"
        )


def _class_label(cls: int, class_names: list[str] | None) -> str:
    if class_names is not None and 0 <= cls < len(class_names):
        return f"class {cls} ({class_names[cls]})"
    return f"class {cls}"
