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
    """

    def __init__(self, console, epochs=None):
        super().__init__()
        self.console = console
        self.epochs = epochs
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
