"""SoLar: Sinkhorn label refinery for imbalanced PLL (Wang et al., NeurIPS 2022), and SoLar-LA.

Plain PLL disambiguation under a long tail drifts to the head classes: the model's own beliefs,
renormalised over the candidates, give the tail too little mass. SoLar refines them with relaxed
optimal transport towards an estimated class marginal, then trusts the refined labels only where
they look reliable. One training step (all of it compiled, no host round-trip):

* the cost ``M = softmax(logits_w) * candidates`` of the batch is stacked under a queue of the
  costs of the last ``queue_size`` samples (a FIFO, a non-trainable variable; the queue joins only
  once it is full, as in the authors' code) and Sinkhorn-Knopp scales ``M ** lambda`` so each
  sample's row sums to 1 and the classes' column sums follow the marginal estimate; the batch's
  rows are its refined labels;
* reliable samples: per class (the refined label's argmax), the ``ceil(B * marginal_j * rho)``
  (at least one) with the smallest cross-entropy to their refined label, plus every sample whose
  refined label agrees with the prediction with confidence above ``tau``;
* loss ``eta * (CE_weak + CE_strong [+ CE_mixup]) on the reliable samples + (1 - eta) * the
  PRODEN loss (cross-entropy to the table's row) on the others``, where ``eta`` and ``rho`` ramp up
  linearly over ``warmup_epochs``; the first epoch, or a batch with no reliable sample, trains the
  PRODEN loss alone. With ``--mixup`` the weak views of the reliable samples are mixed among
  themselves (``lambda = max(l, 1 - l)``, ``l ~ Beta(4, 4)``) in an extra forward pass, towards
  the same mix of their refined labels;
* the table (for the PRODEN term) gets the renormalised prediction, as PRODEN's update.

The class marginal starts uniform and moves at every epoch's end towards the fraction of
training samples whose candidate-restricted prediction is each class: with weight
``gamma_est`` for the first ``est_epochs`` epochs, then ``gamma``. The authors predict the whole
training set (unaugmented, in inference mode) after each epoch, train a first model for
``est_epochs`` epochs only to estimate the marginal and then train a fresh model from that
estimate; here the fractions are counted from the weak views inside the training step (no extra
pass over the data) and one run does both phases, the first ``est_epochs`` epochs being the
estimation phase.

SoLar-LA (the paper's Table 6) trains with the logit-adjusted loss of Menon et al. on the
estimated marginal: every training-time use of the logits above (losses, cost, update, counts)
sees ``logits + la_tau * log marginal``, and prediction uses the plain logits, which then
estimate the class-balanced posterior.
"""

import keras
import numpy as np
from keras import ops

from ltpll.disambiguation.base import (
    DisambiguationMethod,
    cross_entropy_to_targets,
    normalise_over_candidates,
)

# The authors' relaxed solution: zero costs are lifted to this before the second attempt.
_RELAX = 1e-5
_MIN_PRIOR = 1e-12


def sinkhorn(cost, class_marginal, lamd=3.0, iterations=50, weights=None):
    """Sinkhorn-Knopp scaling of ``cost ** lamd`` to the transport plan with rows summing to 1.

    Each active sample (row) carries mass ``1 / N`` (``N`` active rows), each class (column)
    ``class_marginal``; the plan is returned times ``N``, so every active row sums to 1 and the
    column sums approach ``N * class_marginal``. Rows with ``weights == 0`` take no part (a queue
    that has not filled up yet) and come back zero.

    The authors stop early when ``sum(c) + sum(r) < 0.1``; that sum is never below 2 (``r`` is at
    least ``1 / sum(c)`` for costs in [0, 1]), so they always run all ``iterations``, as here.

    Args:
        cost: ``[N, C]`` non-negative costs (predictions times candidate sets).
        class_marginal: ``[C]`` target class distribution.
        lamd: exponent of the cost (the authors' ``lamd``; larger sharpens the plan).
        iterations: Sinkhorn iterations.
        weights: ``[N]`` 1 for the rows that take part, 0 for those that do not.

    Returns:
        ``[N, C]`` float32; NaN where a class has no cost mass at all (see :func:`refine`).
    """
    cost = ops.cast(cost, "float32")
    if weights is None:
        weights = ops.ones(ops.shape(cost)[:1], "float32")
    active = weights > 0
    kernel = ops.power(cost, lamd)
    count = ops.sum(weights)
    row_mass = weights / count
    marginal = ops.cast(class_marginal, "float32")

    def scale(_, state):
        _, c = state
        r = marginal / ops.matmul(c, kernel)
        kernel_r = ops.matmul(kernel, r)
        c = ops.where(active, row_mass / ops.where(active, kernel_r, 1.0), 0.0)
        return r, c

    r, c = ops.fori_loop(0, iterations, scale, (ops.ones_like(marginal), row_mass))
    return kernel * c[:, None] * r[None, :] * count


