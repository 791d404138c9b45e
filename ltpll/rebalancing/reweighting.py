"""Loss reweighting for long tails, adapted to candidate sets (``--loss-weighting``).

The classic long-tail losses all need to know each sample's class and the class counts; with
candidate sets neither is known. Here:

* a sample's class weight is the expectation of the class weights under its confidence row,
  ``w_i = sum_y target_iy * w_y`` (for a one-hot row: exactly ``w_{y_i}``);
* the class counts are estimated once per epoch from the confidence table (its column sums: the
  expected number of samples of each class), or are the true counts with ``--oracle-counts``.

Weightings (each composes with every PLL method, which supplies per-sample losses):

* ``cb``: class-balanced weights (Cui et al., CVPR 2019), ``w_y = (1 - beta) / (1 - beta^n_y)``
  normalised to sum to C, from the start;
* ``focal``: the focal factor (Lin et al., ICCV 2017) ``(1 - p_t)^gamma`` where ``p_t`` is the
  probability the weak view gives the target row (``sum_y target_y p_y``; for a one-hot row the
  usual ``p_y``). Gradients flow through the factor, as in the focal loss;
* ``ldam``: label-distribution-aware margins (Cao et al., NeurIPS 2019),
  ``Delta_y`` proportional to ``n_y^(-1/4)``, the largest 0.5, subtracted (times the logit scale
  ``s``, ``--ldam-scale``, the authors' 30) from the target's logits, ``logits - s * target * Delta``. The head is then a cosine
  classifier with scale ``s`` (:class:`~ltpll.models.heads.CosineHead`), as in the authors' code;
* ``ldam-drw``: LDAM plus deferred re-weighting: class-balanced weights switched on at
  ``--drw-start`` (default: after 80% of the epochs, the authors' 160 of 200);
* ``meta``: class-balanced weights plus per-sample offsets learned on a clean balanced dev set
  (Jamal et al., CVPR 2020; :mod:`ltpll.rebalancing.meta_weights`), from ``--meta-start``.

The weights, margins and on/off switch are non-trainable variables assigned by the
:class:`EstimateClassCounts` and :class:`WeightingStart` callbacks, so the compiled step sees
every change without being retraced.
"""

import keras
import numpy as np
from keras import ops

from ltpll.errors import LTPLLError

LOSS_WEIGHTINGS = ("none", "cb", "focal", "ldam", "ldam-drw", "meta")
# Weightings whose class weights wait for a start epoch (the others start at epoch 0).
_DEFERRED = ("ldam-drw", "meta")
_MARGINS = ("ldam", "ldam-drw")
_CLASS_WEIGHTS = ("cb", "ldam-drw", "meta")
# Counts below one image are clamped: an estimated count can approach 0, where both the
# class-balanced weight and the LDAM margin grow without bound.
_MIN_COUNT = 1.0


def class_balanced_weights(counts, beta=0.9999):
    """``(1 - beta) / (1 - beta^n_y)`` normalised to sum to C: the inverse effective number.

    Args:
        counts: ``[C]`` (estimated) samples per class; fractional counts are fine.
        beta: in [0, 1). 0 gives uniform weights; towards 1, inverse class frequency.
    """
    counts = np.maximum(np.asarray(counts, dtype=np.float64), _MIN_COUNT)
    if beta == 0:
        weights = np.ones_like(counts)
    else:
        # -expm1(n log beta) = 1 - beta^n, accurate for beta close to 1.
        weights = (1.0 - beta) / -np.expm1(counts * np.log(beta))
    return (weights * len(counts) / weights.sum()).astype(np.float32)


