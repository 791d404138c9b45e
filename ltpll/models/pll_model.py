"""PLLModel: a Keras model whose training step does partial-label disambiguation.

One training step, all inside the compiled function (XLA on TensorFlow, ``jit`` on JAX):

1. ``call(images, training=True)`` augments the uint8 batch twice on the device (weak and strong
   view), runs both views through the backbone in one batch and the linear head, and returns the
   logits and features of each view;
2. ``compute_loss`` reads the batch's confidence rows from the table (a non-trainable ``N x C``
   variable, like BatchNormalization's moving statistics, stored in float32 or float16 and read
   into float32), computes the method's loss (CORR by default), folds the features into the
   rebalancer's state (RECORDS: the moving feature mean), weights each sample's loss by the loss
   weighting (class-balanced, focal, LDAM margins, meta-learned offsets), and writes the method's
   new confidence rows back (cast to the table's dtype), computed from debiased logits
   ``logits - log prior`` restricted to each sample's *original* candidate set.

Prediction is debiased in ``call(training=False)``, so ``predict``, ``evaluate`` and exported
models all return ``logits - log prior`` without the caller having to remember.

The rebalancer and the loss weighting move during training by callbacks of their own (a
temperature ramp, per-epoch class counts, a start epoch); ``fit`` adds them, so a model trains
right without the caller knowing which each one needs.

The logic lives in ``call`` and ``compute_loss`` only; the stock per-backend ``train_step`` of
Keras drives it, so TensorFlow and JAX run the same code (on JAX, ``compute_loss`` runs inside a
stateless scope and its variable writes come back as the new non-trainable state).
"""

import keras
import numpy as np
from keras import ops

from ltpll import distribution
from ltpll.disambiguation import get_method
from ltpll.errors import LTPLLError
from ltpll.models import CONFIDENCE_DTYPES
from ltpll.models.augment import StrongAugment, WeakAugment
from ltpll.models.backbones import set_input_statistics
from ltpll.rebalancing.base import NoRebalancing
from ltpll.weighting.base import LossWeighting

# Per-channel statistics of CIFAR-10's training images; train() replaces them with the statistics
# of the user's own training set.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@keras.saving.register_keras_serializable(package="ltpll")
class MaskedAccuracy(keras.metrics.Metric):
    """Top-1 accuracy over the samples whose label is known (label >= 0).

    During training the labels are the hidden true labels, which exist for benchmark data
    (CIFAR-LT with generated candidates) but not for a user's own candidate sets (-1).
    """

    def __init__(self, name="acc", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, labels, logits, sample_weight=None):
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        known = ops.cast(labels >= 0, "float32")
        hits = ops.cast(ops.equal(ops.argmax(logits, axis=-1), labels), "float32") * known
        self.correct.assign(self.correct + ops.sum(hits))
        self.count.assign(self.count + ops.sum(known))

    def result(self):
        return self.correct / ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.correct.assign(0.0)
        self.count.assign(0.0)


