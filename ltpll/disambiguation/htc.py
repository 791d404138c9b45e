"""HTC: a head classifier and a tail classifier that cooperate (Jia et al., AAAI 2024).

One classifier trained on long-tailed pseudo-labels is good on the head classes and poor on the
tail; one trained towards a balanced target is the reverse. HTC trains both on the same features
and learns, per sample, how much to trust each. One training step (all of it compiled):

* the **head classifier** is the model's own head. Its targets are the confidence table's rows;
* the **tail classifier** (a second linear layer on the same features, kept in the method's
  state) is trained towards the head's logit-adjusted belief ``softmax(f_head - t log pi)``
  over all classes (``--htc-t``, the authors' ``--t``), ``pi`` the class-distribution estimate;
* each classifier's loss, as the authors' ``get_loss``: the cross-entropy of its weak view to
  the table's rows (all samples), plus ``eta`` times the cross-entropy of its strong view to its
  own targets on the reliable samples. Reliable: per class (argmax of the target), the
  ``max(ceil(B * prior_j * alpha), 1)`` samples whose weak view has the smallest cross-entropy
  to the target; ``prior`` is ``pi`` for the head and uniform for the tail. ``eta`` and ``alpha``
  ramp up linearly over ``warmup_epochs`` (the authors' ``--e``); the first epoch trains the
  table term alone. With ``--mixup`` each classifier adds, inside the ``eta`` term, the
  cross-entropy of the reliable samples' weak views mixed among themselves
  (``lambda = max(l, 1 - l)``, ``l ~ Beta(4, 4)``) to the same mix of its targets;
* the **attention** (a ``2C -> 2`` linear layer) fuses the two, on logits without gradient:
  ``p1 = softmax(f_head - log(pi + 1e-5))``, ``p2 = softmax(f_tail)``, weights
  ``w = l2_normalise(softmax(leaky_relu(A [p1, p2])))``, prediction ``softmax(w1 p1 + w2 p2)``;
  its cross-entropy to the table's rows is added with weight ``0.5 * epoch / epochs``;
* the table moves towards the **tail** classifier's prediction restricted to the candidates:
  ``row <- (1 - mu) row + mu * normalise(softmax(f_tail_w) * S)``, ``mu = 0.6``.

The class-distribution estimate ``pi`` is the mean row of the confidence table, as the authors':
taken when training starts and at each epoch's end (so it is fixed during an epoch, their
``emp_dist``, and the one a saved model predicts with, their ``get_distribution()``).
Prediction is the ensemble (``w1 p1 + w2 p2``, whose softmax is the authors' prediction).

Where this departs from the authors' code:

* both views go through the backbone as one batch (theirs: one call each), and with ``--mixup``
  the head's and the tail's mixed batches share one extra forward pass (theirs: one each), so
  BatchNorm sees them together;
* the authors always add the Mixup term; here it comes with ``--mixup``, as for SoLar (pass
  ``--mixup`` for their recipe);
* ``log pi`` is floored at ``log 1e-12`` where the tail's targets use it (theirs: unguarded);
* with a rebalancer (``--records``, the oracle logit adjustments: not a combination the authors
  ran) the rebalancer's prior takes the place of ``pi``, in training and in the ensemble, and
  the model's own prediction-time debiasing is undone on the ensemble, which is debiased already;
* the loss weightings (class-balanced, focal...) weight each sample's terms of both classifiers.

The table write goes through the model as for every method: ``step_loss`` leaves the tail's new
rows for :meth:`HTC.update` of the same step to return (the model calls ``update`` with the head's
logits only).
"""

import keras
import numpy as np
from keras import ops

from ltpll.disambiguation.base import (
    DisambiguationMethod,
    cross_entropy_to_targets,
    normalise_over_candidates,
)
from ltpll.disambiguation.solar import permutation_within, select_small_loss

