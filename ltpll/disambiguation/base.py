"""The interface every PLL disambiguation method implements.

A method is a strategy, not a model: :class:`~ltpll.models.pll_model.PLLModel` owns the training
step (augmentation, forward pass, the confidence table, RECORDS) and asks the method two things:

* ``loss``: the training loss of two augmented views given the current confidence targets;
* ``update``: the new confidence rows, from the (possibly debiased) log-probabilities of both
  views, restricted to each sample's original candidate set.

Methods are plain Python objects with a ``get_config`` so a saved model knows which one it ran.
"""

from keras import ops


class DisambiguationMethod:
    """Base class: subclasses set ``name`` and implement ``loss`` and ``update``."""

    name = None

    def loss(self, logits_w, logits_s, targets, candidates):
        """Scalar training loss.

        Args:
            logits_w: ``[B, C]`` logits of the weakly augmented view.
            logits_s: ``[B, C]`` logits of the strongly augmented view.
            targets: ``[B, C]`` current confidence rows (each sums to 1 over its candidates).
            candidates: ``[B, C]`` multi-hot original candidate sets.
        """
        raise NotImplementedError

    def update(self, log_probs_w, log_probs_s, candidates):
        """New ``[B, C]`` confidence rows, zero outside the candidate set and summing to 1."""
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name}


def normalise_over_candidates(log_scores, candidates):
    """Softmax of ``log_scores`` over each row's candidate set (zero elsewhere).

    Working from log scores keeps tiny probabilities from underflowing to an all-zero row, which a
    product of probabilities divided by its sum can do with many classes.
    """
    masked = ops.where(candidates > 0, log_scores, ops.full_like(log_scores, -1e30))
    return ops.softmax(masked, axis=-1) * ops.cast(candidates > 0, log_scores.dtype)
