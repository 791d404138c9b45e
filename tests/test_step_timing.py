"""bench-step's timer and the lazy batch logs: arithmetic with a fake clock, reads counted."""

import io

import keras
import numpy as np
from rich.console import Console

from ltpll.batch_logs import LazyCallbackList, LazyLogs, lazy_callbacks
from ltpll.benchmark.step import step_summary
from ltpll.benchmark.timing import StepTimer
from ltpll.reporting import RichProgress


class FakeClock:
    """Returns the given times, one per read."""

    def __init__(self, times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def _drive(callback, batches, logs=lambda batch: None):
    """Calls the batch hooks as fit's loop does, for ``batches`` batches."""
    callback.on_train_begin()
    for batch in range(batches):
        callback.on_train_batch_begin(batch)
        callback.on_train_batch_end(batch, logs(batch))


def test_timer_windows_start_after_warmup_and_chain():
    synced = []
    timer = StepTimer(warmup=2, steps=3, repeats=2, clock=FakeClock([10.0, 10.6, 11.5]),
                      sync=lambda model, logs: synced.append(logs))
    assert timer.total_steps() == 8
    _drive(timer, 8, logs=lambda batch: {"batch": batch})
    # Window 1: batches 2-4 (10.0 -> 10.6), window 2: batches 5-7 (10.6 -> 11.5).
    assert np.allclose(timer.window_seconds, [0.6, 0.9])
    # The device is waited for once before the first window and at each window's end only:
    # never inside a window.
    assert synced == [None, {"batch": 4}, {"batch": 7}]


def test_timer_ignores_batches_past_its_windows_and_resets_per_fit():
    clock = FakeClock([0.0, 2.0, 5.0, 5.5])
    timer = StepTimer(warmup=1, steps=2, repeats=1, clock=clock, sync=lambda model, logs: None)
    _drive(timer, 6)   # batches 3-5 are past the single window: not timed
    assert timer.window_seconds == [2.0]
    _drive(timer, 3)   # a second fit measures afresh
    assert timer.window_seconds == [0.5]


def test_step_summary_counts_images_and_views():
    # Windows of 4 steps of batch 32: 0.4 s, 0.2 s, 0.3 s -> 100, 50, 75 ms per step.
    summary = step_summary([0.4, 0.2, 0.3], steps=4, batch_size=32)
    assert np.allclose(summary["ms_per_step"], [100.0, 50.0, 75.0])
    assert (summary["min"], summary["median"], summary["max"]) == (50.0, 75.0, 100.0)
    assert np.isclose(summary["images_per_s"], 32 / 0.075)
    assert np.isclose(summary["views_per_s"], 64 / 0.075)


class Counted:
    """A log value that counts how often it is converted to a float."""

    conversions = 0

    def __init__(self, value):
        self.value = value

    def __float__(self):
        Counted.conversions += 1
        return self.value


def test_lazy_logs_convert_a_value_once_and_only_when_read():
    Counted.conversions = 0
    logs = LazyLogs({"loss": Counted(0.5), "nested": {"acc": Counted(0.25)}})
    assert sorted(logs) == ["acc", "loss"] and Counted.conversions == 0
    assert logs["loss"] == 0.5 and logs.get("loss") == 0.5
    assert Counted.conversions == 1
    assert dict(logs) == {"acc": 0.25, "loss": 0.5} and Counted.conversions == 2


def test_lazy_logs_read_device_tensors_as_floats():
    logs = LazyLogs({"loss": keras.ops.convert_to_tensor(1.5), "name": "x"})
    assert logs["loss"] == 1.5 and isinstance(logs["loss"], float) and logs["name"] == "x"


def test_progress_reads_the_loss_every_n_batches_only():
    Counted.conversions = 0
    progress = RichProgress(Console(file=io.StringIO()), epochs=1, read_every=10)
    callbacks = LazyCallbackList([progress])
    callbacks.set_params({"epochs": 1, "steps": 25})
    callbacks.on_train_begin()
    callbacks.on_epoch_begin(0)
    for batch in range(25):
        callbacks.on_train_batch_begin(batch)
        callbacks.on_train_batch_end(batch, {"loss": Counted(1.0), "acc": Counted(0.5)})
    # Batches 10 and 20 were read, loss and accuracy each: 4 conversions, not 50.
    assert Counted.conversions == 4
    task = progress.progress.tasks[0]
    assert task.completed == 25 and task.fields["loss"] == "1.0000"
    callbacks.on_epoch_end(0, {"loss": 0.75})
    callbacks.on_train_end()
    assert progress.progress.tasks[0].fields["loss"] == "0.7500"


def test_lazy_callbacks_give_fit_its_history():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    data = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
    history = model.fit(*data, batch_size=4, epochs=2, verbose=0,
                        callbacks=lazy_callbacks(model, [], epochs=2, steps=2))
    assert len(history.history["loss"]) == 2


def test_add_first_puts_missing_callbacks_first_and_keeps_the_callers():
    class Mine(keras.callbacks.Callback):
        pass

    class Other(keras.callbacks.Callback):
        pass

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    callers = Mine()
    callbacks = lazy_callbacks(model, [callers], epochs=1, steps=3)
    own_mine, own_other = Mine(), Other()
    callbacks.add_first([own_mine, own_other])
    assert callbacks.callbacks[0] is own_other and callers in callbacks.callbacks
    assert own_mine not in callbacks.callbacks
    assert own_other.model is model and own_other.params["steps"] == 3
