"""The small balanced *clean* dev set that meta-learned example weights need.

Jamal et al. (CVPR 2020) learn per-example weights by asking which weights make a virtual
training step lower the loss on a few images per class with their true labels. Those images must
be held out of training. Where the training split has images the long-tailed subset did not keep
(CIFAR-10-LT at ``n_max`` below 5000, or any class except the head at full scale), the dev images
come from those, so the training set stays exactly the long-tailed subset a run without a dev set
would see; a class with too few left-over images gives up the rest from its kept images.
"""

import numpy as np

from ltpll.errors import LTPLLError


def hold_out_dev(labels, keep, per_class, num_classes, seed, class_names=None):
    """Splits off ``per_class`` images of every class as a dev set.

    Args:
        labels: int ``[N]`` true labels of the whole training split.
        keep: indices of the split the long-tailed training subset keeps.
        per_class: dev images per class.
        num_classes: C.
        seed: seeds the choice of dev images.
        class_names: optional names, for error messages.

    Returns:
        ``(dev_index, keep)``: the dev images' indices into the split (class by class) and the
        training indices without them (sorted).

    Raises:
        LTPLLError: if a class has no known label, or too few images to give ``per_class`` to the
            dev set and keep at least one for training.
    """
    labels = np.asarray(labels)
    keep = np.asarray(keep, dtype=np.int64)
    if per_class < 1:
        raise LTPLLError(f"--dev-per-class must be >= 1; received {per_class}")
    if np.any(labels[keep] < 0):
        raise LTPLLError("a dev set needs the true labels of the training images, which this "
                         "dataset does not have")
    kept = np.zeros(len(labels), dtype=bool)
    kept[keep] = True
    rng = np.random.default_rng([seed, 7])
    dev, taken_from_training = [], []
    for cls in range(num_classes):
        leftovers = rng.permutation(np.flatnonzero((labels == cls) & ~kept))
        in_training = rng.permutation(np.flatnonzero((labels == cls) & kept))
        short = max(0, per_class - len(leftovers))
        if short >= len(in_training):
            name = class_names[cls] if class_names else f"class {cls}"
            raise LTPLLError(
                f"{name} has {len(leftovers) + len(in_training)} images, too few to hold "
                f"{per_class} out as a dev set and still train on one; lower --dev-per-class"
            )
        dev.append(np.concatenate([leftovers[:per_class], in_training[:short]]))
        taken_from_training.append(in_training[:short])
    dev_index = np.concatenate(dev).astype(np.int64)
    removed = np.concatenate(taken_from_training)
    return dev_index, np.setdiff1d(keep, removed).astype(np.int64)
