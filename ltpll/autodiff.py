"""Gradients of plain functions with the backend's own autodiff, nestable for second order.

Keras 3 has no backend-neutral ``grad``; the meta-learned example weights
(:mod:`ltpll.weighting.meta`) differentiate through a virtual SGD step, so they need a
gradient of a gradient. :func:`grad` gives both backends the same small interface; calls nest
(TensorFlow: a tape opened inside another records the inner gradient's ops; JAX: ``jax.grad``
of a function that calls ``jax.grad``).
"""

import keras
from keras import ops


def grad(fn, args):
    """The gradient of the scalar ``fn(args)`` with respect to ``args``.

    Args:
        fn: a function of one argument: a tensor, or a list of tensors.
        args: the point to differentiate at (same structure).

    Returns:
        Gradients with the structure of ``args``; zeros where ``fn`` does not depend on an entry.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.grad(fn)(args)
    if backend == "tensorflow":
        import tensorflow as tf

        is_list = isinstance(args, (list, tuple))
        leaves = [ops.convert_to_tensor(a) for a in (args if is_list else [args])]
        with tf.GradientTape() as tape:
            tape.watch(leaves)
            value = fn(leaves if is_list else leaves[0])
        grads = tape.gradient(value, leaves, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return grads if is_list else grads[0]
    raise NotImplementedError(
        f"second-order gradients are implemented for the tensorflow and jax backends, not {backend}"
    )
