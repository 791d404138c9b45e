"""One 3x3 convolution's three kernels, XLA (JAX) against TensorFlow's, on this machine.

Usage::

    python benchmarks/bench_conv_cpu.py [--views 256] [--shape 32x16 8x64]

For each ``SIZExCHANNELS`` (a stride-1 "same" 3x3 convolution on ``--views`` images of
``SIZE x SIZE x CHANNELS``, float32, as in resnet-small's stages) it times the forward pass, the
gradient with respect to the input and the gradient with respect to the kernel, each compiled on
its own (``jax.jit``; a ``tf.function`` running TensorFlow's kernels, oneDNN where it is on), and
prints the median ms of 7 samples of 10 calls. It shows which part of the backward pass makes
the JAX training step slower than TensorFlow's on a CPU. TensorFlow and JAX run in the same
process, one after the other; run it on an idle machine. Not run by the tests.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as `import ltpll` sets it


def median_ms(call, block, samples=7, calls=10):
    for _ in range(3):
        block(call())
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        for _ in range(calls):
            result = call()
        block(result)
        times.append((time.perf_counter() - started) / calls * 1000.0)
    return statistics.median(times)


def jax_kernels(x, w, dy):
    import jax

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    forward = jax.jit(conv)
    d_input = jax.jit(lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0])
    d_kernel = jax.jit(lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0])
    x, w, dy = (jax.numpy.asarray(a) for a in (x, w, dy))
    block = jax.block_until_ready
    return {"forward": median_ms(lambda: forward(x, w), block),
            "input gradient": median_ms(lambda: d_input(x, w, dy), block),
            "kernel gradient": median_ms(lambda: d_kernel(x, w, dy), block)}


def tf_kernels(x, w, dy):
    import tensorflow as tf

    x, w, dy = (tf.constant(a) for a in (x, w, dy))
    strides = [1, 1, 1, 1]
    forward = tf.function(lambda: tf.nn.conv2d(x, w, 1, "SAME"))
    d_input = tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(x), filter=w, out_backprop=dy, strides=strides, padding="SAME"))
    d_kernel = tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.shape(w), out_backprop=dy, strides=strides, padding="SAME"))
    block = lambda result: result.numpy()  # noqa: E731
    return {"forward": median_ms(forward, block),
            "input gradient": median_ms(d_input, block),
            "kernel gradient": median_ms(d_kernel, block)}


def main():
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=256)
    parser.add_argument("--shape", nargs="+", default=["32x16", "8x64"],
                        help="SIZExCHANNELS of each convolution to time")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'shape':>10} {'kernel':>16} {'JAX ms':>8} {'TF ms':>8} {'JAX/TF':>7}")
    for shape in args.shape:
        size, channels = (int(n) for n in shape.lower().split("x"))
        x = rng.standard_normal((args.views, size, size, channels)).astype("float32")
        w = (0.1 * rng.standard_normal((3, 3, channels, channels))).astype("float32")
        dy = rng.standard_normal(x.shape).astype("float32")
        jax_ms, tf_ms = jax_kernels(x, w, dy), tf_kernels(x, w, dy)
        for kernel in jax_ms:
            print(f"{shape:>10} {kernel:>16} {jax_ms[kernel]:8.2f} {tf_ms[kernel]:8.2f} "
                  f"{jax_ms[kernel] / tf_ms[kernel]:7.2f}")


if __name__ == "__main__":
    main()
