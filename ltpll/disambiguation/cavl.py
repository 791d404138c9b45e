"""CAVL: disambiguation by the class activation value (Zhang et al., ICLR 2022).

"Exploiting class activation value for partial-label learning". The authors observe that the
raw logits identify the true label better than the softmax once they are weighted by how far
they are from 1: the class activation value of logit ``f_j`` is ``cav_j = f_j * |1 - f_j|``.

* update: the candidate with the highest CAV (computed from the debiased logits) becomes a
  one-hot confidence row: a hard, self-training style label;
* loss: cross-entropy of the weak view's softmax to that row, as PRODEN.

Non-candidates are excluded by setting their CAV to a very negative value, not by multiplying by
the candidate mask as the reference code does: with the product a non-candidate (CAV 0) would win
whenever every candidate's CAV is negative, and the row would leave the candidate set.

One view only: the strong view's logits arrive as ``None`` and are ignored.
"""

from keras import ops

from ltpll.disambiguation.base import (
    _MASKED,
    DisambiguationMethod,
    cross_entropy_to_targets,
)


class CAVL(DisambiguationMethod):
    name = "cavl"
    views = 1

    def example_losses(self, logits_w, logits_s, targets, candidates):
        return cross_entropy_to_targets(logits_w, targets)

    def update(self, logits_w, logits_s, candidates):
        cav = logits_w * ops.abs(1.0 - logits_w)
        cav = ops.where(candidates > 0, cav, ops.full_like(cav, _MASKED))
        return ops.one_hot(ops.argmax(cav, axis=-1), ops.shape(logits_w)[-1], dtype="float32")
