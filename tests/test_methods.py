"""PRODEN, LW and CAVL: losses and confidence updates on 3-class examples worked by hand."""

import json

import numpy as np
import pytest
from keras import ops

from ltpll.disambiguation import CAVL, LW, PRODEN, get_method
from ltpll.errors import LTPLLError
from tests.helpers import run_python

ONE_VIEW = [PRODEN(), LW(), LW(beta=2.0), CAVL()]


def value(x):
    return ops.convert_to_numpy(x).astype("float64")


def f32(rows):
    return np.array(rows, dtype="float32")


# --- PRODEN --------------------------------------------------------------------------------
# One sample, candidates {0, 1}, target (0.5, 0.5, 0), probabilities (0.5, 0.3, 0.2).
CANDIDATES = f32([[1, 1, 0]])
TARGET = f32([[0.5, 0.5, 0.0]])
LOGITS = np.log(f32([[0.5, 0.3, 0.2]]))


def test_proden_loss_matches_hand_computation():
    # -(0.5 log 0.5 + 0.5 log 0.3) = 0.5 * (0.693147 + 1.203973) = 0.948560
    loss = PRODEN().loss(LOGITS, None, TARGET, CANDIDATES)
    assert np.isclose(value(loss), 0.948560, atol=1e-5)


def test_proden_update_is_softmax_renormalised_on_candidates():
    # (0.5, 0.3) / 0.8 = (0.625, 0.375); the non-candidate gets 0
    rows = PRODEN().update(LOGITS, None, CANDIDATES)
    assert np.allclose(value(rows), [[0.625, 0.375, 0.0]], atol=1e-5)


# --- LW ------------------------------------------------------------------------------------
# Two samples with the same logits f = (1, -0.5, 2):
#   row 1: candidates {0, 1}, target w = (0.6, 0.4, 0); its only non-candidate is 2, so u = (0, 0, 1)
#   row 2: candidates {0},    target w = (1, 0, 0);     non-candidates {1, 2}:
#          u1 = e^-0.5 / (e^-0.5 + e^2) = 1 / (1 + e^2.5) = 0.075858, u2 = 0.924142
# sigmoid(-1) = 0.268941, sigmoid(0.5) = 0.622459, sigmoid(-0.5) = 0.377541, sigmoid(2) = 0.880797
# candidate terms:     row 1: 0.6 * 0.268941 + 0.4 * 0.622459 = 0.410349;  row 2: 0.268941
# non-candidate terms: row 1: 0.880797;  row 2: 0.075858 * 0.377541 + 0.924142 * 0.880797 = 0.842621
# batch means: candidate (0.410349 + 0.268941) / 2 = 0.339645, non-candidate 0.861709
LW_LOGITS = f32([[1.0, -0.5, 2.0], [1.0, -0.5, 2.0]])
LW_CANDIDATES = f32([[1, 1, 0], [1, 0, 0]])
LW_TARGET = f32([[0.6, 0.4, 0.0], [1.0, 0.0, 0.0]])


def lw_loss(beta):
    return value(LW(beta=beta).loss(LW_LOGITS, None, LW_TARGET, LW_CANDIDATES))


def test_lw_loss_matches_hand_computation():
    # beta = 1: 0.339645 + 0.861709 = 1.201354
    assert np.isclose(lw_loss(1.0), 1.201354, atol=1e-5)


def test_lw_beta_zero_is_the_candidate_term_only():
    assert np.isclose(lw_loss(0.0), 0.339645, atol=1e-5)


def test_lw_beta_scales_the_non_candidate_term():
    # beta = 2: 0.339645 + 2 * 0.861709 = 2.063063; its non-candidate part is twice beta = 1's
    assert np.isclose(lw_loss(2.0), 2.063063, atol=1e-5)
    assert np.isclose(lw_loss(2.0) - lw_loss(0.0), 2 * (lw_loss(1.0) - lw_loss(0.0)), atol=1e-5)


def test_lw_all_candidates_has_no_non_candidate_term():
    # S = every class, w = (0.2, 0.3, 0.5), f = (1, -0.5, 2):
    # 0.2 * sigmoid(-1) + 0.3 * sigmoid(0.5) + 0.5 * sigmoid(-2)
    #   = 0.2 * 0.268941 + 0.3 * 0.622459 + 0.5 * 0.119203 = 0.300128, whatever beta
    args = (f32([[1.0, -0.5, 2.0]]), None, f32([[0.2, 0.3, 0.5]]), f32([[1, 1, 1]]))
    for beta in (0.0, 1.0, 5.0):
        loss = value(LW(beta=beta).loss(*args))
        assert np.isfinite(loss) and np.isclose(loss, 0.300128, atol=1e-5)


def test_lw_update_is_softmax_renormalised_on_candidates():
    # row 1 of the example: e^1 / (e^1 + e^-0.5) = 1 / (1 + e^-1.5) = 0.817574, and 0.182426
    rows = LW().update(LW_LOGITS[:1], None, LW_CANDIDATES[:1])
    assert np.allclose(value(rows), [[0.817574, 0.182426, 0.0]], atol=1e-5)


