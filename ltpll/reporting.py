"""What a person sees: the rich progress display during training and the result tables."""

import math
import time

import keras
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table


def _fmt(value, spec=".4f"):
    if value is None:
        return "-"
    value = float(value)
    return "-" if math.isnan(value) else format(value, spec)


class RichProgress(keras.callbacks.Callback):
    """One progress bar per epoch with loss, train accuracy and the latest test accuracy.

    Train accuracy is measured on the weak view against the hidden true labels where they are
    known (benchmark data); test accuracy comes from the ``EvaluateEvery`` callback's logs.
    ``epochs`` defaults to the count ``fit`` was given.

    The bar moves every batch, but the loss and accuracy are read only every ``read_every``
    batches and at the end of the epoch: reading a batch's loss waits for that step to finish on
    the device, and with :class:`ltpll.batch_logs.LazyCallbackList` (as ``ltpll train`` uses) an
    unread value is never fetched.
    """

    def __init__(self, console, epochs=None, read_every=25):
        super().__init__()
        self.console = console
        self.epochs = epochs
        self.read_every = read_every
        self.progress = None
        self.task = None
        self.test_top1 = None
        self.epoch_started = None

    def on_train_begin(self, logs=None):
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  test {task.fields[test]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()

    def on_epoch_begin(self, epoch, logs=None):
        steps = self.params.get("steps") if self.params else None
        if self.epochs is None and self.params:
            self.epochs = self.params.get("epochs")
        self.epoch_started = time.time()
        self.task = self.progress.add_task(
            "train", total=steps, epoch=epoch + 1, epochs=self.epochs,
            loss="-", acc="-", test=_fmt(self.test_top1),
        )

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.read_every:
            self.progress.update(self.task, completed=batch + 1)
            return
        logs = logs or {}
        self.progress.update(
            self.task, completed=batch + 1,
            loss=_fmt(logs.get("loss")), acc=_fmt(logs.get("acc")),
        )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if "test_top1" in logs:
            self.test_top1 = logs["test_top1"]
        self.progress.update(
            self.task, loss=_fmt(logs.get("loss")), acc=_fmt(logs.get("acc")),
            test=_fmt(self.test_top1),
        )
        self.progress.stop_task(self.task)

    def on_train_end(self, logs=None):
        self.progress.stop()


def metrics_table(metrics, title="Test metrics"):
    """Overall top-1/top-5 and Many/Medium/Few accuracy as a rich table."""
    table = Table(title=title)
    for column in ("top-1", "top-5", "many", "medium", "few"):
        table.add_column(column, justify="right")
    table.add_row(*(
        _fmt(metrics.get(key), ".2%") for key in ("top1", "top5", "many", "medium", "few")
    ))
    return table


def selection_table(metrics):
    """Top-1 and Many/Medium/Few at each epoch selection of a run (:mod:`ltpll.selection`), or
    None when the run has only its last epoch (an older run, say)."""
    from ltpll.selection import SELECTIONS

    labels = {"best_test_epoch": "best test (optimistic)",
              "selected_by_val_covering": "val covering",
              "selected_by_val_covering_balanced": "val balanced covering"}
    chosen = [name for name in SELECTIONS if metrics.get(name)]
    if not chosen:
        return None
    table = Table(title="Epoch selection",
                  caption="best test: chosen on the test labels (the papers' 'Best Acc'); "
                          "val: chosen without labels on the held-out candidate sets")
    for column in ("selected by", "epoch", "criterion", "top-1", "many", "medium", "few"):
        table.add_column(column, justify="left" if column == "selected by" else "right")
    keys = ("top1", "many", "medium", "few")
    table.add_row("last epoch", "last", "-", *(_fmt(metrics.get(key), ".2%") for key in keys))
    for name in chosen:
        block = metrics[name]
        table.add_row(labels.get(name, name), str(block["epoch"]),
                      _fmt(block.get(block["criterion"])),
                      *(_fmt(block.get(key), ".2%") for key in keys))
    return table


def per_class_table(metrics, class_counts=None):
    """Per-class accuracy (with training counts and group) as a rich table."""
    names = metrics.get("class_names") or [str(i) for i in range(len(metrics["per_class"]))]
    group_of = {c: group for group, ids in metrics.get("groups", {}).items() for c in ids}
    table = Table(title="Per-class accuracy")
    table.add_column("class")
    if class_counts is not None:
        table.add_column("train images", justify="right")
    table.add_column("group")
    table.add_column("accuracy", justify="right")
    for c, name in enumerate(names):
        row = [name]
        if class_counts is not None:
            row.append(str(class_counts[c]))
        row += [group_of.get(c, "-"), _fmt(metrics["per_class"][c], ".2%")]
        table.add_row(*row)
    return table
