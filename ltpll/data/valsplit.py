"""The held-out partial-label validation split (``--val-fraction``) for label-free epoch selection.

A fair PLL setup has no clean labels to validate on, only more partially labelled images, so the
split is a plain random share of the training set, candidate sets and all. It is not stratified:
stratifying by the true labels would use exactly what the setup says is unknown, and the
candidate sets are a noisy stand-in not worth the complication (the split is iid, so its class
mix matches the training set's in expectation). The draw depends only on the seed and the
training set, so a run and its resume (and every method of a benchmark cell) hold out the same
images.
"""

import numpy as np

from ltpll.errors import LTPLLError


def hold_out_val(num_samples, fraction, seed, labels=None, class_names=None):
    """Splits ``round(fraction * num_samples)`` random positions off a training set.

    Args:
        num_samples: N, the size of the training set.
        fraction: share to hold out, in (0, 1).
        seed: seeds the draw.
        labels: optional int ``[N]`` hidden true labels (-1 where unknown). They choose nothing;
            they only catch a split that would leave a class of the training set with no
            training image at all (a tiny class at a large fraction), which would make that
            class's training count, and so Many/Medium/Few and the oracle priors, meaningless.
        class_names: optional names, for that error message.

    Returns:
        ``(val_positions, train_positions)``: sorted positions into the training set.

    Raises:
        LTPLLError: if the fraction holds out no image or every image, or empties a class.
    """
    count = round(fraction * num_samples)
    if count < 1:
        raise LTPLLError(f"--val-fraction {fraction:g} of {num_samples} training images holds "
                         "out none; raise it")
    if count >= num_samples:
        raise LTPLLError(f"--val-fraction {fraction:g} of {num_samples} training images leaves "
                         "none to train on; lower it")
    order = np.random.default_rng([seed, 13]).permutation(num_samples)
    val, train = np.sort(order[:count]), np.sort(order[count:])
    if labels is not None:
        labels = np.asarray(labels)
        before = np.bincount(labels[labels >= 0], minlength=len(class_names or ()))
        after = np.bincount(labels[train][labels[train] >= 0], minlength=len(before))
        emptied = np.flatnonzero((before > 0) & (after == 0))
        if len(emptied):
            cls = int(emptied[0])
            name = class_names[cls] if class_names else f"class {cls}"
            raise LTPLLError(
                f"--val-fraction {fraction:g} leaves {name} with no training image (it has "
                f"{before[cls]}); lower --val-fraction"
            )
    return val.astype(np.int64), train.astype(np.int64)
