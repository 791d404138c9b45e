"""Batch logs that stay on the device until a callback reads them.

Keras' ``CallbackList`` converts every batch's logs (loss, metrics) to Python floats before it
calls any callback's ``on_train_batch_end``. Each conversion is a device-to-host read of that
step's result: on TensorFlow (whose callbacks always run on the main thread) and on JAX when any
callback has a batch hook, the loop cannot hand the device the next step until the current one has
finished and its loss has come back. :class:`LazyCallbackList` hands the callbacks a
:class:`LazyLogs` instead, which converts a value only when it is read, so a progress display that
reads the loss every few batches costs one read every few batches, and a callback that never looks
costs none. Epoch logs are converted as before (once an epoch).
"""

from collections.abc import MutableMapping

import keras


def _to_python(value):
    """The value as Keras' own conversion gives it: a float where it is one, else unchanged."""
    if keras.ops.is_tensor(value):
        value = keras.ops.convert_to_numpy(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _flatten(logs, into):
    for key, value in sorted(logs.items()):
        if isinstance(value, dict):
            _flatten(value, into)
        else:
            into[key] = value
    return into


class LazyLogs(MutableMapping):
    """A mapping of log names to values, each converted to a Python value on first read.

    Nested dicts are flattened, as Keras does; a converted value is kept, so reading it twice
    costs one conversion.
    """

    def __init__(self, logs=None):
        self._raw = _flatten(logs or {}, {})
        self._done = {}

    def __getitem__(self, key):
        if key not in self._done:
            self._done[key] = _to_python(self._raw[key])
        return self._done[key]

    def __setitem__(self, key, value):
        self._raw[key] = value
        self._done.pop(key, None)

    def __delitem__(self, key):
        del self._raw[key]
        self._done.pop(key, None)

    def __iter__(self):
        return iter(self._raw)

    def __len__(self):
        return len(self._raw)

    def raw(self):
        """The values as the step returned them, none converted (a dict)."""
        return dict(self._raw)

    def __repr__(self):
        return f"LazyLogs({sorted(self._raw)})"


class LazyCallbackList(keras.callbacks.CallbackList):
    """A ``CallbackList`` whose batch-end hooks get :class:`LazyLogs` (module docstring).

    Pass it as ``fit(callbacks=...)``; build it with :func:`lazy_callbacks`, which sets it up
    as ``fit`` would its own.
    """

    def add_first(self, callbacks):
        """Puts ``callbacks`` before the others, except those of a class already in the list
        (as :meth:`ltpll.PLLModel.fit` does with its own callbacks: the caller's replace them)."""
        taken = {type(callback) for callback in self.callbacks}
        added = [callback for callback in callbacks if type(callback) not in taken]
        for callback in added:
            callback.set_model(self.model)
            callback.set_params(self.params)
        self.callbacks[:0] = added
        self._configure_async_dispatch(self.callbacks)

    def _on_batch_end(self, batch, logs=None):
        logs = LazyLogs(logs)
        for callback in self.callbacks:
            callback.on_batch_end(batch, logs=logs)

    def _on_train_batch_end(self, batch, logs=None):
        logs = LazyLogs(logs)
        for callback in self.callbacks:
            callback.on_train_batch_end(batch, logs=logs)


def lazy_callbacks(model, callbacks, epochs, steps):
    """The callbacks for ``model.fit(..., verbose=0)`` as the list ``fit`` would build, but
    lazy: a History is added (``fit`` returns it) and no Keras progress bar."""
    return LazyCallbackList(list(callbacks), add_history=True, add_progbar=False, model=model,
                            verbose=0, epochs=epochs, steps=steps)
