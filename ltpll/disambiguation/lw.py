"""LW: the leveraged weighted loss (Wen et al., ICML 2021).

"Leveraged weighted loss for partial label learning". The loss treats candidates and
non-candidates separately, with a binary (one-vs-rest) loss ``psi`` on each logit ``f_j``; as in
the authors' code, ``psi`` is the sigmoid loss, ``psi(z) = sigmoid(-z)``:

* candidate term ``sum_{j in S} w_j * sigmoid(-f_j)``: pushes each candidate's logit up, weighted
  by its confidence ``w`` (the confidence target, zero outside S);
* non-candidate term ``beta * sum_{j not in S} u_j * sigmoid(f_j)``: pushes the non-candidates'
  logits down, weighted by ``u``, the model's current softmax restricted to the non-candidates and
  renormalised over them, so the non-candidates the model still believes in are pushed hardest.

Both are summed over classes for each sample. ``beta`` (the paper's leverage
parameter, ``--lw-beta``) trades the two off; ``beta = 0`` drops the non-candidate term.

Departure from the reference code: the authors store ``u`` in the confidence table next to ``w``.
Here ``u`` is computed on the fly from the current step's prediction (without gradient), so the
table keeps the invariant every method shares, "zero outside the candidates". A row whose
candidate set is every class has no non-candidate term.

Update: as PRODEN, the softmax restricted to the candidates and renormalised. One view only.
"""

from keras import ops

from ltpll.disambiguation.base import DisambiguationMethod, normalise_over_candidates


class LW(DisambiguationMethod):
    name = "lw"
    views = 1

    def __init__(self, beta=1.0):
        self.set_options(beta=beta)

    def example_losses(self, logits_w, logits_s, targets, candidates):
        non_candidates = 1.0 - candidates
        # normalise_over_candidates gives an all-zero row when there is no non-candidate, so the
        # all-candidates case needs no division guard (and yields no NaN).
        weights = normalise_over_candidates(
            ops.log_softmax(ops.stop_gradient(logits_w), axis=-1), non_candidates
        )
        candidate_term = ops.sum(targets * ops.sigmoid(-logits_w), axis=-1)
        non_candidate_term = ops.sum(weights * ops.sigmoid(logits_w), axis=-1)
        return candidate_term + self.beta * non_candidate_term

    def update(self, logits_w, logits_s, candidates):
        return normalise_over_candidates(ops.log_softmax(logits_w, axis=-1), candidates)
