"""Label-distribution-aware margins (Cao et al., NeurIPS 2019): ``--loss-weighting ldam`` and
``ldam-drw``.

* ``ldam``: margins ``Delta_y`` proportional to ``n_y^(-1/4)``, the largest ``max_margin`` (0.5),
  subtracted (times the logit scale ``s``, ``--ldam-scale``, the authors' 30) from the target's
  logits: ``logits - s * target * Delta``. LDAM's margins are in cosine units, so the head is a
  cosine classifier with scale ``s`` (:class:`~ltpll.models.heads.CosineHead`), as in the
  authors' code; with a linear head the network could scale its logits past any margin.
* ``ldam-drw``: LDAM plus deferred re-weighting: class-balanced weights switched on at ``start``
  (``--ldam-drw-start``; default after 80% of the epochs, the authors' 160 of 200).

The counts behind the margins are re-estimated every epoch from the confidence table.
"""

import keras
import numpy as np

from ltpll.components import check_options
from ltpll.models.heads import CosineHead
from ltpll.weighting.base import MIN_COUNT, LossWeighting
from ltpll.weighting.class_balanced import ClassBalanced


def ldam_margins(counts, max_margin=0.5):
    """LDAM margins ``Delta_y`` proportional to ``n_y^(-1/4)``, the largest equal to ``max_margin``
    (counts below one image count as one)."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), MIN_COUNT)
    margins = counts ** -0.25
    return (margins * max_margin / margins.max()).astype(np.float32)


@keras.saving.register_keras_serializable(package="ltpll")
class LDAM(LossWeighting):
    """LDAM margins and the cosine head they are defined with.

    Args:
        scale: the logit scale ``s`` of the cosine head (``--ldam-scale``).
        max_margin: the largest margin (``--ldam-max-margin``).
    """

    kind = "ldam"
    uses_class_counts = True

    def __init__(self, scale=30.0, max_margin=0.5, **kwargs):
        checked = check_options("weighting", "ldam", scale=scale, max_margin=max_margin)
        self.scale, self.max_margin = checked["scale"], checked["max_margin"]
        super().__init__(**kwargs)

    def set_counts(self, counts):
        super().set_counts(counts)
        self.margins.assign(ldam_margins(counts, self.max_margin))

    def margin_logits(self, logits, targets):
        return logits - self.scale * targets * self.margins

    def build_head(self, num_classes):
        return CosineHead(num_classes, scale=self.scale, name="head")

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "max_margin": self.max_margin}


@keras.saving.register_keras_serializable(package="ltpll")
class LDAMDRW(LDAM, ClassBalanced):
    """LDAM plus class-balanced weights from a start epoch: the margins and head of
    :class:`LDAM`, the weights of :class:`ClassBalanced`.

    Args:
        start: 0-based epoch the weights switch on (``--ldam-drw-start``); None: 80% of the run.
        scale, max_margin: as for :class:`LDAM`; beta: as for :class:`ClassBalanced`.
    """

    kind = "ldam-drw"
    deferred = True

    def __init__(self, start=None, **kwargs):
        self.start = check_options("weighting", "ldam-drw", start=start)["start"]
        super().__init__(**kwargs)

    def start_epoch(self, epochs):
        return self.start if self.start is not None else int(0.8 * epochs)

    def get_config(self):
        return {**super().get_config(), "start": self.start}
