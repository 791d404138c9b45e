"""Throughput of the batched augmentation layers, jit-compiled on the current Keras backend.

Usage (the backend is fixed per process)::

    KERAS_BACKEND=tensorflow python benchmarks/bench_augment.py
    KERAS_BACKEND=jax python benchmarks/bench_augment.py [--batch 256] [--steps 20]

Prints images/s for ``WeakAugment``, ``StrongAugment`` and, for comparison, Keras' own
``keras.layers.RandAugment`` (which declares ``supports_jit=False``; it is jit-compiled when the
backend manages to, and otherwise timed the way Keras would run it, un-jitted).  The numbers
exclude compilation: every function is called once before timing, and timing waits for the
results to be on the host.  Not run by the tests.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from ltpll.models.augment import StrongAugment, WeakAugment  # noqa: E402


def _tensorflow_fn(layer, jit):
    import tensorflow as tf

    if isinstance(layer, keras.layers.RandAugment):
        return tf.function(lambda x: layer(x, training=True), jit_compile=jit)
    return tf.function(layer, jit_compile=jit)


def _jax_fn(layer, jit):
    import jax

    if not jit:
        return lambda x: layer(x, training=True)
    kwargs = {"training": True} if isinstance(layer, keras.layers.RandAugment) else {}
    state = [v.value for v in layer.non_trainable_variables]

    @jax.jit
    def step(state, x):
        return layer.stateless_call([], state, x, **kwargs)

    def call(x):
        out, state[:] = step(list(state), x)
        return out

    return call


def compiled(layer, jit=True):
    """The layer as a callable ``images -> augmented`` compiled for the current backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_fn(layer, jit)
    if backend == "jax":
        return _jax_fn(layer, jit)
    raise SystemExit(f"unsupported backend for this benchmark: {backend}")


def images_per_second(fn, images, steps):
    ops.convert_to_numpy(fn(images))  # compile / warm up
    start = time.perf_counter()
    for _ in range(steps):
        out = fn(images)
    ops.convert_to_numpy(out)
    return steps * images.shape[0] / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8)
    images = ops.convert_to_tensor(images)
    images_float = ops.cast(images, "float32")
    print(f"backend={keras.backend.backend()} batch={args.batch} size={args.size}")

    for name, layer in (
        ("WeakAugment", WeakAugment(seed=0)),
        ("StrongAugment(num_ops=3)", StrongAugment(num_ops=3, seed=0)),
    ):
        rate = images_per_second(compiled(layer), images, args.steps)
        print(f"{name:34s} jit    {rate:12,.0f} images/s")

    reference = keras.layers.RandAugment(value_range=(0, 255), num_ops=3, seed=0)
    try:
        fn, how = compiled(reference, jit=True), "jit"
        rate = images_per_second(fn, images_float, max(1, args.steps // 4))
    except Exception as err:  # RandAugment is documented as not jittable
        print(f"keras.layers.RandAugment: jit failed ({type(err).__name__}); timing un-jitted")
        fn, how = compiled(reference, jit=False), "no-jit"
        rate = images_per_second(fn, images_float, max(1, args.steps // 4))
    print(f"{'keras.layers.RandAugment(num_ops=3)':34s} {how:6s} {rate:12,.0f} images/s")


if __name__ == "__main__":
    main()
