"""Oracle logit adjustment: the constant-prior baselines RECORDS is compared against.

All three subtract ``tau * log(true training prior)`` from the logits; they differ in where:

* ``oracle-la`` (:class:`OracleLogitAdjustment`): in the confidence update *and* at prediction,
  from the first step. This is the logit-adjusted loss of Menon et al. written the other way
  round: training on ``f + tau log pi`` and predicting with ``f`` is the same model as training
  on ``g`` and predicting (and disambiguating) with ``g - tau log pi``. The RECORDS paper shows
  it collapses under PLL: early on the network's outputs are not yet biased towards the head
  (its pseudo-labels are still near uniform), so subtracting the true prior over-corrects and
  drags head samples' confidence onto tail candidates.
* ``oracle-la-posthoc`` (``posthoc=True``): train plain PLL; subtract only at prediction.
* ``temp-oracle-la`` (:class:`TemperatureRamp`): as ``oracle-la`` but ``tau`` ramps linearly
  from 0 to its final value over the first ``ramp_epochs`` epochs, a schedule that tracks the
  growing bias of the network by hand.

The prior is the oracle: the true class counts of the training set, hidden from PLL methods,
known only for benchmark data.
"""

import keras
import numpy as np
from keras import ops

from ltpll.components import check_options
from ltpll.errors import LTPLLError
from ltpll.rebalancing.base import Rebalancer


@keras.saving.register_keras_serializable(package="ltpll")
class OracleLogitAdjustment(Rebalancer):
    """Logit adjustment with a fixed, known class prior.

    Args:
        class_counts: true training images per class (the oracle prior is their share).
        tau: final temperature of the adjustment (``--la-tau``, default 1).
        posthoc: subtract only at prediction, not in the confidence update.
        ramp_epochs: if > 0, ``tau`` starts at 0 and reaches its value after this many epochs
            (``temp-oracle-la``); the :class:`TemperatureRamp` callback from ``callbacks()``
            moves it.
    """

    def __init__(self, class_counts, tau=1.0, posthoc=False, ramp_epochs=0, **kwargs):
        super().__init__(**kwargs)
        counts = np.asarray(class_counts, dtype=np.float64)
        if counts.ndim != 1 or np.any(counts <= 0):
            raise LTPLLError("oracle logit adjustment needs a positive training count per class")
        tau = check_options("rebalancer", "oracle-la", tau=tau)["tau"]
        if ramp_epochs < 0:
            raise LTPLLError(f"--la-ramp-epochs must be >= 0; received {ramp_epochs}")
        self.class_counts = [float(c) for c in counts]
        self.tau = float(tau)
        self.posthoc = bool(posthoc)
        self.ramp_epochs = int(ramp_epochs)
        self._log_prior = np.log(counts / counts.sum()).astype("float32")

    @classmethod
    def from_options(cls, context, tau=1.0, posthoc=False, ramp=False, ramp_epochs=None):
        """``oracle-la`` (default), ``oracle-la-posthoc`` (``posthoc``) or ``temp-oracle-la``
        (``ramp``, over ``ramp_epochs``; default half the run) for a run's true class counts.

        Raises:
            LTPLLError: when the true class counts are not known.
        """
        name = "oracle-la-posthoc" if posthoc else "temp-oracle-la" if ramp else "oracle-la"
        if context.class_counts is None:
            raise LTPLLError(f"--rebalance {name} needs the true class counts of the training set")
        if ramp:
            ramp_epochs = max(1, ramp_epochs if ramp_epochs is not None else context.epochs // 2)
        return cls(context.class_counts, tau=tau, posthoc=posthoc,
                   ramp_epochs=ramp_epochs if ramp else 0, name=name.replace("-", "_"))

    def build(self, feature_shape=None):
        # A variable, not a Python float, so the compiled step sees the ramp move it.
        self.temperature = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(0.0 if self.ramp_epochs else self.tau),
            trainable=False, autocast=False, aggregation="only_first_replica", name="temperature",
        )

    def log_prior(self, head, num_classes=None):
        return ops.convert_to_tensor(self._log_prior)

    def _adjusted(self, logits):
        return ops.cast(logits, "float32") - self.temperature * ops.convert_to_tensor(self._log_prior)

    def update_logits(self, logits, head):
        return logits if self.posthoc else self._adjusted(logits)

    def prediction_logits(self, logits, head):
        return self._adjusted(logits)

    def callbacks(self):
        return [TemperatureRamp(self)] if self.ramp_epochs else []

    def get_config(self):
        return {
            **super().get_config(), "class_counts": self.class_counts, "tau": self.tau,
            "posthoc": self.posthoc, "ramp_epochs": self.ramp_epochs,
        }


class TemperatureRamp(keras.callbacks.Callback):
    """Sets the adjustment's temperature to ``tau * min(1, epoch / ramp_epochs)`` each epoch."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def on_epoch_begin(self, epoch, logs=None):
        self.layer.temperature.assign(self.layer.tau * min(1.0, epoch / self.layer.ramp_epochs))

    def on_train_end(self, logs=None):
        # Predictions after training use the final temperature, however short the run.
        self.layer.temperature.assign(self.layer.tau)
