"""Measures the training step: images/s of the full PLL step next to the bare backbone's.

The full step is what ``ltpll train`` runs: uint8 batch -> two augmented views on the device ->
backbone -> head -> method loss + confidence update + rebalancer, compiled. The bare step is the
same backbone and head trained with plain cross-entropy on already-prepared float images of the
same count (2 x batch, as the two views), no augmentation, no table, no prior. Their ratio is
the overhead of our step: 1.0 would mean PLL disambiguation, RECORDS and on-device augmentation
cost nothing beyond the network itself.

Both are timed as one ``fit`` call of ``steps`` steps after a warm-up call that compiles, so the
figures exclude compilation; images/s count every view (two per training image).
"""

import time

import keras
import numpy as np

from ltpll import components
from ltpll.assembly import dtype_policy
from ltpll.data.pipeline import train_batches
from ltpll.environment import tensorflow_available, xla_is_faster
from ltpll.models.pll_model import PLLModel


def bench_step(backbone="resnet18", batch_size=256, steps=50, precision="float32",
               method="corr", rebalance="records", image_size=32, num_classes=10,
               steps_per_execution=1, warmup=3, seed=0, jit_compile=None, loss_weighting="none"):
    """Times the full PLL training step and the bare backbone step.

    Returns:
        A dict: ``full_images_per_s`` and ``bare_images_per_s`` (views counted),
        ``full_ms_per_step``, ``bare_ms_per_step``, ``overhead_ratio`` (full / bare), the
        settings, and the Keras backend and devices.
    """
    if jit_compile is None:  # what `ltpll train` would choose on this machine
        jit_compile = xla_is_faster()
    rng = np.random.default_rng(seed)
    samples = batch_size * max(steps, warmup)   # one epoch of distinct samples covers a fit
    images = rng.integers(0, 256, (samples, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, samples)
    candidates = (rng.random((samples, num_classes)) < 0.3).astype("float32")
    candidates[np.arange(samples), labels] = 1.0

    with dtype_policy(precision):
        full = _full_model(backbone, image_size, num_classes, samples, method, rebalance, seed,
                           steps_per_execution, jit_compile, loss_weighting)
        bare = _bare_model(backbone, image_size, num_classes, steps_per_execution, jit_compile)
    full.set_candidates(candidates)
    batches, _ = train_batches(images, candidates, labels, batch_size, seed, epochs=1)
    full_seconds = _time_fit(full, batches, steps, warmup)
    pool = 4 * batch_size   # bare views: a pool of prepared float images, cycled
    bare_seconds = _time_fit(bare, _bare_batches(images[:pool], labels[:pool], 2 * batch_size),
                             steps, warmup)
    views_per_step = 2 * batch_size
    result = {
        "backbone": backbone, "batch_size": batch_size, "steps": steps, "precision": precision,
        "method": method, "rebalance": rebalance, "loss_weighting": loss_weighting,
        "image_size": image_size,
        "steps_per_execution": steps_per_execution, "jit_compile": jit_compile,
        "backend": keras.backend.backend(),
        "devices": _devices(),
        "full_ms_per_step": 1000.0 * full_seconds / steps,
        "bare_ms_per_step": 1000.0 * bare_seconds / steps,
        "full_images_per_s": views_per_step * steps / full_seconds,
        "bare_images_per_s": views_per_step * steps / bare_seconds,
    }
    result["overhead_ratio"] = result["full_images_per_s"] / result["bare_images_per_s"]
    return result


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


def _time_fit(model, data, steps, warmup):
    """Seconds of one ``fit`` of ``steps`` steps, after a warm-up fit that compiles."""
    model.fit(data, epochs=1, steps_per_epoch=warmup, verbose=0)
    started = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return time.perf_counter() - started


def _devices():
    if keras.backend.backend() == "jax":
        import jax

        return [str(device) for device in jax.devices()]
    if tensorflow_available():
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return [device.name for device in gpus] or ["CPU"]
    return ["CPU"]