# The authors' ensemble debiases the head by log(pi + 1e-5); their tail target by log(pi),
# floored here so a class whose estimate underflows cannot make NaN targets.
_ENSEMBLE_EPS = 1e-5
_MIN_PRIOR = 1e-12
_FUSION_EPS = 1e-8
# torch.nn.functional.leaky_relu's default slope (Keras' default is 0.2).
_LEAKY_SLOPE = 0.01
# Rows of the confidence table summed at a time for the class-distribution estimate.
_BLOCK_ENTRIES = 1 << 24


def linear_ramp(epoch, length):
    """``min(epoch / length, 1)`` (1 for ``length == 0``), the authors' ``linear_rampup``."""
    if length == 0:
        return ops.ones((), "float32")
    return ops.minimum(ops.cast(epoch, "float32") / float(length), 1.0)


def ensemble_logits(attention, head_logits, tail_logits, distribution):
    """``[B, C]`` logits of HTC's fused prediction (their softmax is the authors' ``ensemble``).

    Args:
        attention: the ``2C -> 2`` layer weighting the two classifiers per sample.
        head_logits, tail_logits: ``[B, C]`` logits of the head and tail classifiers.
        distribution: ``[C]`` class-distribution estimate the head is debiased by.
    """
    head_logits = ops.cast(head_logits, "float32")
    p1 = ops.softmax(head_logits - ops.log(distribution + _ENSEMBLE_EPS), axis=-1)
    p2 = ops.softmax(ops.cast(tail_logits, "float32"), axis=-1)
    scores = ops.cast(attention(ops.concatenate([p1, p2], axis=-1)), "float32")
    weights = ops.softmax(ops.leaky_relu(scores, negative_slope=_LEAKY_SLOPE), axis=-1)
    weights = weights / ops.maximum(ops.norm(weights, axis=-1, keepdims=True), 1e-12)
    return weights[:, :1] * p1 + weights[:, 1:] * p2