@pytest.mark.parametrize("beta", [-1, float("nan"), "abc"])
def test_lw_bad_beta_is_a_user_error(beta):
    with pytest.raises(LTPLLError, match="--lw-beta must be >= 0; received"):
        get_method("lw", beta=beta)


# --- CAVL ----------------------------------------------------------------------------------
def cavl_row(logits, candidates):
    return value(CAVL().update(f32([logits]), None, f32([candidates])))[0]


def test_cavl_loss_is_cross_entropy_to_the_one_hot_target():
    # target (0, 1, 0), probabilities (0.5, 0.3, 0.2): -log 0.3 = 1.203973
    loss = CAVL().loss(LOGITS, None, f32([[0, 1, 0]]), CANDIDATES)
    assert np.isclose(value(loss), 1.203973, atol=1e-5)


def test_cavl_picks_the_candidate_with_the_highest_cav():
    # cav = f |1 - f|: (3, 0.4, 5) -> (3 * 2, 0.4 * 0.6, 5 * 4) = (6, 0.24, 20); the overall
    # argmax (class 2) is not a candidate, class 0 wins among {0, 1}
    assert np.array_equal(cavl_row([3.0, 0.4, 5.0], [1, 1, 0]), [1.0, 0.0, 0.0])
    # (1.2, 0.5, 3) -> (1.2 * 0.2, 0.5 * 0.5, 3 * 2) = (0.24, 0.25, 6): class 1 wins among {0, 1}
    # although class 0 has the larger logit
    assert np.array_equal(cavl_row([1.2, 0.5, 3.0], [1, 1, 0]), [0.0, 1.0, 0.0])


def test_cavl_stays_inside_the_candidates_when_every_cav_is_negative():
    # (-0.5, -2, 1) -> (-0.5 * 1.5, -2 * 3, 1 * 0) = (-0.75, -6, 0): multiplying by the mask
    # would make class 2 (cav 0) win; masking to a very negative value keeps class 0
    assert np.array_equal(cavl_row([-0.5, -2.0, 1.0], [1, 1, 0]), [1.0, 0.0, 0.0])


# --- shared properties ---------------------------------------------------------------------
@pytest.mark.parametrize("method", ONE_VIEW, ids=lambda m: str(m.get_config()))
def test_loss_averages_over_the_batch(method):
    args = (LW_LOGITS[1:], None, LW_TARGET[1:], LW_CANDIDATES[1:])
    one = method.loss(*args)
    two = method.loss(*(None if a is None else np.repeat(a, 2, axis=0) for a in args))
    assert np.isclose(value(one), value(two), atol=1e-6)


@pytest.mark.parametrize("method", ONE_VIEW, ids=lambda m: str(m.get_config()))
def test_update_rows_live_on_the_candidates_and_sum_to_one(method):
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, (64, 5)).astype("float32")
    candidates = (rng.random((64, 5)) < 0.4).astype("float32")
    candidates[np.arange(64), rng.integers(0, 5, 64)] = 1.0
    rows = value(method.update(logits, None, candidates))
    assert np.all(rows[candidates == 0] == 0.0)
    assert np.allclose(rows.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("method", ONE_VIEW, ids=lambda m: str(m.get_config()))
def test_get_config_round_trip(method):
    rebuilt = get_method(method.get_config())
    assert type(rebuilt) is type(method) and rebuilt.get_config() == method.get_config()
    assert method.views == 1


def test_lw_config_keeps_beta():
    assert LW(beta=2.5).get_config() == {"name": "lw", "beta": 2.5}
    assert get_method("lw", beta=0.5).beta == 0.5 and get_method("lw").beta == 1.0


# --- backend neutrality --------------------------------------------------------------------
def method_values():
    """Each method's loss and update on a fixed batch, as plain Python numbers."""
    logits = f32([[1.0, -0.5, 2.0], [-0.5, -2.0, 1.0]])
    candidates = f32([[1, 1, 0], [1, 1, 0]])
    targets = f32([[0.6, 0.4, 0.0], [0.5, 0.5, 0.0]])
    out = {}
    for name in ("proden", "lw", "cavl"):
        method = get_method(name)
        out[name] = [float(value(method.loss(logits, None, targets, candidates))),
                     value(method.update(logits, None, candidates)).tolist()]
    return out


def test_jax_matches_this_backend():
    """The same losses and updates under JAX (a fresh interpreter) as in this process (TF)."""
    script = "import json; from tests.test_methods import method_values; "
    script += "print(json.dumps(method_values()))"
    jax = json.loads(run_python(script, "jax", timeout=300).strip().splitlines()[-1])
    for name, (loss, rows) in method_values().items():
        assert np.isclose(jax[name][0], loss, atol=1e-5), name
        assert np.allclose(jax[name][1], rows, atol=1e-5), name
