"""Meta-learned per-example weights (Jamal et al., CVPR 2020, "Rethinking class-balanced methods
for long-tailed visual recognition from a domain adaptation perspective"), ``--loss-weighting
meta``.

Each sample's loss weight is its class-balanced weight plus a learned offset, ``w_i + eps_i``.
Every step the offsets are found afresh, as the authors (and Ren et al.'s learning-to-reweight
before them) do:

1. ``eps = 0``; a *virtual* plain-SGD step (no momentum, no weight decay, the current learning
   rate) on the batch-summed weighted training loss gives
   ``theta~(eps) = theta - lr * grad_theta sum_i (w_i + eps_i) loss_i(theta)``;
2. the loss of ``theta~(eps)`` on a batch of the small balanced clean dev set is differentiated
   with respect to ``eps`` (a gradient through a gradient: second order, done by the backend's
   autodiff, :func:`ltpll.autodiff.grad`);
3. ``eps := -step_size * dL_dev/d eps`` (step size 0.01; no clipping, no normalisation).

The real step then trains with the weights ``w_i + eps_i``. It costs about three normal steps:
the virtual forward and backward pass, the dev forward pass, and the backward pass through both.
Before ``start`` (default: half the run) the step is plain and a ``cond`` skips the meta work.

The dev set (``--dev-per-class`` clean images per class, held out of training) lives in the layer
as variables, so it is saved with the model.
"""

import keras
import numpy as np
from keras import ops

from ltpll.autodiff import grad
from ltpll.components import check_options
from ltpll.errors import LTPLLError
from ltpll.weighting.class_balanced import ClassBalanced

# The authors' step on eps.
META_STEP_SIZE = 0.01


def meta_offsets(train_loss, dev_loss, params, batch_size, learning_rate,
                 step_size=META_STEP_SIZE):
    """The learned offsets ``eps`` ``[B]`` of one step.

    Args:
        train_loss: ``train_loss(params, eps)`` -> the batch-summed weighted training loss
            ``sum_i (w_i + eps_i) loss_i(params)``.
        dev_loss: ``dev_loss(params)`` -> the (mean) loss on the dev batch.
        params: list of the trainable parameter tensors ``theta``.
        batch_size: B, the length of ``eps``.
        learning_rate: the virtual step's learning rate (the optimizer's current one), or a
            list of one per parameter (a backbone at ``--backbone-lr-scale``).
        step_size: the step on ``eps``.

    Returns:
        ``-step_size * dL_dev(theta~(eps))/d eps`` at ``eps = 0``, without gradient.
    """
    params = list(params)
    rates = (list(learning_rate) if isinstance(learning_rate, (list, tuple))
             else [learning_rate] * len(params))

    def dev_loss_after_virtual_step(eps):
        grads = grad(lambda theta: train_loss(theta, eps), params)
        return dev_loss([p - rate * g for p, rate, g in zip(params, rates, grads)])

    eps_grad = grad(dev_loss_after_virtual_step, ops.zeros((batch_size,), dtype="float32"))
    return ops.stop_gradient(-step_size * eps_grad)


