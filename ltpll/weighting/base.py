"""The interface every loss weighting implements, the identity weighting, and the callbacks
that move a weighting during ``fit``.

A weighting is a layer inside :class:`~ltpll.models.pll_model.PLLModel` (its state is saved with
the model and read inside the compiled step). The model asks it for:

* ``example_weights(targets, logits_w)``: the ``[B]`` weight of each sample's loss;
* ``margin_logits(logits, targets)``: the logits the method's loss sees (LDAM subtracts margins);
* ``build_head(num_classes)``: the classifier head it is defined with (LDAM: a cosine head);
* ``example_offsets(model, y_pred, targets, candidates)``: learned additions to the weights of
  this step (meta weighting), or None;
* ``after_train_step()``: bookkeeping once per training step;
* ``callbacks()``: the Keras callbacks it needs during ``fit`` (re-estimating the class counts,
  switching a deferred weighting on), which ``PLLModel.fit`` adds by itself.

The class weights, margins and on/off switch are non-trainable variables that the callbacks
assign, so the compiled step sees every change without being retraced.

Subclasses set ``kind`` (their registered name), ``uses_class_counts`` (their weights or margins
follow the class counts, refreshed by :class:`EstimateClassCounts`) and ``deferred`` (they switch
on at a start epoch, :class:`WeightingStart`), and override the hooks they change.
"""

import inspect

import keras
import numpy as np
from keras import ops

from ltpll import components
from ltpll.errors import LTPLLError

# Counts below one image are clamped: an estimated count can approach 0, where both the
# class-balanced weight and the LDAM margin grow without bound.
MIN_COUNT = 1.0


@keras.saving.register_keras_serializable(package="ltpll")
class LossWeighting(keras.layers.Layer):
    """The identity weighting (``--loss-weighting none``) and the base of the others.

    Args:
        num_classes: C.
        oracle_counts: true class counts to use instead of estimating them from the confidence
            table (``--oracle-counts``); None estimates.
    """

    kind = "none"
    uses_class_counts = False
    deferred = False

    def __init__(self, num_classes=10, oracle_counts=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.oracle_counts = None if oracle_counts is None else [float(n) for n in oracle_counts]
        if self.oracle_counts is not None and len(self.oracle_counts) != self.num_classes:
            raise LTPLLError(f"--oracle-counts needs {self.num_classes} class counts; received "
                             f"{len(self.oracle_counts)}")
        # The variables keep the order of the single weighting layer of config version 2
        # (class weights, margins, a subclass's own, the switch), so its saved models load.
        self.class_weights = self._state("class_weights", (self.num_classes,), "ones")
        self.margins = self._state("margins", (self.num_classes,), "zeros")
        self.add_state()
        # 1 once the weighting applies (from the start, or from its start epoch).
        self.active = self._state("active", (), "zeros" if self.deferred else "ones")
        self.built = True

    def _state(self, name, shape, initializer, dtype="float32"):
        return self.add_weight(shape=shape, initializer=initializer, dtype=dtype,
                               trainable=False, autocast=False,
                               aggregation="only_first_replica", name=name)

    def add_state(self):
        """Creates a subclass's own variables (between the margins and the switch)."""

    @classmethod
    def from_options(cls, context, oracle_counts=False, **options):
        """The weighting for a run: its options plus what the data says (:class:`BuildContext`).

        Raises:
            LTPLLError: for ``--oracle-counts`` without known class counts, or a bad option.
        """
        counts = None
        if oracle_counts:
            if context.class_counts is None:
                raise LTPLLError("--oracle-counts needs the true class counts of the training set")
            counts = [float(n) for n in context.class_counts]
        return cls(num_classes=context.num_classes, oracle_counts=counts,
                   name="loss_weighting", **options)

    # --- what the training step asks ---------------------------------------------------------

    def example_weights(self, targets, logits_w):
        """``[B]`` weight of each sample's loss."""
        return ops.ones_like(targets[:, 0])

    def margin_logits(self, logits, targets):
        """The logits the method's loss sees."""
        return logits

    def build_head(self, num_classes):
        """The classifier head, named ``head``."""
        return keras.layers.Dense(num_classes, name="head")

    def example_offsets(self, model, y_pred, targets, candidates):
        """Per-sample additions to this step's weights, or None."""
        return None

    def after_train_step(self):
        """Called once per training step, after the loss."""

    def callbacks(self):
        """The callbacks this weighting needs during ``fit``."""
        needed = []
        if self.uses_class_counts:
            needed.append(EstimateClassCounts())
        if self.deferred:
            needed.append(WeightingStart())
        return needed

    # --- class counts and the switch ---------------------------------------------------------

    def refresh(self, counts):
        """Recomputes the count-dependent state from (estimated) class counts, or the oracle's."""
        counts = self.oracle_counts if self.oracle_counts is not None else counts
        self.set_counts(np.maximum(np.asarray(counts, dtype=np.float64), MIN_COUNT))

    def set_counts(self, counts):
        """Assigns the state that follows the class counts (clamped to at least one image);
        a subclass calls ``super().set_counts(counts)`` so several can combine (LDAM-DRW)."""

    def start_epoch(self, epochs):
        """The (0-based) epoch a deferred weighting switches on; 0 for the others."""
        return 0

    # --- serialisation -----------------------------------------------------------------------

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "oracle_counts": self.oracle_counts}

    @classmethod
    def from_config(cls, config):
        if "kind" in config:  # config version 2: one layer for every weighting
            return _from_version_2(config)
        return cls(**config)


