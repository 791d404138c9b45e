"""The focal factor (Lin et al., ICCV 2017), ``--loss-weighting focal``.

Each sample's loss is multiplied by ``(1 - p_t)^gamma``, where ``p_t`` is the probability the weak
view gives the target row, ``sum_y target_y p_y`` (for a one-hot row the usual ``p_y``). The
gradient flows through the factor, as in the focal loss.
"""

import keras
from keras import ops

from ltpll.components import check_options
from ltpll.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="ltpll")
class Focal(LossWeighting):
    """The focal factor.

    Args:
        gamma: the exponent (``--focal-gamma``).
    """

    kind = "focal"

    def __init__(self, gamma=2.0, **kwargs):
        self.gamma = check_options("weighting", "focal", gamma=gamma)["gamma"]
        super().__init__(**kwargs)

    def example_weights(self, targets, logits_w):
        p_target = ops.sum(targets * ops.softmax(logits_w, axis=-1), axis=-1)
        return ops.power(ops.maximum(1.0 - p_target, 0.0), self.gamma)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}
