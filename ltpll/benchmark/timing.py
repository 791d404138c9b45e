"""Times training steps from inside ``fit``, not around it.

Timing a whole ``fit`` call counts what happens before the first step and after the last one:
creating the input iterator and, on TensorFlow, tearing it down, which was seen to wait seconds
with the CPU idle (figures landing on 10 ms x (2^k - 1), the doubling wake-up period of tf.data's
autotuning thread). :class:`StepTimer` instead reads the clock at the start of the first timed
batch and at the end of the last one, after the warm-up batches (which compile), in ``repeats``
back-to-back windows of ``steps`` batches, so one ``fit`` gives several samples of the same
compiled step.

Steps run asynchronously (JAX always, TensorFlow on an accelerator), so each window edge waits
for the device work issued so far to finish (:func:`finish_device_work`); nothing is read back
between the edges, so the window sees the step as ``ltpll train`` runs it.
"""

import time

import keras

from ltpll.batch_logs import LazyLogs


def finish_device_work(model, logs=None):
    """Blocks until the steps issued so far have finished on the device.

    On JAX it waits for the step's outputs and the training state the trainer carries between
    steps (``model._jax_state``: the trainer keeps the new weights there, not in the variables);
    elsewhere it reads a value the step writes (the optimizer's step count) and the step's logs.
    """
    raw = logs.raw() if isinstance(logs, LazyLogs) else dict(logs or {})
    if keras.backend.backend() == "jax":
        import jax

        jax.block_until_ready((raw, getattr(model, "_jax_state", None)))
        return
    keras.ops.convert_to_numpy(model.optimizer.iterations)
    for value in raw.values():
        if keras.ops.is_tensor(value):
            keras.ops.convert_to_numpy(value)


class StepTimer(keras.callbacks.Callback):
    """Seconds per window of ``steps`` training batches, after ``warmup`` untimed ones.

    Args:
        warmup: batches before the first window (they compile and fill the input pipeline).
        steps: batches per window.
        repeats: windows, back to back; fit for ``warmup + steps * repeats`` batches.
        clock: seconds, monotonic (``time.perf_counter``; a test passes a fake one).
        sync: ``sync(model, logs)`` blocks until the device work is done
            (:func:`finish_device_work`).

    After ``fit``, ``window_seconds`` holds one duration per window that completed.
    """

    def __init__(self, warmup, steps, repeats=1, clock=time.perf_counter,
                 sync=finish_device_work):
        super().__init__()
        self.warmup, self.steps, self.repeats = warmup, steps, repeats
        self.clock, self.sync = clock, sync
        self.window_seconds = []
        self._started = None

    def on_train_begin(self, logs=None):
        self.window_seconds, self._started = [], None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.warmup:  # the first window: wait for the warm-up's work first
            self.sync(self.model, None)
            self._started = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        timed = batch + 1 - self.warmup
        if timed <= 0 or timed % self.steps or len(self.window_seconds) == self.repeats:
            return
        self.sync(self.model, logs)
        now = self.clock()
        self.window_seconds.append(now - self._started)
        self._started = now   # the next window starts where this one ended

    def total_steps(self):
        """Batches ``fit`` must run for every window to complete."""
        return self.warmup + self.steps * self.repeats