def refine(cost, class_marginal, lamd=3.0, iterations=50, weights=None):
    """:func:`sinkhorn`, with the authors' fallback where it breaks down.

    A class that no active row has as a candidate (or whose costs underflow) makes the plain
    scaling divide by zero; then, as the authors do, the zero costs of the active rows are lifted
    to ``1e-5``, the scaling runs again, and the plan is cut back to the original non-zero costs.
    """
    plan = sinkhorn(cost, class_marginal, lamd, iterations, weights)
    active = ops.ones(ops.shape(cost)[:1], "bool") if weights is None else weights > 0
    lifted = ops.where((cost == 0) & active[:, None], _RELAX, cost)
    relaxed = sinkhorn(lifted, class_marginal, lamd, iterations, weights)
    relaxed = relaxed * ops.cast(cost != 0, "float32")
    return ops.where(ops.all(ops.isfinite(plan)), plan, relaxed)


def select_small_loss(refined, losses, class_marginal, rho):
    """``[B]`` bool: per class, the samples with the smallest losses.

    A sample belongs to the class of its refined label's argmax; class ``j`` keeps its
    ``max(ceil(B * class_marginal[j] * rho), 1)`` samples of smallest ``losses`` (ties go to the
    earlier sample), all of them if it has fewer.
    """
    labels = ops.argmax(refined, axis=-1)
    batch = ops.shape(losses)[0]
    position = ops.arange(batch)
    same_class = labels[:, None] == labels[None, :]
    # [i, m]: sample m comes before sample i in i's class.
    before = (losses[None, :] < losses[:, None]) | (
        (losses[None, :] == losses[:, None]) & (position[None, :] < position[:, None]))
    rank = ops.sum(ops.cast(same_class & before, "int32"), axis=1)
    quota = ops.maximum(ops.ceil(ops.cast(batch, "float32") * class_marginal * rho), 1.0)
    return ops.cast(rank, "float32") < ops.take(quota, labels)


def high_confidence(refined, probs, tau):
    """``[B]`` bool: the refined label and the prediction agree with confidence above ``tau``."""
    return ops.sum(refined * probs, axis=-1) > tau


def permutation_within(selected, seed):
    """A random permutation of ``[B]`` that maps selected samples to selected samples (uniformly
    over the bijections of the selected set) and the others among themselves."""
    batch = ops.shape(selected)[0]
    outside = 2.0 * (1.0 - ops.cast(selected, "float32"))
    in_order = ops.argsort(outside + ops.cast(ops.arange(batch), "float32") / ops.cast(batch, "float32"))
    shuffled = ops.argsort(outside + keras.random.uniform((batch,), 0.0, 1.0, seed=seed))
    return ops.scatter(ops.expand_dims(in_order, -1), shuffled, (batch,))


class SolarState(keras.layers.Layer):
    """SoLar's variables, kept in the model: the cost queue and how full it is, the class-marginal
    estimate, this epoch's prediction counts, and the epoch (for the ramps)."""

    def __init__(self, num_classes, queue_size, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.queue_size = int(queue_size)

    def build(self, input_shape=None):
        def state(name, shape, initializer):
            return self.add_weight(shape=shape, initializer=initializer, trainable=False,
                                   autocast=False, name=name)

        c = self.num_classes
        self.queue = state("queue", (self.queue_size, c), "zeros") if self.queue_size else None
        self.queue_filled = state("queue_filled", (), "zeros")
        self.class_marginal = state("class_marginal", (c,),
                                    keras.initializers.Constant(1.0 / c))
        self.counts = state("counts", (c,), "zeros")
        self.epoch = state("epoch", (), "zeros")
        self.built = True

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "queue_size": self.queue_size}


