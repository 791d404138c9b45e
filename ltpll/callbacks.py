"""The run-level callbacks of ``ltpll train``: each owns one concern, and those with state save
and restore it themselves.

* :class:`PriorLog`: the class prior the rebalancer uses, each epoch (``prior.json``), and
  :class:`Records`, the RECORDS callback of the Python API (a PriorLog that brings its layer);
* :class:`EvaluateEvery`: test metrics every N epochs, into the epoch logs;
* :class:`CoveringEvery`: the label-free selection criteria on the held-out partial-label split;
* :class:`HistoryLog`: one CSV row per epoch (``history.csv``);
* :class:`TrainingClock`: training seconds, across resumes;
* :class:`StopOnNaN`: stops on a NaN or infinite epoch loss, keeping the last good checkpoint;
* :class:`Checkpoint`: the whole training state at the end of every epoch.

A stateful callback has a ``state_key`` and ``get_state()`` / ``set_state(value)`` (JSON-ready
values); :class:`Checkpoint` saves each one's state under its key and hands it back when a run
resumes, as Keras' BackupAndRestore does for the model.
"""

import csv
import time

import keras
import numpy as np

from ltpll.checkpoint import save_checkpoint
from ltpll.errors import LTPLLError
from ltpll.fileio import atomic_path, write_json
from ltpll.metrics import evaluate_logits, predict_logits, prior_distance
from ltpll.rebalancing.records import RecordsPrior
from ltpll.run_dir import latest_checkpoint
from ltpll.selection import balanced_covering_rate, covering_rate
from ltpll.weighting.base import estimated_class_counts


class PriorLog(keras.callbacks.Callback):
    """Logs the class prior a model's rebalancer uses, each epoch.

    Args:
        true_class_counts: the hidden per-class training counts, if known (benchmarks); the L2
            distance between the prior and this distribution is then logged as ``prior_l2``.
        history_path: if given, a JSON file rewritten (atomically) each epoch with the prior of
            every epoch so far.
    """

    state_key = "prior"

    def __init__(self, true_class_counts=None, history_path=None):
        super().__init__()
        self.true_class_counts = (
            None if true_class_counts is None else np.asarray(true_class_counts, dtype=np.int64)
        )
        self.history_path = history_path
        self.history = []

    def get_state(self):
        return self.history

    def set_state(self, value):
        self.history = list(value or [])

    def on_epoch_end(self, epoch, logs=None):
        prior = self.model.estimated_prior()
        entry = {"epoch": epoch + 1, "prior": [round(float(p), 6) for p in prior]}
        if self.true_class_counts is not None:
            distance = prior_distance(prior, self.true_class_counts)
            entry["l2_to_true"] = distance
            if logs is not None:
                logs["prior_l2"] = distance
        self.history.append(entry)
        if self.history_path:
            write_json(
                self.history_path,
                {"true_class_counts": None if self.true_class_counts is None
                 else self.true_class_counts.tolist(),
                 "epochs": self.history},
            )


class Records(PriorLog):
    """The RECORDS callback: creates the prior layer (:class:`RecordsPrior`, the model's
    ``rebalancer``) and reports the estimated prior each epoch.

    Example:
        ```python
        records = ltpll.Records(momentum=0.9, true_class_counts=counts)
        model = ltpll.PLLModel(backbone, num_classes=10, num_samples=len(candidates),
                               rebalancer=records)
        model.set_candidates(candidates)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        model.fit(train_dataset(images, candidates, labels, 256, seed=0), epochs=10,
                  callbacks=[records])
        ```

    Args:
        momentum: momentum of the feature mean (``--records-momentum``, default 0.9).
        true_class_counts, history_path: as for :class:`PriorLog`.
    """

    def __init__(self, momentum=0.9, true_class_counts=None, history_path=None):
        super().__init__(true_class_counts, history_path)
        self.layer = RecordsPrior(momentum=momentum, name="records")


