"""Class-balanced weights (Cui et al., CVPR 2019), ``--loss-weighting cb``.

``w_y = (1 - beta) / (1 - beta^n_y)``, the inverse of the class's effective number of samples,
normalised to sum to C, from the first epoch; the counts ``n_y`` are re-estimated every epoch.
"""

import keras
import numpy as np
from keras import ops

from ltpll.components import check_options
from ltpll.weighting.base import MIN_COUNT, LossWeighting


def class_balanced_weights(counts, beta=0.9999):
    """``(1 - beta) / (1 - beta^n_y)`` normalised to sum to C: the inverse effective number.

    Args:
        counts: ``[C]`` (estimated) samples per class; fractional counts are fine, counts below
            one image count as one.
        beta: in [0, 1). 0 gives uniform weights; towards 1, inverse class frequency.
    """
    counts = np.maximum(np.asarray(counts, dtype=np.float64), MIN_COUNT)
    if beta == 0:
        weights = np.ones_like(counts)
    else:
        # -expm1(n log beta) = 1 - beta^n, accurate for beta close to 1.
        weights = (1.0 - beta) / -np.expm1(counts * np.log(beta))
    return (weights * len(counts) / weights.sum()).astype(np.float32)


@keras.saving.register_keras_serializable(package="ltpll")
class ClassBalanced(LossWeighting):
    """Class-balanced weights; the class weights of LDAM-DRW and the meta weighting too.

    Args:
        beta: beta of the effective number (``--cb-beta``).
        num_classes, oracle_counts: as for :class:`~ltpll.weighting.base.LossWeighting`.
    """

    kind = "cb"
    uses_class_counts = True

    def __init__(self, beta=0.9999, **kwargs):
        self.beta = check_options("weighting", "cb", beta=beta)["beta"]
        super().__init__(**kwargs)

    def set_counts(self, counts):
        super().set_counts(counts)
        self.class_weights.assign(class_balanced_weights(counts, self.beta))

    def example_weights(self, targets, logits_w):
        """``sum_y target_y w_y`` while active, 1 before (a deferred subclass's start)."""
        weights = ops.sum(targets * self.class_weights, axis=-1)
        return self.active * weights + (1.0 - self.active)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}