@keras.saving.register_keras_serializable(package="ltpll")
class MetaWeighting(ClassBalanced):
    """Class-balanced weights (:class:`ClassBalanced`) plus offsets learned every step on a
    clean dev set.

    Args:
        start: 0-based epoch the meta step starts (``--meta-start``); None: half the run.
        dev_batch: dev images per meta step (``--meta-dev-batch``; all of them if fewer).
        dev_size, image_shape: size and image shape of the dev set; set its images and labels
            with :meth:`set_dev`.
        step_size: the step on the offsets (the authors' 0.01).
        seed: seed of the dev batch sampling.
    """

    kind = "meta"
    deferred = True

    def __init__(self, start=None, dev_batch=100, dev_size=0, image_shape=None,
                 step_size=META_STEP_SIZE, seed=None, **kwargs):
        checked = check_options("weighting", "meta", start=start, dev_batch=dev_batch)
        self.start, self.dev_batch = checked["start"], checked["dev_batch"]
        self.dev_size = int(dev_size)
        self.image_shape = None if image_shape is None else [int(d) for d in image_shape]
        if self.dev_size < 1 or self.image_shape is None:
            raise LTPLLError("--loss-weighting meta needs a dev set (--dev-per-class >= 1)")
        self.step_size = float(step_size)
        self.seed = seed
        super().__init__(**kwargs)

    def add_state(self):
        # Pixel values 0..255 as float32: small (100 CIFAR images are 1.2 MB) and readable on
        # every device, which uint8 variables are not.
        self.dev_images = self._state("dev_images", (self.dev_size, *self.image_shape), "zeros")
        self.dev_labels = self._state("dev_labels", (self.dev_size,), "zeros", dtype="int32")
        self.dev_seed = keras.random.SeedGenerator(self.seed)
        # The virtual step uses the optimizer's current learning rate, but the JAX trainer does
        # not let the loss read optimizer state: the layer counts the steps (to evaluate a
        # schedule) and MetaLearningRate copies a constant rate in each epoch.
        self.steps = self._state("steps", (), "zeros")
        self.constant_lr = self._state("constant_lr", (), "zeros")

    @classmethod
    def from_options(cls, context, oracle_counts=False, **options):
        if context.dev_images is None or not len(context.dev_images):
            raise LTPLLError("--loss-weighting meta needs a clean dev set: --dev-per-class "
                             "must be >= 1")
        weighting = super().from_options(
            context, oracle_counts=oracle_counts, dev_size=len(context.dev_images),
            image_shape=tuple(context.dev_images.shape[1:]),
            seed=None if context.seed is None else context.seed + 3, **options)
        weighting.set_dev(context.dev_images, context.dev_labels)
        return weighting

    def set_dev(self, images, labels):
        """Stores the dev set: uint8 images ``[dev_size, H, W, 3]`` and their true labels."""
        images, labels = np.asarray(images), np.asarray(labels)
        if images.shape != (self.dev_size, *self.image_shape) or labels.shape != (self.dev_size,):
            raise LTPLLError(f"the dev set must be {self.dev_size} images of shape "
                             f"{tuple(self.image_shape)}; received {images.shape}")
        self.dev_images.assign(images.astype(np.float32))
        self.dev_labels.assign(labels.astype(np.int32))

    def start_epoch(self, epochs):
        return self.start if self.start is not None else epochs // 2

    def callbacks(self):
        return [*super().callbacks(), MetaLearningRate()]

    def after_train_step(self):
        self.steps.assign(self.steps + 1.0)

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

    def example_offsets(self, model, y_pred, targets, candidates):
        # Random draws advance a seed variable: outside the cond, whose branches must not write
        # state (JAX traces them as separate functions).
        dev_index = self.dev_batch_indices()
        return ops.cond(
            self.active > 0,
            lambda: self._offsets(model, y_pred["views"], targets, candidates, dev_index),
            lambda: ops.zeros_like(targets[:, 0]),
        )

    def _offsets(self, model, views, targets, candidates, dev_index):
        """This step's offsets: a virtual SGD step on the weighted loss of the batch's plain
        views, judged on a dev batch, with the model's backbone and head run statelessly on the
        virtual parameters."""
        layers = (model.backbone, model.head)
        params = [v.value for layer in layers for v in layer.trainable_variables]
        frozen = [[v.value for v in layer.non_trainable_variables] for layer in layers]
        split = len(model.backbone.trainable_variables)

        def logits_of(theta, images):
            features, _ = model.backbone.stateless_call(theta[:split], frozen[0], images,
                                                        training=True)
            logits, _ = model.head.stateless_call(theta[split:], frozen[1], features)
            return ops.cast(logits, "float32")

        base_weights = ops.stop_gradient(self.example_weights(targets, None))
        method_views = model.method.views

        def train_loss(theta, eps):
            logits = ops.split(logits_of(theta, views), method_views, axis=0)
            losses = model.example_losses(
                logits[0], logits[1] if method_views == 2 else None, targets, candidates)
            return ops.sum((base_weights + eps) * losses)

        dev_images = model.normalise(ops.take(self.dev_images, dev_index, axis=0) / 255.0)
        dev_labels = ops.take(self.dev_labels, dev_index, axis=0)

        def dev_loss(theta):
            return ops.mean(keras.losses.sparse_categorical_crossentropy(
                dev_labels, logits_of(theta, dev_images), from_logits=True))

        # The virtual step moves the backbone at --backbone-lr-scale, as the real one does.
        learning_rate = self.learning_rate(model.optimizer)
        scale = getattr(getattr(model.optimizer, "inner_optimizer", model.optimizer),
                        "backbone_lr_scale", 1.0)
        rates = [learning_rate * scale] * split + [learning_rate] * (len(params) - split)
        return meta_offsets(train_loss, dev_loss, params, ops.shape(targets)[0], rates,
                            self.step_size)

    def get_config(self):
        return {**super().get_config(), "start": self.start,
                "dev_batch": self.dev_batch, "dev_size": self.dev_size,
                "image_shape": self.image_shape, "step_size": self.step_size, "seed": self.seed}


class MetaLearningRate(keras.callbacks.Callback):
    """Copies the optimizer's (constant) learning rate into the weighting each epoch, for the
    virtual step (a schedule is evaluated in the step from the layer's own step count)."""

    def on_epoch_begin(self, epoch, logs=None):
        learning_rate = getattr(self.model.optimizer, "learning_rate", 0.0)
        self.model.weighting.constant_lr.assign(float(ops.convert_to_numpy(learning_rate)))