def ldam_margins(counts, max_margin=0.5):
    """LDAM margins ``Delta_y`` proportional to ``n_y^(-1/4)``, the largest equal to ``max_margin``."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), _MIN_COUNT)
    margins = counts ** -0.25
    return (margins * max_margin / margins.max()).astype(np.float32)


def validate_weighting(name, cb_beta=0.9999, focal_gamma=2.0, max_margin=0.5, scale=30.0):
    """Raises a one-line LTPLLError for a bad weighting name or option."""
    if name not in LOSS_WEIGHTINGS:
        raise LTPLLError(f"unknown --loss-weighting {name!r}; choose one of "
                         f"{', '.join(LOSS_WEIGHTINGS)}")
    if not 0.0 <= cb_beta < 1.0:
        raise LTPLLError(f"--cb-beta must be in [0, 1); received {cb_beta}")
    if not focal_gamma >= 0:
        raise LTPLLError(f"--focal-gamma must be >= 0; received {focal_gamma}")
    if not max_margin > 0:
        raise LTPLLError(f"the largest LDAM margin must be > 0; received {max_margin}")
    if not scale > 0:
        raise LTPLLError(f"--ldam-scale must be > 0; received {scale}")


@keras.saving.register_keras_serializable(package="ltpll")
class LossWeighting(keras.layers.Layer):
    """Per-sample loss weights and logit margins for one ``--loss-weighting``.

    Args:
        kind: the weighting, one of :data:`LOSS_WEIGHTINGS`.
        num_classes: C.
        cb_beta: beta of the class-balanced weights.
        focal_gamma: gamma of the focal factor.
        max_margin: the largest LDAM margin.
        scale: LDAM logit scale (the cosine head's scale).
        oracle_counts: true class counts to use instead of estimating them (``--oracle-counts``).
        dev_size, image_shape: size and image shape of the clean dev set (``meta`` only); its
            images and labels are variables, set with :meth:`set_dev`, saved with the model.
        dev_batch: dev images per meta step (the authors' 100; all of them if fewer).
        meta_step: the step size on the offsets (the authors' 0.01).
        seed: seed of the dev batch sampling.
    """

    def __init__(self, kind="none", num_classes=10, cb_beta=0.9999, focal_gamma=2.0,
                 max_margin=0.5, scale=30.0, oracle_counts=None, dev_size=0, image_shape=None,
                 dev_batch=100, meta_step=0.01, seed=None, **kwargs):
        super().__init__(**kwargs)
        validate_weighting(kind, cb_beta, focal_gamma, max_margin, scale)
        self.kind = kind
        self.num_classes = int(num_classes)
        self.cb_beta = float(cb_beta)
        self.focal_gamma = float(focal_gamma)
        self.max_margin = float(max_margin)
        self.scale = float(scale)
        self.oracle_counts = None if oracle_counts is None else [float(n) for n in oracle_counts]
        if self.oracle_counts is not None and len(self.oracle_counts) != self.num_classes:
            raise LTPLLError(f"--oracle-counts needs {self.num_classes} class counts; received "
                             f"{len(self.oracle_counts)}")
        self.class_weights = self.add_weight(
            shape=(self.num_classes,), initializer="ones", trainable=False, autocast=False,
            aggregation="only_first_replica", name="class_weights")
        self.margins = self.add_weight(
            shape=(self.num_classes,), initializer="zeros", trainable=False, autocast=False,
            aggregation="only_first_replica", name="margins")
        self.dev_size = int(dev_size)
        self.image_shape = None if image_shape is None else [int(d) for d in image_shape]
        self.dev_batch = int(dev_batch)
        self.meta_step = float(meta_step)
        self.seed = seed
        if kind == "meta":
            if self.dev_size < 1 or self.image_shape is None:
                raise LTPLLError("--loss-weighting meta needs a dev set (--dev-per-class >= 1)")
            if self.dev_batch < 1:
                raise LTPLLError(f"the meta dev batch must be >= 1; received {dev_batch}")
            # Pixel values 0..255 as float32: small (100 CIFAR images are 1.2 MB) and readable on
            # every device, which uint8 variables are not.
            self.dev_images = self.add_weight(
                shape=(self.dev_size, *self.image_shape), initializer="zeros", trainable=False,
                autocast=False, aggregation="only_first_replica", name="dev_images")
            self.dev_labels = self.add_weight(
                shape=(self.dev_size,), initializer="zeros", dtype="int32", trainable=False,
                autocast=False, aggregation="only_first_replica", name="dev_labels")
            self.dev_seed = keras.random.SeedGenerator(seed)
            # The virtual step uses the optimizer's current learning rate, but the JAX trainer
            # does not let the loss read optimizer state: the model counts its own steps (to
            # evaluate a schedule) and WeightingStart copies a constant rate in each epoch.
            self.steps = self.add_weight(
                shape=(), initializer="zeros", trainable=False, autocast=False,
                aggregation="only_first_replica", name="steps")
            self.constant_lr = self.add_weight(
                shape=(), initializer="zeros", trainable=False, autocast=False,
                aggregation="only_first_replica", name="constant_lr")
        # 1 once the class weights apply (from the start, or from --drw-start / --meta-start).
        self.active = self.add_weight(
            shape=(), initializer="ones" if kind not in _DEFERRED else "zeros", trainable=False,
            autocast=False, aggregation="only_first_replica", name="active")
        self.built = True

    @property
    def uses_margins(self):
        return self.kind in _MARGINS

    @property
    def is_meta(self):
        return self.kind == "meta"

    @property
    def is_deferred(self):
        return self.kind in _DEFERRED

    def set_dev(self, images, labels):
        """Stores the dev set: uint8 images ``[dev_size, H, W, 3]`` and their true labels."""
        images, labels = np.asarray(images), np.asarray(labels)
        if images.shape != (self.dev_size, *self.image_shape) or labels.shape != (self.dev_size,):
            raise LTPLLError(f"the dev set must be {self.dev_size} images of shape "
                             f"{tuple(self.image_shape)}; received {images.shape}")
        self.dev_images.assign(images.astype(np.float32))
        self.dev_labels.assign(labels.astype(np.int32))

    def dev_batch_indices(self):
        """Indices of this step's dev batch: ``dev_batch`` of the dev images, at random."""
        order = keras.random.shuffle(ops.arange(self.dev_size), seed=self.dev_seed)
        return order[: min(self.dev_batch, self.dev_size)]

    def learning_rate(self, optimizer):
        """The optimizer's learning rate at the current step, for the virtual step."""
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
        schedule = getattr(optimizer, "_learning_rate", None)
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            return ops.cast(schedule(self.steps), "float32")
        return self.constant_lr

    def refresh(self, counts):
        """Recomputes the class weights and margins from (estimated) class counts."""
        counts = self.oracle_counts if self.oracle_counts is not None else counts
        if self.kind in _CLASS_WEIGHTS:
            self.class_weights.assign(class_balanced_weights(counts, self.cb_beta))
        if self.uses_margins:
            self.margins.assign(ldam_margins(counts, self.max_margin))

    def margin_logits(self, logits, targets):
        """``logits - s * target * Delta`` (LDAM); the logits unchanged otherwise."""
        if not self.uses_margins:
            return logits
        return logits - self.scale * targets * self.margins

    def example_weights(self, targets, logits_w):
        """``[B]`` weight of each sample's loss: the class weight expected under its target
        row (1 while the weighting is off), times the focal factor."""
        if self.kind == "none":
            return ops.ones_like(targets[:, 0])
        weights = ops.sum(targets * self.class_weights, axis=-1)
        weights = self.active * weights + (1.0 - self.active)
        if self.kind == "focal":
            p_target = ops.sum(targets * ops.softmax(logits_w, axis=-1), axis=-1)
            weights = weights * ops.power(ops.maximum(1.0 - p_target, 0.0), self.focal_gamma)
        return weights

    def get_config(self):
        return {
            **super().get_config(), "kind": self.kind, "num_classes": self.num_classes,
            "cb_beta": self.cb_beta, "focal_gamma": self.focal_gamma,
            "max_margin": self.max_margin, "scale": self.scale,
            "oracle_counts": self.oracle_counts, "dev_size": self.dev_size,
            "image_shape": self.image_shape, "dev_batch": self.dev_batch,
            "meta_step": self.meta_step, "seed": self.seed,
        }


def estimated_class_counts(confidence):
    """Expected samples per class under the confidence table: its column sums (float64)."""
    return np.asarray(ops.convert_to_numpy(ops.sum(ops.cast(confidence, "float32"), axis=0)),
                      dtype=np.float64)


class EstimateClassCounts(keras.callbacks.Callback):
    """At the start of every epoch, re-estimates the class counts from the confidence table and
    refreshes the weighting's class weights and margins (a host round trip once per epoch)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.weighting.refresh(estimated_class_counts(self.model.confidence))


class WeightingStart(keras.callbacks.Callback):
    """Switches a deferred weighting (``ldam-drw``, ``meta``) on from a given epoch, by assigning
    the weighting's ``active`` variable (0-based epoch count trained without it)."""

    def __init__(self, start_epoch):
        super().__init__()
        if start_epoch < 0:
            raise LTPLLError(f"the weighting start epoch must be >= 0; received {start_epoch}")
        self.start_epoch = int(start_epoch)

    def on_epoch_begin(self, epoch, logs=None):
        weighting = self.model.weighting
        if weighting.is_deferred:
            weighting.active.assign(1.0 if epoch >= self.start_epoch else 0.0)
        if weighting.is_meta:
            learning_rate = getattr(self.model.optimizer, "learning_rate", 0.0)
            weighting.constant_lr.assign(float(ops.convert_to_numpy(learning_rate)))
