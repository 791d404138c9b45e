"""CC: the classifier-consistent PLL loss (Feng et al., NeurIPS 2020).

"Provably consistent partial-label learning". The candidate set S is read as the event "the true
label is one of S", so the loss is the negative log-probability the model gives that event:

    CC(x, S) = -log sum_{j in S} p_j,        p = softmax(f(x)).

It needs no confidence table and no warm-up: its gradient with respect to the logits is
``p - q``, where ``q`` is the model's own softmax restricted to S and renormalised. That is, CC is
the KL divergence ``KL(q || p)`` with ``q`` held fixed (its value is exactly ``-log P(S)`` too,
since ``sum_j q_j log(q_j / p_j) = -log P(S)`` when ``q = p|S / P(S)``): a PRODEN whose target is
recomputed from the current step instead of remembered from the sample's last visit.

This module implements CC in that form, which is what lets it compose with the rest of ltpll:

* ``step_targets = True``: :class:`~ltpll.models.pll_model.PLLModel` hands ``example_losses`` this
  step's ``update`` of the batch (without gradient) as ``targets``, not the table's rows;
* ``update``: the softmax restricted to S and renormalised, computed from the rebalancer's
  ``update_logits``, as for PRODEN;
* ``example_losses``: ``KL(targets || p)``.

Without a rebalancer this is the authors' CC exactly, in value and gradient.

CC + RECORDS. The authors' CC has no stored confidence, and the RECORDS authors' code has no CC;
their paper reports CC + RECORDS. RECORDS debiases the model's belief wherever it disambiguates
(``logits - log prior`` with the prior estimated from the momentum feature mean). CC's
disambiguation is the implicit target ``q`` in its gradient, so under RECORDS that target is
computed from the debiased logits, ``q' = softmax(f - log prior)|S``, and the loss is
``KL(q' || p)``; its gradient ``p - q'`` pulls a tail-class candidate up more than plain CC does.
That gradient is the gradient of ``-log sum_{j in S} p_j / prior_j``: CC with each candidate's
probability divided by its estimated prior (the two values differ by ``-sum_j q'_j log prior_j``,
which has no gradient since ``q'`` is held fixed). With a uniform prior (RECORDS' feature mean at zero, before training) it is plain CC. Prediction is debiased as
for every method. The prior used for the loss is the one before the batch's features are folded
in (the table's rows, written after the loss, use the one after): a difference of one momentum
step.

The confidence table is not read by the loss; it is still written (from ``--update-start`` on,
with the step's target), so the class counts the loss weightings estimate from it and the mean max
confidence in the logs mean what they do for the other methods. ``--update-start`` does not delay
CC's loss: CC has no warm-up.

Mixup follows the model's mixup path: the mixed view is trained towards the same mix of the two
samples' step targets.

One view only: the strong view's logits arrive as ``None`` and are ignored.
"""

from keras import ops

from ltpll.disambiguation.base import DisambiguationMethod, normalise_over_candidates


class CC(DisambiguationMethod):
    name = "cc"
    views = 1
    step_targets = True

    def example_losses(self, logits_w, logits_s, targets, candidates):
        log_probs = ops.log_softmax(logits_w, axis=-1)
        # 0 log 0 = 0: entries outside the target's support add nothing (and no NaN).
        safe = ops.where(targets > 0, targets, ops.ones_like(targets))
        return ops.sum(ops.where(targets > 0, targets * (ops.log(safe) - log_probs), 0.0), axis=-1)

    def update(self, logits_w, logits_s, candidates):
        return normalise_over_candidates(ops.log_softmax(logits_w, axis=-1), candidates)