@keras.saving.register_keras_serializable(package="ltpll")
class PLLModel(keras.Model):
    """A classifier trained from candidate label sets.

    Args:
        backbone: a Keras model from normalised float images ``[B, H, W, 3]`` to features
            ``[B, D]`` (see :mod:`ltpll.models.backbones`).
        num_classes: number of classes C.
        num_samples: number of training samples N (rows of the confidence table).
        image_shape: ``(H, W, 3)`` of the uint8 input images.
        method: PLL method name (``"corr"``), its config dict (``{"name": "lw", "beta": 1}``)
            or a :class:`DisambiguationMethod`.
        rebalancer: ``None`` (plain PLL), a :class:`~ltpll.Records` callback (pass the same
            object to ``fit(callbacks=...)`` to log the prior), or a rebalancer layer
            (:mod:`ltpll.rebalancing`; ``ltpll.components.build("rebalancer", name, context)``).
        mixup: add a Mixup term: each view is mixed with a shuffled copy of the batch with
            ``lambda = max(l, 1 - l)``, ``l ~ Beta(4, 4)``, and trained by the method's loss
            towards the same mix of the two samples' confidence targets (the RECORDS authors'
            variant). Only once confidence updates have started, as in their code.
        mixup_weight: weight of the mixed term (``--mixup-weight``).
        confidence_dtype: storage dtype of the ``N x C`` confidence table, ``"float32"`` or
            ``"float16"`` (``--confidence-dtype``; half the memory, see the README's Scaling
            section). Rows are always read into float32 for the arithmetic; a float16 row is
            renormalised over its candidates after the read, and written back rounded.
        weighting: a loss weighting layer (:mod:`ltpll.weighting`: class-balanced, focal, LDAM
            margins, meta-learned offsets; ``--loss-weighting``); None weighs every sample 1.
            It also decides the classifier head (LDAM's is a cosine head). The Mixup term is
            weighted by the class weights but not by the meta-learned offsets.
        mean, std: per-channel normalisation applied after augmentation, in [0, 1] units.
        weight_decay: coupled L2 coefficient added to the loss (PyTorch SGD's weight_decay).
        seed: seed of the augmentation layers.
        weak_augment, strong_augment: layers mapping a uint8 batch to float images in [0, 1];
            default :class:`WeakAugment` and :class:`StrongAugment` (the RECORDS policy).

    Confidence updates run from the first step; ``fit(callbacks=[UpdateStart(k)])`` holds the
    table still for the first ``k`` epochs.

    Example:
        ```python
        records = ltpll.Records(momentum=0.9)
        model = ltpll.PLLModel(build_backbone("resnet-small"), num_classes=10,
                               num_samples=len(candidates), rebalancer=records)
        model.set_candidates(candidates)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        model.fit(train_dataset(images, candidates, labels, 256, seed=0),
                  epochs=10, callbacks=[records])
        probabilities = ops.softmax(model.predict(test_images))   # debiased
        ```
    """

    def __init__(
        self,
        backbone,
        num_classes,
        num_samples,
        image_shape=(32, 32, 3),
        method="corr",
        rebalancer=None,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        weight_decay=0.0,
        seed=None,
        weak_augment=None,
        strong_augment=None,
        mixup=False,
        mixup_weight=1.0,
        confidence_dtype="float32",
        weighting=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # === Validate arguments ===
        if int(num_classes) < 2:
            raise LTPLLError(f"need at least 2 classes; received num_classes={num_classes}")
        if int(num_samples) < 1:
            raise LTPLLError(f"need at least 1 training sample; received {num_samples}")
        if len(image_shape) != 3 or image_shape[-1] != 3:
            raise LTPLLError(f"images must be H x W x 3; received image_shape={image_shape}")
        if weight_decay < 0:
            raise LTPLLError(f"weight decay must be >= 0; received {weight_decay}")
        if mixup_weight < 0:
            raise LTPLLError(f"--mixup-weight must be >= 0; received {mixup_weight}")
        if not isinstance(confidence_dtype, str) or confidence_dtype not in CONFIDENCE_DTYPES:
            raise LTPLLError(
                f"--confidence-dtype must be one of {', '.join(CONFIDENCE_DTYPES)}; "
                f"received {confidence_dtype!r}"
            )

        # === Config ===
        self.num_classes = int(num_classes)
        self.num_samples = int(num_samples)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.method = get_method(method)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.weight_decay = float(weight_decay)
        self.seed = seed
        self.mixup = bool(mixup)
        self.mixup_weight = float(mixup_weight)
        self.confidence_dtype = confidence_dtype

        # === Layers ===
        self.backbone = backbone
        # A pretrained network's own preprocessing undoes this model's normalisation first.
        set_input_statistics(backbone, self.mean, self.std)
        self.weighting = weighting if weighting is not None else LossWeighting(
            num_classes=self.num_classes, name="loss_weighting")
        self.head = self.weighting.build_head(self.num_classes)
        self.weak_augment = weak_augment or WeakAugment(seed=seed, name="weak_augment")
        self.strong_augment = strong_augment or StrongAugment(
            seed=None if seed is None else seed + 1, name="strong_augment"
        )
        # A callback that brings its rebalancer layer (ltpll.Records): the model takes the layer.
        rebalancer = getattr(rebalancer, "layer", rebalancer)
        self.rebalancer = rebalancer if rebalancer is not None else NoRebalancing(name="no_rebalancing")
        self.train_accuracy = MaskedAccuracy(name="acc")
        self.mixup_seed = keras.random.SeedGenerator(None if seed is None else seed + 2)
        self.build((None, *self.image_shape))

    # --- state ---------------------------------------------------------------------------

    def build(self, input_shape):
        feature_dim = int(self.backbone.output_shape[-1])
        for layer, shape in ((self.head, (None, feature_dim)), (self.rebalancer, (feature_dim,))):
            if not layer.built:  # a reloaded sub-layer arrives built
                layer.build(shape)
        self.confidence = self.add_weight(
            shape=(self.num_samples, self.num_classes),
            initializer=keras.initializers.Constant(1.0 / self.num_classes),
            dtype=self.confidence_dtype,
            trainable=False,
            autocast=False,
            # Each replica scatters the all-gathered rows of every replica: identical updates,
            # so one copy is taken (see ltpll.distribution).
            aggregation="only_first_replica",
            name="confidence",
        )
        # 1 while the table updates (from the start unless UpdateStart holds it still): a
        # variable, so the compiled step sees the switch.
        self.update_enabled = self.add_weight(
            shape=(), initializer="ones", trainable=False, autocast=False,
            aggregation="only_first_replica", name="update_enabled",
        )
        # A method's own state (SoLar's queue, HTC's heads): a layer of the model, so it is saved.
        state = self.method.build(self)
        if state is not None:
            self.method_state = state
        self.built = True

    def set_candidates(self, candidates):
        """Initialises the confidence table uniformly over each sample's candidate set.

        The rows are computed in float32 a block at a time and stored in the table's dtype, so a
        float16 table never needs a float32 ``N x C`` copy on the host besides the input.

        Raises:
            LTPLLError: if the shape is wrong or a row has no candidate.
        """
        candidates = np.asarray(candidates)
        if candidates.shape != (self.num_samples, self.num_classes):
            raise LTPLLError(
                f"candidates must have shape {(self.num_samples, self.num_classes)}; "
                f"received {candidates.shape}"
            )
        sizes = candidates.sum(axis=1, keepdims=True, dtype=np.float32)
        if np.any(sizes == 0):
            raise LTPLLError(f"{int(np.sum(sizes == 0))} samples have an empty candidate set")
        block = max(1, (1 << 24) // self.num_classes)  # 64 MB of float32 at a time

        def rows_of(start, stop):
            rows = candidates[start:stop].astype(np.float32) / sizes[start:stop]
            return rows.astype(self.confidence_dtype)

        target = self._sliceable_table()
        if target is not None:
            # TensorFlow, one device: write the table a block at a time, so the host never
            # holds a second N x C copy (iNaturalist 2018 in float32: 14 GB).
            for start in range(0, self.num_samples, block):
                stop = min(self.num_samples, start + block)
                target[start:stop].assign(rows_of(start, stop))
            return
        rows = np.empty(candidates.shape, dtype=self.confidence_dtype)
        for start in range(0, self.num_samples, block):
            rows[start:start + block] = rows_of(start, start + block)
        self.confidence.assign(rows)

    def _sliceable_table(self):
        """The table's ``tf.Variable`` where slices of it can be assigned in place (TensorFlow
        outside a distribution strategy), else None."""
        if keras.backend.backend() != "tensorflow":
            return None
        import tensorflow as tf

        value = getattr(self.confidence, "value", None)
        if tf.distribute.has_strategy() or not isinstance(value, tf.Variable):
            return None
        return value

    def estimated_prior(self):
        """The current class prior as a numpy ``[C]`` array (uniform without RECORDS)."""
        return np.exp(keras.ops.convert_to_numpy(self.rebalancer.log_prior(self.head, self.num_classes)))

    # --- forward -------------------------------------------------------------------------

    def normalise(self, images01):
        """Float images in [0, 1] normalised with the model's per-channel mean and std."""
        return normalise(images01, self.mean, self.std)

    def features(self, images, training=False):
        """Backbone features of a uint8 (0..255) batch, without augmentation."""
        images01 = ops.cast(images, "float32") / 255.0
        return self.backbone(self.normalise(images01), training=training)

    def call(self, images, training=False):
        if not training:
            features = self.features(images)
            logits = ops.cast(self.method.prediction_logits(self.head(features), features),
                              "float32")
            return self.rebalancer.prediction_logits(logits, self.head)
        # The views the method uses, then (with mixup) their mixes, through the backbone as one
        # batch, as the authors' code does: BatchNorm sees all of them together.
        views = [self.weak_augment(images)]
        if self.method.views == 2:
            views.append(self.strong_augment(images))
        views = [self.normalise(v) for v in views]
        # The plain views, for a weighting that runs them again (the meta step's virtual
        # step); compiled away when nothing reads them.
        outputs = {"views": ops.concatenate(views, axis=0)}
        if self.mixup and not self.method.owns_mixup:
            batch = ops.shape(images)[0]
            draw = _beta_4_4(self.mixup_seed)
            mix_lambda = ops.maximum(draw, 1.0 - draw)
            mix_perm = keras.random.shuffle(ops.arange(batch), seed=self.mixup_seed)
            views += [mix_lambda * v + (1.0 - mix_lambda) * ops.take(v, mix_perm, axis=0)
                      for v in views]
            outputs.update(mix_lambda=mix_lambda, mix_perm=mix_perm)
        features = self.backbone(ops.concatenate(views, axis=0), training=True)
        logits = ops.cast(self.head(features), "float32")
        features = ops.split(features, len(views), axis=0)
        logits = ops.split(logits, len(views), axis=0)
        names = ["w", "s"][: self.method.views]
        if self.mixup and not self.method.owns_mixup:
            names += [f"{name}_mix" for name in names]
        for name, view_logits, view_features in zip(names, logits, features):
            outputs[f"logits_{name}"] = view_logits
            if not name.endswith("mix"):
                outputs[f"features_{name}"] = view_features
        return outputs

    # --- loss and disambiguation -------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y_pred, dict):
            # Evaluation on (image, label) pairs: cross-entropy of the debiased logits.
            labels = ops.cast(ops.reshape(y, (-1,)), "int32")
            loss = ops.mean(
                keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
            )
            return distribution.scale_loss(loss)

        candidates = ops.cast(y["candidates"], "float32")
        index = ops.cast(ops.reshape(y["index"], (-1,)), "int32")
        stored, targets = self._read_rows(index)
        if self.method.step_targets:  # CC: the loss follows this step's own disambiguation
            targets = ops.stop_gradient(self._disambiguate(y_pred, candidates))
        loss = self.method.step_loss(
            TrainingStep(self, y_pred, targets, candidates, index, training))
        if loss is None:
            loss = self._default_loss(y_pred, targets, candidates)
        if self.weight_decay:
            loss = loss + coupled_l2(self.trainable_weights, self.weight_decay)
        # Regularizers and add_loss terms of the layers (a user's backbone may have them).
        for extra in self.losses:
            loss = loss + ops.sum(ops.cast(extra, "float32"))
        if training:
            self._update_state(y_pred, stored, candidates, index)
            self.weighting.after_train_step()
        return distribution.scale_loss(loss)

    def _default_loss(self, y_pred, targets, candidates):
        """The loss of a method without ``step_loss``: its weighted per-sample losses, plus the
        Mixup term."""
        offsets = self.weighting.example_offsets(self, y_pred, targets, candidates)
        loss = self._weighted_loss(
            y_pred["logits_w"], y_pred.get("logits_s"), targets, candidates, offsets
        )
        if self.mixup:
            loss = loss + self.mixup_weight * self.update_enabled * self._mixup_loss(
                y_pred, targets, candidates
            )
        return loss

    def _weighted_loss(self, logits_w, logits_s, targets, candidates, offsets=None):
        """The batch mean of the method's per-sample losses, weighted by the loss weighting
        (plus the meta-learned ``offsets``), on logits with the weighting's margins."""
        losses = self.example_losses(logits_w, logits_s, targets, candidates)
        weights = self.weighting.example_weights(targets, logits_w)
        if offsets is not None:
            weights = weights + offsets
        return ops.mean(weights * losses)

    def example_losses(self, logits_w, logits_s, targets, candidates):
        """``[B]`` per-sample losses of the method, on the weighting's margin logits."""
        margin = self.weighting.margin_logits
        return self.method.example_losses(
            margin(logits_w, targets), None if logits_s is None else margin(logits_s, targets),
            targets, candidates,
        )

    def _read_rows(self, index):
        """The batch's confidence rows: ``(stored, targets)``, both float32 ``[B, C]``.

        ``stored`` is the table's content as it is; ``targets`` is what the method sees. For a
        float32 table they are the same tensor. A float16 row carries a relative rounding error
        of up to 2**-11 per entry, so it sums to 1 only within about 5e-4; ``targets`` divides it
        by its sum so the method gets a distribution over the candidates again, as its contract
        says (non-candidates are exactly 0 in storage and stay 0).
        """
        stored = ops.cast(ops.take(self.confidence, index, axis=0), "float32")
        if self.confidence_dtype == "float32":
            return stored, stored
        total = ops.sum(stored, axis=-1, keepdims=True)
        return stored, stored / ops.maximum(total, 1e-30)

    def _mixup_loss(self, y_pred, targets, candidates):
        """The method's loss on the mixed views towards the same mix of targets.

        The candidate set of a mixed sample is the union of its two samples' sets.
        """
        mix_lambda, perm = y_pred["mix_lambda"], y_pred["mix_perm"]
        mixed_targets = mix_lambda * targets + (1.0 - mix_lambda) * ops.take(targets, perm, axis=0)
        mixed_candidates = ops.maximum(candidates, ops.take(candidates, perm, axis=0))
        return self._weighted_loss(
            y_pred["logits_w_mix"], y_pred.get("logits_s_mix"), mixed_targets, mixed_candidates
        )

    def _update_state(self, y_pred, stored, candidates, index):
        """Moves the rebalancer's state and writes the batch's new confidence rows.

        Before ``--update-start`` the rows written back are ``stored``, the table's own values,
        so the write is exact whatever the storage dtype (renormalising and rounding a float16 row
        again moves an entry of about 1-2% of rows by an ulp).
        """
        features_w = y_pred["features_w"]
        self.rebalancer.update(features_w, y_pred.get("features_s", features_w))
        new_rows = self._disambiguate(y_pred, candidates)
        rows = ops.where(self.update_enabled > 0, new_rows, stored)
        rows = ops.cast(rows, self.confidence_dtype)
        # Under tf.distribute each replica holds different samples: gather every replica's
        # (index, row) pairs so all copies of the table receive the same complete scatter.
        all_index = distribution.all_gather(index)
        all_rows = distribution.all_gather(rows)
        self.confidence.assign(
            ops.scatter_update(self.confidence, ops.expand_dims(all_index, -1), all_rows)
        )

    def _disambiguate(self, y_pred, candidates):
        """The method's new rows for the batch, from the rebalancer's debiased logits of the
        views (without gradient), inside each sample's original candidate set."""
        logits_w = ops.stop_gradient(self.rebalancer.update_logits(y_pred["logits_w"], self.head))
        logits_s = None
        if "logits_s" in y_pred:
            logits_s = ops.stop_gradient(
                self.rebalancer.update_logits(y_pred["logits_s"], self.head)
            )
        return self.method.update(logits_w, logits_s, candidates)

    def compile(self, optimizer="rmsprop", *args, **kwargs):
        """Keras' ``compile``; an optimizer that treats the backbone's variables apart
        (:class:`~ltpll.optimizers.BackboneScaledSGD`, ``--backbone-lr-scale``) is told which
        they are, here and when a saved model is recompiled from its config."""
        super().compile(optimizer, *args, **kwargs)
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)  # loss scaling
        if hasattr(inner, "set_backbone_variables"):
            inner.set_backbone_variables(self.backbone.trainable_variables)

    def compile_from_config(self, config):
        """Keras' ``compile_from_config``, which skips a model whose ``compile`` is overridden;
        this one's only adds to Keras', so a reloaded model (a checkpoint) is compiled as
        Keras would, optimizer state included."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)  # its variables, to load into

    def training_callbacks(self):
        """The callbacks the rebalancer, the loss weighting and the method need during ``fit``."""
        return [*self.rebalancer.callbacks(), *self.weighting.callbacks(),
                *self.method.callbacks()]

    def fit(self, *args, **kwargs):
        """Keras' ``fit``, with :meth:`training_callbacks` run before the caller's callbacks.

        A callback of the same class among the caller's replaces the model's own (say
        ``WeightingStart(640)`` for the weighting's default start).
        """
        args = list(args)
        if len(args) > 5:  # fit(x, y, batch_size, epochs, verbose, callbacks, ...)
            kwargs["callbacks"] = args.pop(5)
        if hasattr(kwargs.get("callbacks"), "add_first"):  # a ltpll.batch_logs.LazyCallbackList
            kwargs["callbacks"].add_first(self.training_callbacks())
            return super().fit(*args, **kwargs)
        given = list(kwargs.get("callbacks") or [])
        taken = {type(callback) for callback in given}
        needed = [callback for callback in self.training_callbacks()
                  if type(callback) not in taken]
        kwargs["callbacks"] = needed + given
        return super().fit(*args, **kwargs)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, dict):
            self.train_accuracy.update_state(y["label"], y_pred["logits_w"])
        else:
            self.train_accuracy.update_state(y, y_pred)
        return self.get_metrics_result()

    # --- serialisation -------------------------------------------------------------------

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "num_samples": self.num_samples,
            "image_shape": list(self.image_shape),
            "method": self.method.get_config(),
            "rebalancer": keras.saving.serialize_keras_object(self.rebalancer),
            "mean": list(self.mean),
            "std": list(self.std),
            "weight_decay": self.weight_decay,
            "seed": self.seed,
            "weak_augment": keras.saving.serialize_keras_object(self.weak_augment),
            "strong_augment": keras.saving.serialize_keras_object(self.strong_augment),
            "mixup": self.mixup,
            "mixup_weight": self.mixup_weight,
            "confidence_dtype": self.confidence_dtype,
            "weighting": keras.saving.serialize_keras_object(self.weighting),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("head", None)  # config version 2 named the head; the weighting decides it
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        for key in ("rebalancer", "weak_augment", "strong_augment", "weighting"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def normalise(images01, mean, std):
    """Per-channel ``(images - mean) / std`` of float images in [0, 1], in their dtype."""
    mean = ops.convert_to_tensor(mean, dtype=images01.dtype)
    std = ops.convert_to_tensor(std, dtype=images01.dtype)
    return (images01 - mean) / std


def coupled_l2(weights, coefficient):
    """``coefficient / 2 * sum ||w||^2``: coupled L2, as PyTorch's SGD(weight_decay=...) in the
    reference implementations (its gradient is ``coefficient * w``)."""
    return 0.5 * coefficient * sum(ops.sum(ops.square(ops.cast(w, "float32"))) for w in weights)


def _beta_4_4(seed, shape=()):
    """One draw of Beta(4, 4) that compiles under XLA.

    ``keras.random.beta`` lowers to a gamma sampler that TensorFlow's XLA cannot compile. For an
    integer shape, Gamma(4, 1) is exactly the sum of 4 Exp(1) draws ``-log U``, and
    ``G1 / (G1 + G2)`` of two independent ones is Beta(4, 4).
    """
    uniform = keras.random.uniform((*shape, 2, 4), minval=1e-7, maxval=1.0, seed=seed)
    gammas = -ops.sum(ops.log(uniform), axis=-1)
    return gammas[..., 0] / (gammas[..., 0] + gammas[..., 1])


class TrainingStep:
    """What a method's ``step_loss`` sees of one training step (see
    :mod:`ltpll.disambiguation.base`).

    Attributes:
        model: the :class:`PLLModel`.
        y_pred: the dict ``call(training=True)`` returned: ``logits_w``/``features_w`` (and
            ``_s`` for two views), ``views`` (the normalised views, weak first, concatenated).
        targets: ``[B, C]`` the batch's confidence rows.
        candidates: ``[B, C]`` multi-hot candidate sets.
        index: ``[B]`` int32 sample indices (rows of the table).
        training: whether state may be written (False when a test or the meta step calls it).
    """

    def __init__(self, model, y_pred, targets, candidates, index, training):
        self.model = model
        self.y_pred = y_pred
        self.targets = targets
        self.candidates = candidates
        self.index = index
        self.training = training

    def logits_of(self, views):
        """float32 logits of normalised images through backbone and head in training mode (an
        extra forward pass, as SoLar's Mixup on its selected samples makes)."""
        return ops.cast(self.model.head(self.model.backbone(views, training=True)), "float32")

    def example_weights(self, logits_w):
        """``[B]`` weights of the model's loss weighting (1 without one)."""
        return self.model.weighting.example_weights(self.targets, logits_w)


class UpdateStart(keras.callbacks.Callback):
    """Switches confidence updates on from a given epoch (``--update-start``, 1-based count of
    epochs trained first without updates; 0 updates from the start).

    It assigns the model's ``update_enabled`` variable, as LearningRateScheduler assigns the
    learning rate, so the already-compiled step sees the change.
    """

    def __init__(self, start_epoch):
        super().__init__()
        if start_epoch < 0:
            raise LTPLLError(f"--update-start must be >= 0; received {start_epoch}")
        self.start_epoch = int(start_epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.update_enabled.assign(1.0 if epoch >= self.start_epoch else 0.0)


__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "MaskedAccuracy", "PLLModel", "TrainingStep",
           "UpdateStart"]
