"""RECORDS: the moving feature mean, the prior softmax(head(F)) and the logit adjustment."""

import keras
import numpy as np
import pytest
from keras import ops

from ltpll.callbacks import Records
from ltpll.errors import LTPLLError
from ltpll.rebalancing import RecordsPrior


def _head(kernel, bias):
    head = keras.layers.Dense(len(bias))
    head.build((None, kernel.shape[0]))
    head.set_weights([kernel, bias])
    return head


def test_feature_mean_follows_momentum_from_zero():
    prior = RecordsPrior(momentum=0.5)
    prior.build((2,))
    f1 = np.array([[2.0, 0.0], [4.0, 2.0]], dtype="float32")   # views averaged: batch mean (3, 1)
    prior.update(f1, f1)
    assert np.allclose(ops.convert_to_numpy(prior.feature_mean), [1.5, 0.5])
    fw = np.array([[1.0, 1.0]], dtype="float32")
    fs = np.array([[3.0, 5.0]], dtype="float32")                 # (fw + fs) / 2 = (2, 3)
    prior.update(fw, fs)
    assert np.allclose(ops.convert_to_numpy(prior.feature_mean), [0.5 * 1.5 + 1.0, 0.5 * 0.5 + 1.5])


def test_prior_is_softmax_of_head_on_feature_mean_and_adjusts_logits():
    prior = RecordsPrior(momentum=0.0)
    prior.build((2,))
    prior.update(np.array([[1.0, 2.0]], "float32"), np.array([[1.0, 2.0]], "float32"))
    kernel = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]], dtype="float32")
    bias = np.array([0.0, 0.1, 0.2], dtype="float32")
    head = _head(kernel, bias)
    # head(F) = (1 + 1, 0 + 1 + 0.1, -1 + 0 + 0.2) = (2, 1.1, -0.8)
    scores = np.array([2.0, 1.1, -0.8])
    expected_prior = np.exp(scores) / np.exp(scores).sum()
    assert np.allclose(np.exp(ops.convert_to_numpy(prior.log_prior(head))), expected_prior, atol=1e-6)
    logits = np.array([[0.3, 0.2, 0.1]], dtype="float32")
    adjusted = ops.convert_to_numpy(prior.adjust(logits, head))
    assert np.allclose(adjusted, logits - np.log(expected_prior), atol=1e-5)
    # Debiasing raises the rare class relative to the frequent one.
    assert adjusted[0, 2] - adjusted[0, 0] > logits[0, 2] - logits[0, 0]


def test_momentum_out_of_range_is_rejected():
    with pytest.raises(LTPLLError):
        RecordsPrior(momentum=1.0)


class _FakeModel:
    def __init__(self, prior):
        self.prior = prior

    def estimated_prior(self):
        return self.prior


def test_callback_logs_l2_to_true_prior_and_writes_history(tmp_path):
    path = tmp_path / "prior.json"
    callback = Records(true_class_counts=[30, 10], history_path=str(path))
    callback.set_model(_FakeModel(np.array([0.5, 0.5])))
    logs = {}
    callback.on_epoch_end(0, logs)
    assert np.isclose(logs["prior_l2"], np.sqrt(2 * 0.25**2))
    import json
    saved = json.loads(path.read_text())
    assert saved["true_class_counts"] == [30, 10] and saved["epochs"][0]["prior"] == [0.5, 0.5]