class SoLar(DisambiguationMethod):
    """SoLar (``logit_adjusted=False``, ``--method solar``) or SoLar-LA (``--method solar-la``).

    Options (``--solar-<option>``, the authors' defaults): ``queue_size`` (samples; 64 batches of
    256), ``lamd``, ``iterations``, ``eta``, ``tau``, ``rho_start``/``rho_end`` (their
    ``rho_range``), ``warmup_epochs``, ``est_epochs``, ``gamma_est``/``gamma`` (their ``gamma``
    pair); SoLar-LA adds ``la_tau`` (the paper's zeta).
    """

    name = "solar"
    views = 2
    owns_mixup = True
    la_tau = 0.0

    def __init__(self, logit_adjusted=False, queue_size=16384, lamd=3.0, iterations=50, eta=0.9,
                 tau=0.99, rho_start=0.2, rho_end=0.8, warmup_epochs=50, est_epochs=20,
                 gamma_est=0.1, gamma=0.01, la_tau=1.0):
        self.logit_adjusted = bool(logit_adjusted)
        self.name = "solar-la" if self.logit_adjusted else "solar"
        options = dict(queue_size=queue_size, lamd=lamd, iterations=iterations, eta=eta, tau=tau,
                       rho_start=rho_start, rho_end=rho_end, warmup_epochs=warmup_epochs,
                       est_epochs=est_epochs, gamma_est=gamma_est, gamma=gamma)
        if self.logit_adjusted:
            options["la_tau"] = la_tau
        self.set_options(**options)
        self.state = None

    # --- state and schedule ------------------------------------------------------------------

    def build(self, model):
        self.state = SolarState(model.num_classes, self.queue_size, name="solar_state")
        self.state.build()
        return self.state

    def callbacks(self):
        return [SolarSchedule(self)]

    def adjust(self, logits):
        """SoLar-LA's training logits ``logits + la_tau * log marginal``; SoLar's as they are."""
        if not self.logit_adjusted or self.state is None or not self.la_tau:
            return logits
        log_prior = ops.log(ops.maximum(self.state.class_marginal, _MIN_PRIOR))
        return logits + self.la_tau * log_prior

    # --- outside a SoLar step (the generic method interface) ----------------------------------

    def example_losses(self, logits_w, logits_s, targets, candidates):
        """The PRODEN term: cross-entropy of the weak view to the table's rows."""
        return cross_entropy_to_targets(self.adjust(logits_w), targets)

    def update(self, logits_w, logits_s, candidates):
        return normalise_over_candidates(ops.log_softmax(self.adjust(logits_w), axis=-1),
                                         candidates)

    # --- the step --------------------------------------------------------------------------

    def ramp(self):
        """``linear_rampup(epoch, warmup_epochs)`` of the authors: 0 -> 1 over the warm-up."""
        if self.warmup_epochs == 0:
            return ops.ones((), "float32")
        return ops.minimum(self.state.epoch / float(self.warmup_epochs), 1.0)

    def refined_labels(self, cost, training):
        """The batch's Sinkhorn labels from its cost and the queue; pushes the batch's cost
        into the queue when ``training``."""
        state = self.state
        marginal = state.class_marginal
        if not self.queue_size:
            return refine(cost, marginal, self.lamd, self.iterations)
        batch_rows = ops.ones(ops.shape(cost)[:1], "float32")
        full = ops.cast(state.queue_filled >= self.queue_size, "float32")
        weights = ops.concatenate([full * ops.ones((self.queue_size,), "float32"), batch_rows])
        plan = refine(ops.concatenate([state.queue, cost], axis=0), marginal, self.lamd,
                      self.iterations, weights)
        if training:  # newest first, as the authors' queue
            state.queue.assign(ops.concatenate([cost, state.queue], axis=0)[: self.queue_size])
            state.queue_filled.assign(ops.minimum(
                state.queue_filled + ops.sum(batch_rows), float(self.queue_size)))
        return plan[self.queue_size:]

    def step_loss(self, step):
        state, model = self.state, step.model
        logits_w = self.adjust(step.y_pred["logits_w"])
        logits_s = self.adjust(step.y_pred["logits_s"])
        probs = ops.softmax(ops.stop_gradient(logits_w), axis=-1)
        cost = probs * step.candidates
        refined = ops.stop_gradient(self.refined_labels(cost, step.training))

        proden = cross_entropy_to_targets(logits_w, step.targets)
        refined_w = cross_entropy_to_targets(logits_w, refined)
        refined_s = cross_entropy_to_targets(logits_s, refined)
        ramp = self.ramp()
        eta = self.eta * ramp
        rho = self.rho_start + (self.rho_end - self.rho_start) * ramp
        reliable = select_small_loss(refined, ops.stop_gradient(refined_w),
                                     state.class_marginal, rho)
        reliable = reliable | high_confidence(refined, probs, self.tau)
        chosen = ops.cast(reliable, "float32")
        weights = step.example_weights(step.y_pred["logits_w"])

        def mean_over(losses, mask):
            return ops.sum(weights * losses * mask) / ops.maximum(ops.sum(mask), 1.0)

        reliable_term = mean_over(refined_w, chosen) + mean_over(refined_s, chosen)
        if model.mixup:
            reliable_term = reliable_term + model.mixup_weight * self.mixup_loss(
                step, refined, reliable, weights)
        loss = eta * reliable_term + (1.0 - eta) * mean_over(proden, 1.0 - chosen)
        proden_only = (state.epoch < 1.0) | (ops.sum(chosen) == 0)
        loss = ops.where(proden_only, ops.mean(weights * proden), loss)

        if step.training:  # this epoch's predictions, for the class-marginal estimate
            predicted = ops.one_hot(ops.argmax(cost, axis=-1), ops.shape(cost)[-1])
            state.counts.assign(state.counts + ops.sum(predicted, axis=0))
        return loss

    def mixup_loss(self, step, refined, reliable, weights):
        """Cross-entropy of the reliable samples' weak views mixed among themselves, to the same
        mix of their refined labels (one extra forward pass, as the authors make)."""
        model = step.model
        batch = ops.shape(refined)[0]
        weak = step.y_pred["views"][:batch]
        from ltpll.models.pll_model import _beta_4_4

        draw = _beta_4_4(model.mixup_seed)
        mix_lambda = ops.maximum(draw, 1.0 - draw)
        perm = permutation_within(reliable, model.mixup_seed)
        mixed = mix_lambda * weak + (1.0 - mix_lambda) * ops.take(weak, perm, axis=0)
        mixed_labels = mix_lambda * refined + (1.0 - mix_lambda) * ops.take(refined, perm, axis=0)
        losses = cross_entropy_to_targets(self.adjust(step.logits_of(mixed)), mixed_labels)
        chosen = ops.cast(reliable, "float32")
        return ops.sum(weights * losses * chosen) / ops.maximum(ops.sum(chosen), 1.0)


class SolarSchedule(keras.callbacks.Callback):
    """Tells SoLar's step the epoch (its ramps) and, at each epoch's end, moves the class-marginal
    estimate towards the epoch's prediction fractions (weight ``gamma_est`` during the first
    ``est_epochs`` epochs, ``gamma`` after), then clears the counts."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    def on_epoch_begin(self, epoch, logs=None):
        self.method.state.epoch.assign(float(epoch))

    def on_epoch_end(self, epoch, logs=None):
        state, method = self.method.state, self.method
        counts = ops.convert_to_numpy(state.counts).astype("float64")
        if counts.sum() > 0:
            gamma = method.gamma_est if epoch < method.est_epochs else method.gamma
            marginal = ops.convert_to_numpy(state.class_marginal).astype("float64")
            state.class_marginal.assign(
                (gamma * counts / counts.sum() + (1.0 - gamma) * marginal).astype("float32"))
        state.counts.assign(np.zeros(state.counts.shape, "float32"))
