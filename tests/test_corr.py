"""CORR's loss and confidence update on a 3-class example worked by hand."""

import numpy as np
from keras import ops

from ltpll.disambiguation import CORR, get_method
from ltpll.errors import LTPLLError

# One sample, candidates {0, 1}, current target (0.5, 0.5, 0).
# Weak view probabilities (0.5, 0.3, 0.2); strong view (0.2, 0.6, 0.2).
CANDIDATES = np.array([[1.0, 1.0, 0.0]], dtype="float32")
TARGET = np.array([[0.5, 0.5, 0.0]], dtype="float32")
LOGITS_W = np.log(np.array([[0.5, 0.3, 0.2]], dtype="float32"))
LOGITS_S = np.log(np.array([[0.2, 0.6, 0.2]], dtype="float32"))


def test_corr_loss_matches_hand_computation():
    # negative term: -log(1 - 0.2) for each view           = 2 * 0.223144 = 0.446287
    # KL(target || weak)   = 0.5 log(0.5/0.5) + 0.5 log(0.5/0.3) = 0.255413
    # KL(target || strong) = 0.5 log(0.5/0.2) + 0.5 log(0.5/0.6) = 0.366985
    loss = CORR().loss(LOGITS_W, LOGITS_S, TARGET, CANDIDATES)
    assert np.isclose(float(ops.convert_to_numpy(loss)), 0.446287 + 0.255413 + 0.366985, atol=1e-5)


def test_corr_loss_averages_over_the_batch():
    one = CORR().loss(LOGITS_W, LOGITS_S, TARGET, CANDIDATES)
    two = CORR().loss(*(np.repeat(a, 2, axis=0) for a in (LOGITS_W, LOGITS_S, TARGET, CANDIDATES)))
    assert np.isclose(float(ops.convert_to_numpy(one)), float(ops.convert_to_numpy(two)), atol=1e-6)


def test_corr_update_is_normalised_geometric_mean_on_candidates():
    # sqrt(0.5 * 0.2) = 0.316228, sqrt(0.3 * 0.6) = 0.424264, sum 0.740492
    rows = CORR().update(LOGITS_W, LOGITS_S, CANDIDATES)
    assert np.allclose(ops.convert_to_numpy(rows), [[0.427050, 0.572950, 0.0]], atol=1e-5)


def test_corr_update_survives_vanishing_probabilities():
    # Probabilities of ~1e-40 underflow float32 when multiplied; the row must still sum to 1.
    logits = np.array([[0.0, -90.0, -95.0]], dtype="float32")
    candidates = np.array([[0.0, 1.0, 1.0]], dtype="float32")
    rows = ops.convert_to_numpy(CORR().update(logits, logits, candidates))
    assert np.isclose(rows.sum(), 1.0) and rows[0, 0] == 0.0 and rows[0, 1] > rows[0, 2]


def test_unknown_method_is_a_user_error():
    try:
        get_method("nope")
    except LTPLLError as error:
        assert "corr" in str(error)
    else:
        raise AssertionError("no error for an unknown method")
