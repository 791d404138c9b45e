"""Measures the training step: images/s of the full PLL step next to the bare backbone's.

The full step is what ``ltpll train`` runs: uint8 batch -> two augmented views on the device ->
backbone -> head -> method loss + confidence update + rebalancer, compiled. The bare step is the
same backbone and head trained with plain cross-entropy on already-prepared float images of the
same count (2 x batch, as the two views), no augmentation, no table, no prior. Their ratio is
the overhead of our step: 1.0 would mean PLL disambiguation, RECORDS and on-device augmentation
cost nothing beyond the network itself.

Both are timed in ``repeats`` rounds; each round times one window of ``steps`` batches of the
full step, then one of the bare step, each inside its own ``fit`` by
:class:`~ltpll.benchmark.timing.StepTimer`, from the start of the window's first batch to the end
of its last with the device work finished, after untimed warm-up batches (``warmup`` in the
first round, where they compile; one execution later, to restart the input). Nothing around
``fit`` (iterator set-up and teardown) is counted. Alternating the two steps puts each pair of
windows seconds apart, so a machine whose speed drifts (shared cloud CPUs were seen to switch
between states ~15% apart) slows both windows of a pair alike: the overhead is the median of the
per-round ratios. Images are training images (B a step); views are what the network sees (2B a
step, in both steps).
"""

import statistics
import time

import keras
import numpy as np

from ltpll import components
from ltpll.assembly import dtype_policy
from ltpll.batch_logs import lazy_callbacks
from ltpll.benchmark.timing import StepTimer
from ltpll.data.pipeline import train_batches
from ltpll.environment import fastest_precision, tensorflow_available, xla_is_faster
from ltpll.models.pll_model import PLLModel