class EvaluateEvery(keras.callbacks.Callback):
    """Evaluates on the test split every ``every`` epochs and after the last one.

    Adds ``test_top1``, ``test_top5``, ``test_many``, ``test_medium`` and ``test_few`` to the
    epoch logs, so the history CSV, TensorBoard and the progress display all show them; the
    latest metrics are its state (``last``).
    """

    state_key = "last_test"

    def __init__(self, images, labels, class_counts, every, epochs):
        super().__init__()
        self.images, self.labels, self.class_counts = images, labels, class_counts
        self.every, self.epochs = every, epochs
        self.last = None

    def get_state(self):
        return self.last

    def set_state(self, value):
        self.last = value

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every and epoch + 1 != self.epochs:
            return
        self.last = evaluate_logits(
            predict_logits(self.model, self.images), self.labels, self.class_counts
        )
        if logs is not None:
            for key in ("top1", "top5", "many", "medium", "few"):
                value = self.last[key]
                logs[f"test_{key}"] = float("nan") if value is None else value


class CoveringEvery(keras.callbacks.Callback):
    """Measures the label-free selection criteria on the held-out partial-label split
    (``--val-fraction``) on the epochs :class:`EvaluateEvery` evaluates.

    Adds ``val_covering`` and ``val_covering_balanced`` (:mod:`ltpll.selection`) to the epoch
    logs, so they reach the history CSV that the epoch selection reads. The class prior of the
    balanced rate is the column mean of the training confidence table (a sum on the device and
    a ``[C]`` copy, not the N x C table). Stateless: the history keeps the values.
    """

    def __init__(self, images, candidates, every, epochs):
        super().__init__()
        self.images, self.candidates = images, candidates
        self.every, self.epochs = every, epochs

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or ((epoch + 1) % self.every and epoch + 1 != self.epochs):
            return
        predictions = np.argmax(predict_logits(self.model, self.images), axis=1)
        prior = estimated_class_counts(self.model.confidence)
        logs["val_covering"] = covering_rate(predictions, self.candidates)
        logs["val_covering_balanced"] = balanced_covering_rate(predictions, self.candidates, prior)


class HistoryLog(keras.callbacks.Callback):
    """Writes one CSV row per epoch, rewriting the file atomically each time.

    Unlike Keras' CSVLogger, columns are the union of every epoch's keys (test metrics appear
    only on evaluation epochs) and no empty ``val_*`` columns are invented.
    """

    state_key = "history"

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.rows = []

    def get_state(self):
        return self.rows

    def set_state(self, value):
        self.rows = list(value or [])

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns, restval="")
                writer.writeheader()
                writer.writerows(self.rows)


class TrainingClock(keras.callbacks.Callback):
    """Seconds spent training, carried across a resume (its state)."""

    state_key = "train_seconds"

    def __init__(self):
        super().__init__()
        self.before, self.started = 0.0, time.time()

    def get_state(self):
        return self.seconds()

    def set_state(self, value):
        self.before, self.started = float(value or 0.0), time.time()

    def seconds(self):
        return self.before + time.time() - self.started


class StopOnNaN(keras.callbacks.Callback):
    """Stops when an epoch's loss is NaN or infinite, naming the epoch; the checkpoint of the
    last good epoch stays on disk for ``--resume`` (after lowering the learning rate, say).

    It checks the epoch's mean loss (a NaN batch makes it NaN) rather than every batch, so it
    adds no per-batch host round trip; it runs before the checkpoint callback, so the broken
    weights are never saved.
    """

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            _, kept = latest_checkpoint(self.run_dir)
            kept_text = (f"the checkpoint of epoch {kept} is kept in {self.run_dir}" if kept
                         else "no epoch had completed, so there is no checkpoint")
            raise LTPLLError(
                f"the loss became {float(loss)} in epoch {epoch + 1}; training stopped and "
                f"{kept_text}"
            )


class Checkpoint(keras.callbacks.Callback):
    """Checkpoints the whole training state at the end of every epoch (:mod:`ltpll.checkpoint`):
    the model, and the state of each of ``stateful`` under its ``state_key``.

    Args:
        run_dir: where ``checkpoint/`` goes.
        stateful: the callbacks whose state is part of the training state.
        restore: the saved state of a checkpoint being resumed (``state.json``); each callback
            gets its part back now, so they continue where they stopped.

    Put it last among the callbacks, so the history row, prior log and test metrics of the epoch
    are part of the state it saves.
    """

    def __init__(self, run_dir, stateful, restore=None):
        super().__init__()
        self.run_dir, self.stateful = run_dir, list(stateful)
        for callback in self.stateful:
            if restore is not None and callback.state_key in restore:
                callback.set_state(restore[callback.state_key])

    def on_epoch_end(self, epoch, logs=None):
        save_checkpoint(self.run_dir, self.model, epoch + 1,
                        {callback.state_key: callback.get_state() for callback in self.stateful})
