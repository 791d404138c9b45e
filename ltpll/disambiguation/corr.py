"""CORR: the consistency-regularised PLL method RECORDS builds on (Wu et al., ICML 2022).

Loss, for each of the two views v in {weak, strong}:

* a negative-label term ``-sum_{j not in S} log(1 - p_v[j])`` pushing probability off the labels
  that are not candidates, and
* ``KL(target || p_v)``, pulling each view towards the shared confidence target;

summed over the two views for each sample. Update: ``sqrt(p_w * p_s)`` restricted to the candidate set and
renormalised (the geometric mean of the two views' beliefs).
"""

from keras import ops

from ltpll.disambiguation.base import DisambiguationMethod, normalise_over_candidates

_EPS = 1e-9


class CORR(DisambiguationMethod):
    name = "corr"
    views = 2

    def example_losses(self, logits_w, logits_s, targets, candidates):
        non_candidates = 1.0 - candidates
        total = 0.0
        for logits in (logits_w, logits_s):
            probs = ops.softmax(logits, axis=-1)
            log_probs = ops.log_softmax(logits, axis=-1)
            negative = -ops.sum(non_candidates * ops.log(ops.abs(1.0 - probs) + _EPS), axis=-1)
            safe_targets = ops.where(targets > 0, targets, ops.ones_like(targets))
            kl = ops.sum(ops.where(targets > 0, targets * (ops.log(safe_targets) - log_probs), 0.0),
                         axis=-1)
            total = total + negative + kl
        return total

    def update(self, logits_w, logits_s, candidates):
        log_probs_w = ops.log_softmax(logits_w, axis=-1)
        log_probs_s = ops.log_softmax(logits_s, axis=-1)
        return normalise_over_candidates(0.5 * (log_probs_w + log_probs_s), candidates)