def bench_step(backbone="resnet18", batch_size=256, steps=50, precision="auto",
               method="corr", rebalance="records", image_size=32, num_classes=10,
               steps_per_execution=1, warmup=3, seed=0, jit_compile=None, loss_weighting="none",
               repeats=5):
    """Times the full PLL training step and the bare backbone step.

    Returns:
        A dict: for ``full`` and ``bare``, the per-window ``ms_per_step`` list and its ``min``,
        ``median`` and ``max``, ``images_per_s`` and ``views_per_s`` at the median, and
        ``fit_s`` (its ``fit`` calls, warm-up and teardown included, to show what the windows
        leave out); ``paired_ratios`` (full / bare step time, round by round) and
        ``overhead_ratio`` (their median); the settings and the Keras backend and devices.
    """
    # Keras calls the batch callbacks once per execution of steps_per_execution steps, so the
    # windows can only start and end there: warm-up and window lengths are rounded up to it.
    warmup, steps = (-(-n // steps_per_execution) * steps_per_execution for n in (warmup, steps))
    if jit_compile is None:  # what `ltpll train` would choose on this machine
        jit_compile = xla_is_faster()
    if precision == "auto":
        precision = fastest_precision()
    rng = np.random.default_rng(seed)
    samples = batch_size * max(steps, warmup)   # distinct samples for one epoch of the pipeline
    total = warmup + steps                      # the most batches one fit reads
    epochs = -(-total // max(steps, warmup))    # enough pipeline epochs for them
    images = rng.integers(0, 256, (samples, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, samples)
    candidates = (rng.random((samples, num_classes)) < 0.3).astype("float32")
    candidates[np.arange(samples), labels] = 1.0

    with dtype_policy(precision):
        full = _full_model(backbone, image_size, num_classes, samples, method, rebalance, seed,
                           steps_per_execution, jit_compile, loss_weighting)
        bare = _bare_model(backbone, image_size, num_classes, steps_per_execution, jit_compile)
    full.set_candidates(candidates)
    batches, _ = train_batches(images, candidates, labels, batch_size, seed, epochs=epochs)
    if not tensorflow_available():  # numpy batches are one epoch long: repeat them
        batches = _Repeated(batches, epochs)
    pool = 4 * batch_size   # bare views: a pool of prepared float images, cycled
    runs = {"full": (full, batches),
            "bare": (bare, _bare_batches(images[:pool], labels[:pool], 2 * batch_size))}
    windows, fit_seconds = _time_alternating(runs, steps, warmup, steps_per_execution, repeats)
    timings = {name: {**step_summary(windows[name], steps, batch_size),
                      "fit_s": fit_seconds[name]} for name in runs}
    paired = [f / b for f, b in zip(windows["full"], windows["bare"])]
    return {
        "backbone": backbone, "batch_size": batch_size, "steps": steps, "warmup": warmup,
        "repeats": repeats, "precision": precision,
        "method": method, "rebalance": rebalance, "loss_weighting": loss_weighting,
        "image_size": image_size,
        "steps_per_execution": steps_per_execution, "jit_compile": jit_compile,
        "backend": keras.backend.backend(),
        "devices": _devices(),
        **timings,
        "paired_ratios": paired,
        "overhead_ratio": statistics.median(paired),
    }


def step_summary(window_seconds, steps, batch_size):
    """Per-step milliseconds of each window, their min/median/max, and images/s and views/s
    (two views per training image) at the median."""
    ms = [1000.0 * seconds / steps for seconds in window_seconds]
    median = statistics.median(ms)
    return {"ms_per_step": ms, "min": min(ms), "median": median, "max": max(ms),
            "images_per_s": 1000.0 * batch_size / median,
            "views_per_s": 2000.0 * batch_size / median}


def _time_alternating(runs, steps, warmup, rewarm, repeats):
    """``repeats`` rounds, each one window of every ``(model, data)`` of ``runs`` in turn.

    Returns ``({name: window seconds per round}, {name: seconds in its fit calls})``. The
    first round's fits start with ``warmup`` untimed batches, the later ones with ``rewarm``.
    """
    windows = {name: [] for name in runs}
    fit_seconds = dict.fromkeys(runs, 0.0)
    for round_index in range(repeats):
        for name, (model, data) in runs.items():
            seconds, fit_s = _fit_windows(model, data, steps,
                                          warmup if round_index == 0 else rewarm, 1)
            windows[name] += seconds
            fit_seconds[name] += fit_s
    return windows, fit_seconds


def _time_steps(model, data, steps, warmup, repeats, batch_size):
    """One ``fit`` of warm-up plus ``repeats`` timed windows, summarised (:func:`step_summary`)."""
    window_seconds, fit_seconds = _fit_windows(model, data, steps, warmup, repeats)
    return {**step_summary(window_seconds, steps, batch_size), "fit_s": fit_seconds}


def _fit_windows(model, data, steps, warmup, repeats):
    """One ``fit`` of warm-up plus ``repeats`` timed windows (:class:`StepTimer`): the windows'
    seconds and the whole ``fit``'s."""
    timer = StepTimer(warmup, steps, repeats)
    total = timer.total_steps()
    started = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=total, verbose=0, shuffle=False,
              callbacks=lazy_callbacks(model, [timer], epochs=1, steps=total))
    fit_seconds = time.perf_counter() - started
    if len(timer.window_seconds) != repeats:
        raise RuntimeError(f"the input ran out after {len(timer.window_seconds)} of "
                           f"{repeats} timed windows")
    return timer.window_seconds, fit_seconds


def _full_model(backbone, image_size, num_classes, samples, method, rebalance, seed,
                steps_per_execution, jit_compile=True, loss_weighting="none"):
    """The PLL model with every switch on: updates, and the weighting active from step one
    (a weighting that needs a dev set gets 10 random images per class, so its full cost is
    timed)."""
    shape = (image_size, image_size, 3)
    rng = np.random.default_rng(seed + 1)
    dev_size = 10 * num_classes if components.get("weighting", loss_weighting).dev_per_class else 0
    context = components.BuildContext(
        num_classes=num_classes, class_counts=np.ones(num_classes), epochs=1,
        image_size=image_size, image_shape=shape, seed=seed,
        dev_images=rng.integers(0, 256, (dev_size, *shape), dtype=np.uint8),
        dev_labels=np.arange(dev_size) % num_classes)
    weighting = components.build("weighting", loss_weighting, context)
    model = PLLModel(
        components.build("backbone", backbone, context), num_classes=num_classes,
        num_samples=samples, image_shape=shape, method=method,
        rebalancer=components.build("rebalancer", rebalance, context),
        weight_decay=5e-4, seed=seed, weighting=weighting,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)
    model.update_enabled.assign(1.0)
    weighting.active.assign(1.0)
    if hasattr(weighting, "constant_lr"):
        weighting.constant_lr.assign(0.01)
    return model


def _bare_model(backbone, image_size, num_classes, steps_per_execution, jit_compile=True):
    inputs = keras.Input((image_size, image_size, 3))
    features = components.build("backbone", backbone,
                                components.BuildContext(image_size=image_size))(inputs)
    logits = keras.layers.Dense(num_classes, dtype="float32")(features)
    model = keras.Model(inputs, logits)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile, steps_per_execution=steps_per_execution,
    )
    return model


def _bare_batches(images, labels, batch_size):
    """Endless batches of prepared float views and labels, from a small pool."""
    views = (np.concatenate([images, images]).astype("float32") / 255.0)
    view_labels = np.concatenate([labels, labels]).astype("int32")
    if tensorflow_available():
        import tensorflow as tf

        return (tf.data.Dataset.from_tensor_slices((views, view_labels)).batch(batch_size)
                .repeat().prefetch(tf.data.AUTOTUNE))
    return _Cycle(views, view_labels, batch_size)


class _Repeated(keras.utils.PyDataset):
    """A ``PyDataset`` served ``times`` over in one epoch (batch ``i`` is ``i % len``), for a fit
    longer than one epoch of it; timing needs no new order per pass."""

    def __init__(self, batches, times):
        super().__init__()
        self.batches, self.times = batches, times

    def __len__(self):
        return len(self.batches) * self.times

    def __getitem__(self, index):
        return self.batches[index % len(self.batches)]


class _Cycle(keras.utils.PyDataset):
    def __init__(self, views, labels, batch_size):
        super().__init__()
        self.views, self.labels, self.batch_size = views, labels, batch_size

    def __len__(self):
        return 10**6

    def __getitem__(self, index):
        start = (index * self.batch_size) % (len(self.views) - self.batch_size + 1)
        return (self.views[start:start + self.batch_size],
                self.labels[start:start + self.batch_size])


def _devices():
    if keras.backend.backend() == "jax":
        import jax

        return [str(device) for device in jax.devices()]
    if tensorflow_available():
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return [device.name for device in gpus] or ["CPU"]
    return ["CPU"]
