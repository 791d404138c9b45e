"""RECORDS: dynamic rebalancing by a momentum mean of features (Hong et al., ICLR 2023).

The model's class prior on the training distribution is estimated *without knowing the class
counts*: keep a momentum moving mean ``F`` of the backbone features of training batches; the
prior is ``softmax(head(F))``. Subtracting ``log(prior)`` from the logits removes the model's bias
towards head classes, both when the confidence table is updated (so tail classes are not starved
of pseudo-label mass) and at prediction time.

:class:`RecordsPrior` is a layer inside the model holding ``F`` as a non-trainable variable and
updating it inside the compiled training step (no host round trip; saved with the model). The
user-facing callback :class:`ltpll.callbacks.Records` creates that layer, so passing the same
object to ``PLLModel(rebalancer=...)`` and ``fit(callbacks=[...])`` wires both ends, and logs the
estimated prior each epoch.
"""

import keras
from keras import ops

from ltpll import distribution
from ltpll.components import check_options
from ltpll.rebalancing.base import Rebalancer


@keras.saving.register_keras_serializable(package="ltpll")
class RecordsPrior(Rebalancer):
    """Holds the RECORDS moving feature mean ``F`` and turns it into a class prior.

    Args:
        momentum: weight of the old mean in ``F <- m F + (1 - m) mean((f_w + f_s) / 2)``. ``F``
            starts at zero, as in the authors' code.
    """

    def __init__(self, momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.momentum = check_options("rebalancer", "records", momentum=momentum)["momentum"]

    @classmethod
    def from_options(cls, context, **options):
        return cls(name="records", **options)

    def build(self, feature_shape):
        self.feature_mean = self.add_weight(
            shape=(int(feature_shape[-1]),),
            initializer="zeros",
            trainable=False,
            autocast=False,
            # Every replica computes the same all-reduced value; take one copy of it.
            aggregation="only_first_replica",
            name="feature_mean",
        )

    @staticmethod
    def batch_feature_mean(features_w, features_s):
        """Mean feature of the batch's two views, without gradient, averaged over replicas."""
        batch_mean = ops.mean(
            ops.cast(ops.stop_gradient(features_w + features_s), "float32") * 0.5, axis=0
        )
        return distribution.all_reduce_mean(batch_mean)

    def update(self, features_w, features_s):
        """Folds the batch's mean feature into ``F`` (call only while training)."""
        batch_mean = self.batch_feature_mean(features_w, features_s)
        self.feature_mean.assign(
            self.momentum * self.feature_mean + (1.0 - self.momentum) * batch_mean
        )

    def log_prior(self, head, num_classes=None):
        """``log softmax(head(F))``: the estimated log class prior, shape ``[C]``."""
        logits = head(ops.expand_dims(ops.cast(self.feature_mean, head.compute_dtype), 0))
        return ops.log_softmax(ops.cast(logits[0], "float32"))

    def adjust(self, logits, head):
        """Debiased logits ``logits - log prior``."""
        return ops.cast(logits, "float32") - ops.stop_gradient(self.log_prior(head))

    def update_logits(self, logits, head):
        return self.adjust(logits, head)

    def prediction_logits(self, logits, head):
        return self.adjust(logits, head)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}


@keras.saving.register_keras_serializable(package="ltpll")
class EpochRecordsPrior(RecordsPrior):
    """The paper's Table 5 ablation: ``F`` re-estimated once per epoch instead of by momentum.

    During an epoch the step only accumulates the batches' mean features (the epoch's pass over
    the whole training set); at the epoch's end ``F`` becomes their average and stays fixed for
    the next epoch. The prior therefore lags the network by up to one epoch, which is what the
    ablation measures against the momentum mean.
    """

    def __init__(self, **kwargs):
        kwargs.pop("momentum", None)
        super().__init__(momentum=0.0, **kwargs)

    @classmethod
    def from_options(cls, context, **options):
        return cls(name="epoch_records", **options)

    def build(self, feature_shape):
        super().build(feature_shape)
        self.feature_sum = self.add_weight(
            shape=(int(feature_shape[-1]),), initializer="zeros", trainable=False,
            autocast=False, aggregation="only_first_replica", name="feature_sum",
        )
        self.batches = self.add_weight(
            shape=(), initializer="zeros", trainable=False, autocast=False,
            aggregation="only_first_replica", name="batches",
        )

    def update(self, features_w, features_s):
        batch_mean = self.batch_feature_mean(features_w, features_s)
        self.feature_sum.assign(self.feature_sum + batch_mean)
        self.batches.assign(self.batches + 1.0)

    def finish_epoch(self):
        """``F`` := the epoch's mean feature; the accumulators restart."""
        if float(keras.ops.convert_to_numpy(self.batches)) > 0:
            self.feature_mean.assign(self.feature_sum / self.batches)
        self.feature_sum.assign(ops.zeros_like(self.feature_sum))
        self.batches.assign(0.0)

    def callbacks(self):
        return [_FinishEpoch(self)]

    def get_config(self):
        config = super().get_config()
        config.pop("momentum", None)
        return config


class _FinishEpoch(keras.callbacks.Callback):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def on_epoch_end(self, epoch, logs=None):
        self.layer.finish_epoch()