def table_distribution(table):
    """``[C]`` float32 mean row of a confidence table (a variable or array), summed a block of
    rows at a time so a float16 table never needs a float32 copy of itself."""
    rows, classes = table.shape
    block = max(1, _BLOCK_ENTRIES // int(classes))
    total = np.zeros((int(classes),), "float64")
    for start in range(0, int(rows), block):
        part = ops.cast(table[start:min(int(rows), start + block)], "float32")
        total += ops.convert_to_numpy(ops.sum(part, axis=0)).astype("float64")
    return (total / max(total.sum(), 1e-30)).astype("float32")


class HtcState(keras.layers.Layer):
    """HTC's layers and variables, kept in the model: the tail classifier, the attention, the
    class-distribution estimate, the epoch (for the ramps) and the fusion loss's weight."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.tail = keras.layers.Dense(self.num_classes, name="tail_head")
        self.attention = keras.layers.Dense(2, name="attention")

    def build(self, feature_dim):
        def state(name, shape, initializer):
            return self.add_weight(shape=shape, initializer=initializer, trainable=False,
                                   autocast=False, name=name)

        c = self.num_classes
        self.tail.build((None, int(feature_dim)))
        self.attention.build((None, 2 * c))
        self.class_distribution = state("class_distribution", (c,),
                                        keras.initializers.Constant(1.0 / c))
        self.epoch = state("epoch", (), "zeros")
        self.fusion_weight = state("fusion_weight", (), "zeros")
        self.built = True

    def tail_logits(self, features):
        return ops.cast(self.tail(features), "float32")

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


class HTC(DisambiguationMethod):
    """HTC (``--method htc``). Options (``--htc-<option>``, the authors' defaults): ``t`` (their
    ``--t``), ``eta``, ``alpha_start``/``alpha_end`` (their ``alpha_range``), ``warmup_epochs``
    (their ``--e``) and ``mu`` (the table's moving-average weight, fixed at 0.6 in their code).
    """

    name = "htc"
    views = 2
    owns_mixup = True

    def __init__(self, t=2.0, eta=0.9, alpha_start=0.2, alpha_end=0.6, warmup_epochs=50,
                 mu=0.6):
        self.set_options(t=t, eta=eta, alpha_start=alpha_start, alpha_end=alpha_end,
                         warmup_epochs=warmup_epochs, mu=mu)
        self.state = None
        self._model = None
        self._rows = None

    # --- state and schedule ------------------------------------------------------------------

    def build(self, model):
        self._model = model
        self.state = HtcState(model.num_classes, name="htc_state")
        self.state.build(int(model.backbone.output_shape[-1]))
        return self.state

    def callbacks(self):
        return [HtcSchedule(self)]

    def distribution(self, model=None):
        """``[C]`` class distribution HTC debiases the head by, without gradient: the table's
        mean row, or the prior of the model's rebalancer when it has one."""
        model = model if model is not None else self._model
        if _rebalances(model):
            return ops.exp(ops.stop_gradient(ops.cast(
                model.rebalancer.log_prior(model.head, model.num_classes), "float32")))
        return ops.convert_to_tensor(self.state.class_distribution)

    # --- outside an HTC step (the generic method interface) -----------------------------------

    def example_losses(self, logits_w, logits_s, targets, candidates):
        """The head's table term: cross-entropy of the weak view to the table's rows."""
        return cross_entropy_to_targets(logits_w, targets)

    def update(self, logits_w, logits_s, candidates):
        """The tail's new rows that this step's ``step_loss`` left; outside an HTC step (no
        tail logits at hand), the renormalised prediction of ``logits_w``."""
        rows, self._rows = self._rows, None
        if rows is not None:
            return rows
        return normalise_over_candidates(ops.log_softmax(logits_w, axis=-1), candidates)

    def prediction_logits(self, logits, features):
        """The ensemble's logits. The model then applies its rebalancer's prediction debiasing;
        that shift is added here first, so it cancels on the already debiased ensemble."""
        model = self._model
        fused = ensemble_logits(self.state.attention, logits, self.state.tail_logits(features),
                                self.distribution(model))
        if _rebalances(model):
            logits = ops.cast(logits, "float32")
            fused = fused + (logits - model.rebalancer.prediction_logits(logits, model.head))
        return fused

    # --- the step --------------------------------------------------------------------------

    def step_loss(self, step):
        state, model, y_pred = self.state, step.model, step.y_pred
        head_w, head_s = y_pred["logits_w"], y_pred["logits_s"]
        tail_w = state.tail_logits(y_pred["features_w"])
        tail_s = state.tail_logits(y_pred["features_s"])
        table_rows = step.targets
        distribution = self.distribution(model)
        uniform = ops.full_like(distribution, 1.0 / model.num_classes)
        log_prior = ops.log(ops.maximum(distribution, _MIN_PRIOR))
        tail_targets = ops.stop_gradient(
            ops.softmax(ops.cast(head_w, "float32") - self.t * log_prior, axis=-1))
        ramp = linear_ramp(state.epoch, self.warmup_epochs)
        eta = self.eta * ramp
        alpha = self.alpha_start + (self.alpha_end - self.alpha_start) * ramp
        weights = step.example_weights(head_w)

        head = _Classifier(head_w, head_s, table_rows, table_rows, distribution, alpha)
        tail = _Classifier(tail_w, tail_s, tail_targets, table_rows, uniform, alpha)
        if model.mixup:
            self._add_mixup_losses(step, head, tail)
        first_epoch = state.epoch < 1.0
        loss = head.loss(weights, eta, first_epoch) + tail.loss(weights, eta, first_epoch)

        fused = ensemble_logits(state.attention, ops.stop_gradient(head_w),
                                ops.stop_gradient(tail_w), distribution)
        fused_probs = ops.softmax(fused, axis=-1)
        fusion = -ops.sum(table_rows * ops.log(fused_probs + _FUSION_EPS), axis=-1)
        loss = loss + state.fusion_weight * ops.mean(weights * fusion)

        if step.training:  # the tail's prediction moves the table (PLLModel writes it)
            prediction = normalise_over_candidates(
                ops.log_softmax(ops.stop_gradient(tail_w), axis=-1), step.candidates)
            self._rows = (1.0 - self.mu) * table_rows + self.mu * prediction
        return loss

    def _add_mixup_losses(self, step, head, tail):
        """Each classifier's reliable samples' weak views mixed among themselves, through the
        backbone in one extra pass (head's mix, then tail's), to the same mix of its targets."""
        from ltpll.models.pll_model import _beta_4_4

        model = step.model
        batch = ops.shape(head.targets)[0]
        weak = step.y_pred["views"][:batch]
        mixes = []
        for classifier in (head, tail):
            draw = _beta_4_4(model.mixup_seed)
            lam = ops.maximum(draw, 1.0 - draw)
            perm = permutation_within(classifier.chosen, model.mixup_seed)
            mixes.append(lam * weak + (1.0 - lam) * ops.take(weak, perm, axis=0))
            classifier.mixed_targets = (lam * classifier.targets
                                        + (1.0 - lam) * ops.take(classifier.targets, perm, axis=0))
        features = model.backbone(ops.concatenate(mixes, axis=0), training=True)
        head_features, tail_features = ops.split(features, 2, axis=0)
        head.mixed_logits = ops.cast(model.head(head_features), "float32")
        tail.mixed_logits = self.state.tail_logits(tail_features)


class _Classifier:
    """One classifier's terms in a step (the authors' ``get_loss``)."""

    def __init__(self, logits_w, logits_s, targets, table_rows, prior, alpha):
        self.logits_w, self.logits_s = logits_w, logits_s
        self.targets = targets
        self.table_term = cross_entropy_to_targets(logits_w, table_rows)
        small = ops.stop_gradient(cross_entropy_to_targets(logits_w, targets))
        self.chosen = select_small_loss(targets, small, prior, alpha)
        self.mixed_logits = self.mixed_targets = None

    def loss(self, weights, eta, table_only):
        chosen = ops.cast(self.chosen, "float32")

        def mean_over(losses):
            return ops.sum(weights * losses * chosen) / ops.maximum(ops.sum(chosen), 1.0)

        reliable = mean_over(cross_entropy_to_targets(self.logits_s, self.targets))
        if self.mixed_logits is not None:
            reliable = reliable + mean_over(
                cross_entropy_to_targets(self.mixed_logits, self.mixed_targets))
        table = ops.mean(weights * self.table_term)
        table_only = table_only | (ops.sum(chosen) == 0)
        return ops.where(table_only, table, eta * reliable + table)


def _rebalances(model):
    """Whether the model's rebalancer debiases (anything but the identity)."""
    from ltpll.rebalancing.base import NoRebalancing, Rebalancer

    return model is not None and type(model.rebalancer) not in (NoRebalancing, Rebalancer)


class HtcSchedule(keras.callbacks.Callback):
    """Tells HTC's step the epoch (the ``eta``/``alpha`` ramps and the fusion weight
    ``0.5 * epoch / epochs``), and takes the class-distribution estimate from the confidence
    table when training starts and at each epoch's end."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    def _estimate(self):
        state = self.method.state
        state.class_distribution.assign(table_distribution(self.method._model.confidence))

    def on_train_begin(self, logs=None):
        self._estimate()

    def on_epoch_begin(self, epoch, logs=None):
        state = self.method.state
        state.epoch.assign(float(epoch))
        epochs = int((self.params or {}).get("epochs") or 1)
        state.fusion_weight.assign(float(0.5 * min(epoch / epochs, 1.0)))

    def on_epoch_end(self, epoch, logs=None):
        self._estimate()
