"""PRODEN: progressive identification of the true labels (Lv et al., ICML 2020).

"Progressive identification of true labels for partial-label learning". Each sample keeps a
confidence row over its candidate set S, starting uniform; training alternates between

* loss: cross-entropy of the (weak view's) softmax to the confidence row,
  ``-sum_j target_j log p_j``, per sample, and
* update: the model's own softmax restricted to S and renormalised, so the confidence
  progressively concentrates on the candidate the model believes most.

One view only: the strong view's logits arrive as ``None`` and are ignored.
"""

from keras import ops

from ltpll.disambiguation.base import (
    DisambiguationMethod,
    cross_entropy_to_targets,
    normalise_over_candidates,
)


class PRODEN(DisambiguationMethod):
    name = "proden"
    views = 1

    def example_losses(self, logits_w, logits_s, targets, candidates):
        return cross_entropy_to_targets(logits_w, targets)

    def update(self, logits_w, logits_s, candidates):
        # In log space, so rows whose candidates all have vanishing probability still sum to 1.
        return normalise_over_candidates(ops.log_softmax(logits_w, axis=-1), candidates)
