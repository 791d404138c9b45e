"""Where the JAX training step spends its time, next to the TensorFlow step on the same machine.

Usage::

    python benchmarks/bench_jax_step.py [--backbone resnet-small] [--batch-size 64] [--steps 10]
        [--repeats 3] [--trace DIR]

Runs one process per backend (Keras fixes the backend per process), each timing, with
``ltpll bench-step``'s in-fit timer and in its alternating rounds (one window of each step per
round), the same three steps on the same generated batches:

* ``full``: the CORR + RECORDS step as ``ltpll train`` runs it;
* ``no augmentation``: the same step with both views made by a plain ``x / 255`` (what the
  augmentation layers add inside the compiled step is the difference);
* ``bare``: the backbone and head alone, plain cross-entropy on 2B prepared views.

and prints ms/step (median of the repeats) per backend with the JAX / TF ratios. ``--trace DIR``
also writes a ``jax.profiler`` trace of a few full JAX steps (open it with TensorBoard's profile
plugin or Perfetto). The backends run one after the other, so on a shared machine the load can
differ between them: compare the ratios of several runs. Not run by the tests.
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def measure(args):
    """The three steps on the current backend, as a dict of timing summaries."""
    import keras
    import numpy as np

    from ltpll import components
    from ltpll.benchmark.step import (_bare_batches, _bare_model, _Repeated, _time_alternating,
                                      _time_steps, step_summary)
    from ltpll.data.pipeline import train_batches
    from ltpll.environment import tensorflow_available, xla_is_faster
    from ltpll.models.pll_model import PLLModel

    class Plain(keras.layers.Layer):
        """A view with no augmentation: the uint8 batch scaled to [0, 1]."""

        def call(self, images):
            return keras.ops.cast(images, "float32") / 255.0

    jit = xla_is_faster()
    size, classes, batch = 32, 10, args.batch_size
    samples = batch * max(args.steps, args.warmup)
    total = args.warmup + args.steps   # the most batches one fit reads
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (samples, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, samples)
    candidates = (rng.random((samples, classes)) < 0.3).astype("float32")
    candidates[np.arange(samples), labels] = 1.0
    context = components.BuildContext(num_classes=classes, class_counts=np.ones(classes),
                                      epochs=1, image_size=size, image_shape=(size, size, 3),
                                      seed=0)

    def full_model(augment):
        extra = {} if augment else {"weak_augment": Plain(), "strong_augment": Plain()}
        model = PLLModel(components.build("backbone", args.backbone, context),
                         num_classes=classes, num_samples=samples, image_shape=(size, size, 3),
                         method="corr", rebalancer=components.build("rebalancer", "records",
                                                                    context),
                         weight_decay=5e-4, seed=0, **extra)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit)
        model.update_enabled.assign(1.0)
        model.set_candidates(candidates)
        return model

    def batches():
        epochs = -(-total // max(args.steps, args.warmup))
        data, _ = train_batches(images, candidates, labels, batch, 0, epochs=epochs)
        return data if tensorflow_available() else _Repeated(data, epochs)

    runs = {"full": (full_model(True), batches()),
            "no augmentation": (full_model(False), batches()),
            "bare": (_bare_model(args.backbone, size, classes, 1, jit),
                     _bare_batches(images[:4 * batch], labels[:4 * batch], 2 * batch))}
    windows, _ = _time_alternating(runs, args.steps, args.warmup, 1, args.repeats)
    timings = {name: step_summary(windows[name], args.steps, batch) for name in runs}
    if args.trace and keras.backend.backend() == "jax":
        import jax

        with jax.profiler.trace(args.trace):
            _time_steps(runs["full"][0], batches(), args.steps, 1, 1, batch)
    return {"backend": keras.backend.backend(), "jit": jit, "timings": timings}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet-small")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trace", help="write a jax.profiler trace of the full JAX step here")
    parser.add_argument("--one-backend", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_backend:
        print("RESULT " + json.dumps(measure(args)))
        return
    results = {}
    for backend in ("tensorflow", "jax"):
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run([sys.executable, __file__, "--one-backend", *sys.argv[1:]],
                              check=False, env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.exit(f"{backend} failed:\n{done.stderr[-3000:]}")
        results[backend] = json.loads(lines[-1][len("RESULT "):])
    tf_t, jax_t = results["tensorflow"]["timings"], results["jax"]["timings"]
    print(f"{args.backbone}, batch {args.batch_size} (2 views), ms/step: median of "
          f"{args.repeats} x {args.steps} steps [min-max]; TF "
          f"{'XLA' if results['tensorflow']['jit'] else 'graph'}, JAX jit")
    print("| step | TensorFlow | JAX | JAX / TF |")
    print("|---|---:|---:|---:|")
    for name in ("full", "no augmentation", "bare"):
        a, b = tf_t[name], jax_t[name]
        print(f"| {name} | {a['median']:.1f} [{a['min']:.1f}-{a['max']:.1f}] | "
              f"{b['median']:.1f} [{b['min']:.1f}-{b['max']:.1f}] | "
              f"{b['median'] / a['median']:.2f} |")
    for backend, t in (("TF", tf_t), ("JAX", jax_t)):
        print(f"{backend}: full / bare {t['full']['median'] / t['bare']['median']:.2f}, "
              f"augmentation {t['full']['median'] - t['no augmentation']['median']:.1f} ms/step")


if __name__ == "__main__":
    main()