def _from_version_2(config):
    """The weighting class that replaces version 2's ``LossWeighting(kind=...)``, with its
    arguments renamed (``cb_beta`` -> ``beta``...) and those it does not take dropped."""
    config = dict(config)
    target = components.get("weighting", config.pop("kind")).load()
    renamed = {"cb_beta": "beta", "focal_gamma": "gamma", "meta_step": "step_size"}
    config = {renamed.get(key, key): value for key, value in config.items()}
    accepted = set()
    for klass in target.__mro__:
        if klass is keras.layers.Layer:
            break
        accepted |= set(inspect.signature(klass.__init__).parameters)
    layer_keys = {"name", "trainable", "dtype"}
    return target(**{k: v for k, v in config.items() if k in accepted or k in layer_keys})


def estimated_class_counts(confidence):
    """Expected samples per class under the confidence table: its column sums (float64)."""
    return np.asarray(ops.convert_to_numpy(ops.sum(ops.cast(confidence, "float32"), axis=0)),
                      dtype=np.float64)


class EstimateClassCounts(keras.callbacks.Callback):
    """At the start of every epoch, re-estimates the class counts from the confidence table and
    refreshes the weighting's count-dependent state (a host round trip once per epoch)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.weighting.refresh(estimated_class_counts(self.model.confidence))


class WeightingStart(keras.callbacks.Callback):
    """Switches a deferred weighting (``ldam-drw``, ``meta``) on from a given epoch, by assigning
    its ``active`` variable.

    Args:
        start_epoch: 0-based count of epochs trained without it; None takes the weighting's own
            (its ``start`` option, or its default share of the run's epochs).
    """

    def __init__(self, start_epoch=None):
        super().__init__()
        if start_epoch is not None and start_epoch < 0:
            raise LTPLLError(f"the weighting start epoch must be >= 0; received {start_epoch}")
        self.start_epoch = None if start_epoch is None else int(start_epoch)

    def on_epoch_begin(self, epoch, logs=None):
        weighting = self.model.weighting
        start = self.start_epoch
        if start is None:
            start = weighting.start_epoch(int(self.params.get("epochs", 1)))
        weighting.active.assign(1.0 if epoch >= start else 0.0)
