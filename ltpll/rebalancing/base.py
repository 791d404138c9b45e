"""The interface every long-tail rebalancer implements, and the identity rebalancer.

A rebalancer is a layer inside :class:`~ltpll.models.pll_model.PLLModel` (so its state is saved
with the model and updated inside the compiled step). The model asks it for:

* ``update(features_w, features_s)``: fold a training batch into its state (RECORDS: the moving
  feature mean); called only while training;
* ``update_logits(logits, head)``: the logits the confidence update (label disambiguation) sees;
* ``prediction_logits(logits, head)``: the logits ``predict``/``evaluate``/exports return;
* ``log_prior(head, num_classes)``: the class prior it currently uses, for reports and plots;
* ``callbacks()``: the Keras callbacks it needs during ``fit`` (a temperature ramp, an epoch-end
  re-estimate); ``PLLModel.fit`` adds them, so whoever builds the model does not have to know
  each rebalancer's needs.

A rebalancer is built for a run by ``from_options(context, **options)`` (its options are declared
with its registration in :mod:`ltpll.components`; ``context`` says what the data knows, such as
the true class counts the oracle baselines need).

Subtracting ``log prior`` is logit adjustment (Menon et al., ICLR 2021); the rebalancers differ
only in *which* prior and *where* they subtract it.
"""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="ltpll")
class Rebalancer(keras.layers.Layer):
    """Base class and identity: plain PLL with a uniform prior, nothing subtracted."""

    @classmethod
    def from_options(cls, context, **options):
        """The rebalancer for a run (:class:`ltpll.components.BuildContext`)."""
        return cls(**options)

    def update(self, features_w, features_s):
        pass

    def log_prior(self, head, num_classes):
        return ops.full((num_classes,), -float(np.log(num_classes)))

    def update_logits(self, logits, head):
        return logits

    def prediction_logits(self, logits, head):
        return logits

    def callbacks(self):
        return []


@keras.saving.register_keras_serializable(package="ltpll")
class NoRebalancing(Rebalancer):
    """The identity rebalancer (``--rebalance none``)."""

    @classmethod
    def from_options(cls, context, **options):
        return cls(name="no_rebalancing", **options)
