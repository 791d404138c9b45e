"""The meta-learned example weights: the second-order gradient against finite differences, and
the meta step inside PLLModel."""

import keras
import numpy as np
from keras import ops

from ltpll.weighting.meta import meta_offsets
from tests.helpers import run_python

RNG = np.random.default_rng(0)
B, D, C, N_DEV = 6, 5, 3, 8
X = RNG.normal(size=(B, D))
Y = RNG.integers(0, C, B)
W_CLASS = RNG.uniform(0.5, 2.0, B)          # each sample's class weight w_i
X_DEV = RNG.normal(size=(N_DEV, D))
Y_DEV = RNG.integers(0, C, N_DEV)
THETA = [RNG.normal(size=(D, C)) * 0.5, RNG.normal(size=(C,)) * 0.1]
LR = 0.3


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _cross_entropies(theta, x, y):
    probs = _softmax(x @ theta[0] + theta[1])
    return -np.log(probs[np.arange(len(y)), y])


def _dev_loss_after_virtual_step_numpy(eps):
    """The virtual step written out by hand for a linear softmax classifier, in float64."""
    weights = W_CLASS + eps
    residual = (_softmax(X @ THETA[0] + THETA[1]) - np.eye(C)[Y]) * weights[:, None]
    theta = [THETA[0] - LR * X.T @ residual, THETA[1] - LR * residual.sum(axis=0)]
    return _cross_entropies(theta, X_DEV, Y_DEV).mean()


def _finite_difference_gradient(h=1e-5):
    grad = np.zeros(B)
    for i in range(B):
        step = np.zeros(B)
        step[i] = h
        grad[i] = (_dev_loss_after_virtual_step_numpy(step)
                   - _dev_loss_after_virtual_step_numpy(-step)) / (2 * h)
    return grad


def _keras_cross_entropies(theta, x, y):
    logits = ops.matmul(x, theta[0]) + theta[1]
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


def test_meta_offsets_match_a_finite_difference_gradient():
    x, x_dev = (ops.convert_to_tensor(a, "float32") for a in (X, X_DEV))
    w = ops.convert_to_tensor(W_CLASS, "float32")

    def train_loss(theta, eps):
        return ops.sum((w + eps) * _keras_cross_entropies(theta, x, Y))

    def dev_loss(theta):
        return ops.mean(_keras_cross_entropies(theta, x_dev, Y_DEV))

    params = [ops.convert_to_tensor(t, "float32") for t in THETA]
    eps = ops.convert_to_numpy(meta_offsets(train_loss, dev_loss, params, B, LR, step_size=0.01))
    expected = -0.01 * _finite_difference_gradient()
    assert np.abs(expected).max() > 1e-4  # the check is not vacuous
    np.testing.assert_allclose(eps, expected, rtol=2e-3, atol=1e-7)


def test_meta_offsets_on_jax_match_tensorflow():
    """The same computation through jax.grad: the backends agree on the second-order step."""
    code = """
import numpy as np
from tests import test_meta_weights as t
from keras import ops
x = ops.convert_to_tensor(t.X, "float32"); x_dev = ops.convert_to_tensor(t.X_DEV, "float32")
w = ops.convert_to_tensor(t.W_CLASS, "float32")
train = lambda theta, eps: ops.sum((w + eps) * t._keras_cross_entropies(theta, x, t.Y))
dev = lambda theta: ops.mean(t._keras_cross_entropies(theta, x_dev, t.Y_DEV))
params = [ops.convert_to_tensor(p, "float32") for p in t.THETA]
eps = t.meta_offsets(train, dev, params, t.B, t.LR, step_size=0.01)
print(",".join(repr(float(e)) for e in np.asarray(eps)))
"""
    eps = np.array([float(v) for v in run_python(code, backend="jax").strip().split(",")])
    np.testing.assert_allclose(eps, -0.01 * _finite_difference_gradient(), rtol=2e-3, atol=1e-7)
