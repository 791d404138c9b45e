"""The benchmark's figures: why the numbers in the tables differ, not just that they do.

* :func:`plot_priors`: the class prior each run estimated at the end of training against the true
  training distribution. RECORDS' claim is that its prior follows the long tail; a plain method's
  does not.
* :func:`plot_prior_distance`: the L2 distance between estimated and true prior, epoch by epoch
  (``history.csv``'s ``prior_l2``), so one sees how fast each rebalancer's prior settles.
* :func:`plot_per_class_accuracy`: per-class test accuracy with classes ordered by training count,
  where a rebalancer's gain on the tail shows.

The numbers behind each figure come from :func:`prior_data`, :func:`prior_distance_data` and
:func:`per_class_data` (so they can be checked without looking at a picture). matplotlib is
optional (``pip install 'ltpll[plots]'``) and imported only when a plot is drawn.
Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg canvas: no display is
ever needed and pyplot's global state (its backend, its list of open figures) is never touched,
so a caller's notebook or GUI backend is left alone. Each PNG is written atomically. A plot with
no data to show is not drawn: its function returns None.
"""

import collections
import csv
import importlib.util
import math
import os

import numpy as np

from ltpll.benchmark.report import (
    display_name,
    method_key,
    method_name,
    rebalancer_key,
    rebalancer_label,
    setting_label,
)
from ltpll.errors import LTPLLError
from ltpll.fileio import atomic_path, read_json

PLOT_FILES = {
    "priors": "prior_vs_true.png",
    "prior_distance": "prior_l2_over_epochs.png",
    "per_class": "per_class_accuracy.png",
}
# Classes are named on the x axis up to this many; beyond, the axis shows their rank.
MAX_NAMED_CLASSES = 20
_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
DPI = 120


def _require_matplotlib():
    if importlib.util.find_spec("matplotlib") is None:
        raise LTPLLError("plots need matplotlib: pip install 'ltpll[plots]'")


def _figure(**kwargs):
    """A matplotlib Figure on the Agg canvas (no display, no pyplot)."""
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return path


# --- reading the run directories ---------------------------------------------------------------

def _read_json(path):
    """The JSON at ``path``, or None if it is missing or unreadable."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _class_counts(run_dir):
    """``(class_names, counts)`` from ``class_counts.json``, or None."""
    data = _read_json(os.path.join(run_dir, "class_counts.json"))
    if not data or not data.get("counts"):
        return None
    counts = np.asarray(data["counts"], dtype=np.float64)
    names = list(data.get("class_names") or range(len(counts)))
    return (names, counts) if len(names) == len(counts) else None


def _aligned(values, names, reference_names):
    """``values`` (per class, in ``names`` order) reordered to ``reference_names``; None if the
    class sets differ."""
    if values is None or len(values) != len(names) or set(names) != set(reference_names):
        return None
    position = {name: i for i, name in enumerate(names)}
    return np.array([
        np.nan if values[position[name]] is None else float(values[position[name]])
        for name in reference_names
    ])


def _prior_l2_history(run_dir):
    """``[(epoch, prior_l2), ...]`` from ``history.csv``; empty without the column."""
    try:
        with open(os.path.join(run_dir, "history.csv"), newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return []
    points = []
    for index, row in enumerate(rows):
        try:
            value = float(row.get("prior_l2") or "nan")
            epoch = int(float(row.get("epoch") or index + 1))
        except ValueError:
            continue
        if not math.isnan(value):
            points.append((epoch, value))
    return points


# --- choosing what to draw ---------------------------------------------------------------------

def _setting(rows, imbalance_ratio=None, partial_rate=None):
    """The (ρ, q) to draw: the given one, else the one with the most cells (ties: smallest)."""
    settings = collections.Counter(
        (float(row["imbalance_ratio"]), float(row["partial_rate"])) for row in rows
        if (imbalance_ratio is None or float(row["imbalance_ratio"]) == float(imbalance_ratio))
        and (partial_rate is None or float(row["partial_rate"]) == float(partial_rate))
    )
    if not settings:
        return None
    return min(settings, key=lambda s: (-settings[s], s))


def _rows_at(rows, setting):
    rho, q = setting
    return [
        row for row in rows
        if float(row["imbalance_ratio"]) == rho and float(row["partial_rate"]) == q
        and row.get("run_dir")
    ]


def _seed_order(seed):
    return (0, seed, "") if isinstance(seed, (int, float)) else (1, 0, str(seed))


def _rebalancer(row):
    return row.get("rebalancer") or "none"


def _pair_key(pair):
    return (method_key(pair[0]), rebalancer_key(pair[1]))


def _style(method, rebalancer, methods, rebalancers):
    """Colour by method, line style by rebalancer, so a figure with many lines stays legible."""
    colours = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9")
    return {
        "color": colours[methods.index(method) % len(colours)],
        "linestyle": _LINESTYLES[rebalancers.index(rebalancer) % len(_LINESTYLES)],
    }


# --- what the plots show (numbers, testable without drawing) ---------------------------------

def prior_data(rows, imbalance_ratio=None, partial_rate=None, seed=None):
    """What :func:`plot_priors` draws, classes sorted by true training count (descending).

    Args:
        imbalance_ratio, partial_rate: the (ρ, q) to show; default the one with the most cells.
        seed: the seed to show; default the smallest seed there.

    Returns:
        None without data, else ``{"setting": (ρ, q), "seed": seed, "methods": {method:
        {"class_names", "counts", "true_prior", "estimated": {rebalancer: prior}}}}``, methods
        and rebalancers in table order; a run whose classes differ from the method's first run
        is left out.
    """
    setting = _setting(rows, imbalance_ratio, partial_rate)
    if setting is None:
        return None
    selected = _rows_at(rows, setting)
    if seed is None and selected:
        seed = min((row.get("seed") for row in selected), key=_seed_order)
    curves = {}       # method -> {rebalancer: prior in the reference's class order}
    references = {}   # method -> (class names, counts) of its first readable run
    for row in selected:
        if row.get("seed") != seed:
            continue
        counted = _class_counts(row["run_dir"])
        metrics = _read_json(os.path.join(row["run_dir"], "metrics.json")) or {}
        if counted is None or not metrics.get("estimated_prior"):
            continue
        method = row["method"]
        reference_names, _ = references.setdefault(method, counted)
        prior = _aligned(metrics["estimated_prior"], metrics.get("class_names") or counted[0],
                         reference_names)
        if prior is not None:
            curves.setdefault(method, {})[_rebalancer(row)] = prior
    if not curves:
        return None
    methods = {}
    for method in sorted(curves, key=method_key):
        names, counts = references[method]
        order = np.argsort(-counts, kind="stable")
        methods[method] = {
            "class_names": [names[i] for i in order],
            "counts": counts[order],
            "true_prior": counts[order] / counts.sum(),
            "estimated": {
                rebalancer: curves[method][rebalancer][order]
                for rebalancer in sorted(curves[method], key=rebalancer_key)
            },
        }
    return {"setting": setting, "seed": seed, "methods": methods}


def prior_distance_data(rows, imbalance_ratio=None, partial_rate=None):
    """What :func:`plot_prior_distance` draws: mean ``prior_l2`` over seeds at each epoch.

    Returns:
        None without data, else ``{"setting": (ρ, q), "series": {(method, rebalancer):
        {"epochs": [...], "prior_l2": [...], "seeds": n}}}`` in table order; runs whose
        ``history.csv`` has no ``prior_l2`` values are left out.
    """
    setting = _setting(rows, imbalance_ratio, partial_rate)
    if setting is None:
        return None
    values = {}   # (method, rebalancer) -> {epoch: [values over seeds]}
    seeds = collections.defaultdict(set)
    for row in _rows_at(rows, setting):
        points = _prior_l2_history(row["run_dir"])
        pair = (row["method"], _rebalancer(row))
        for epoch, value in points:
            values.setdefault(pair, {}).setdefault(epoch, []).append(value)
        if points:
            seeds[pair].add(row.get("seed"))
    if not values:
        return None
    series = {}
    for pair in sorted(values, key=_pair_key):
        epochs = sorted(values[pair])
        series[pair] = {
            "epochs": epochs,
            "prior_l2": [math.fsum(values[pair][e]) / len(values[pair][e]) for e in epochs],
            "seeds": len(seeds[pair]),
        }
    return {"setting": setting, "series": series}


def per_class_data(rows, imbalance_ratio=None, partial_rate=None):
    """What :func:`plot_per_class_accuracy` draws, classes by training count (descending).

    Returns:
        None without data, else ``{"setting": (ρ, q), "class_names", "counts", "accuracy":
        {(method, rebalancer): mean per-class accuracy over seeds (NaN for a class no seed has
        test images of)}, "seeds": {(method, rebalancer): n}}`` in table order.
    """
    setting = _setting(rows, imbalance_ratio, partial_rate)
    if setting is None:
        return None
    reference = None  # (class names, counts) of the first readable run
    accuracy = {}     # (method, rebalancer) -> [per-class arrays in the reference's order]
    for row in _rows_at(rows, setting):
        counted = _class_counts(row["run_dir"])
        metrics = _read_json(os.path.join(row["run_dir"], "metrics.json")) or {}
        if counted is None or not metrics.get("per_class"):
            continue
        if reference is None:
            reference = counted
        values = _aligned(
            metrics["per_class"], metrics.get("class_names") or counted[0], reference[0]
        )
        if values is not None:
            accuracy.setdefault((row["method"], _rebalancer(row)), []).append(values)
    if not accuracy:
        return None
    names, counts = reference
    order = np.argsort(-counts, kind="stable")
    means = {}
    for pair in sorted(accuracy, key=_pair_key):
        stacked = np.vstack(accuracy[pair])[:, order]
        present = ~np.isnan(stacked)
        total = np.where(present, stacked, 0.0).sum(axis=0)
        means[pair] = np.where(present.any(axis=0), total / np.maximum(present.sum(axis=0), 1),
                               np.nan)
    return {
        "setting": setting,
        "class_names": [names[i] for i in order],
        "counts": counts[order],
        "accuracy": means,
        "seeds": {pair: len(accuracy[pair]) for pair in means},
    }


# --- the plots ---------------------------------------------------------------------------------

def _class_axis(axis, names):
    """x ticks: class names (rotated) for few classes, else their rank."""
    if len(names) <= MAX_NAMED_CLASSES:
        axis.set_xticks(range(len(names)))
        axis.set_xticklabels([str(name) for name in names], rotation=45, ha="right")
    axis.set_xlabel("classes by training count (most → fewest)")


def _marker(num_classes):
    return {"marker": "o", "markersize": 3} if num_classes <= MAX_NAMED_CLASSES else {}


def plot_priors(rows, path, imbalance_ratio=None, partial_rate=None, seed=None):
    """Estimated class prior at the end of training vs the true prior, one subplot per method.

    Classes on the x axis by true training count (descending); the true prior as bars, one line
    per rebalancer (``metrics.json``'s ``estimated_prior``); log y axis when the prior spans
    20x or more. Arguments as :func:`prior_data`.

    Returns:
        ``path``, or None when no run has both ``estimated_prior`` and ``class_counts.json``.
    """
    _require_matplotlib()
    data = prior_data(rows, imbalance_ratio, partial_rate, seed)
    if data is None:
        return None
    methods = list(data["methods"])
    columns = min(len(methods), 2)
    grid_rows = math.ceil(len(methods) / columns)
    figure = _figure(figsize=(6.0 * columns, 4.0 * grid_rows), layout="constrained")
    axes = figure.subplots(grid_rows, columns, squeeze=False).ravel()
    for axis, method in zip(axes, methods):
        curves = data["methods"][method]
        true_prior = curves["true_prior"]
        x = np.arange(len(true_prior))
        axis.bar(x, true_prior, color="0.8", label="true prior")
        for rebalancer, prior in curves["estimated"].items():
            axis.plot(x, prior, label=rebalancer_label(rebalancer) or "no rebalancer",
                      **_marker(len(x)))
        positive = true_prior[true_prior > 0]
        if len(positive) and positive.max() / positive.min() >= 20:
            axis.set_yscale("log")
        axis.set_title(method_name(method))
        axis.set_ylabel("class prior")
        _class_axis(axis, curves["class_names"])
        axis.legend(fontsize="small")
    for axis in axes[len(methods):]:
        axis.set_visible(False)
    figure.suptitle(
        f"Estimated vs true class prior ({setting_label(*data['setting'])}, seed {data['seed']})"
    )
    return _save(figure, path)


def plot_prior_distance(rows, path, imbalance_ratio=None, partial_rate=None):
    """L2 distance between estimated and true prior over epochs, one line per method+rebalancer.

    Each line is the mean over seeds at each epoch (:func:`prior_distance_data`).

    Returns:
        ``path``, or None when no run at the chosen (ρ, q) logged ``prior_l2``.
    """
    _require_matplotlib()
    data = prior_distance_data(rows, imbalance_ratio, partial_rate)
    if data is None:
        return None
    pairs = list(data["series"])
    methods = sorted({m for m, _ in pairs}, key=method_key)
    rebalancers = sorted({r for _, r in pairs}, key=rebalancer_key)
    figure = _figure(figsize=(7.5, 4.5), layout="constrained")
    axis = figure.subplots()
    for (method, rebalancer), line in data["series"].items():
        n = line["seeds"]
        axis.plot(
            line["epochs"], line["prior_l2"],
            label=f"{display_name(method, rebalancer)} ({n} seed{'s' if n != 1 else ''})",
            **_style(method, rebalancer, methods, rebalancers),
        )
    axis.set_xlabel("epoch")
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.set_ylabel("‖estimated prior − true prior‖₂")
    axis.set_title(
        f"Prior estimate over training ({setting_label(*data['setting'])}, mean over seeds)"
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    return _save(figure, path)


def plot_per_class_accuracy(rows, path, imbalance_ratio=None, partial_rate=None):
    """Per-class test accuracy by class frequency, one line per method+rebalancer.

    x: classes by training count, descending, with the counts as grey bars on a log-scale right
    axis; each line is the mean over seeds (:func:`per_class_data`).

    Returns:
        ``path``, or None when no run at the chosen (ρ, q) has per-class accuracy.
    """
    _require_matplotlib()
    data = per_class_data(rows, imbalance_ratio, partial_rate)
    if data is None:
        return None
    x = np.arange(len(data["counts"]))
    pairs = list(data["accuracy"])
    methods = sorted({m for m, _ in pairs}, key=method_key)
    rebalancers = sorted({r for _, r in pairs}, key=rebalancer_key)
    figure = _figure(figsize=(max(7.5, 0.1 * len(x) + 5), 4.5), layout="constrained")
    axis = figure.subplots()
    counts_axis = axis.twinx()
    counts_axis.bar(x, data["counts"], color="0.88", width=0.9)
    counts_axis.set_yscale("log")
    counts_axis.set_ylabel("training images (log scale)")
    axis.set_zorder(counts_axis.get_zorder() + 1)  # lines in front of the bars
    axis.patch.set_visible(False)
    for (method, rebalancer), accuracy in data["accuracy"].items():
        axis.plot(
            x, 100.0 * accuracy, label=display_name(method, rebalancer), **_marker(len(x)),
            **_style(method, rebalancer, methods, rebalancers),
        )
    axis.set_ylim(0, 102)
    axis.set_ylabel("test accuracy (%)")
    _class_axis(axis, data["class_names"])
    axis.set_title(
        f"Per-class accuracy by class frequency ({setting_label(*data['setting'])}, "
        "mean over seeds)"
    )
    axis.legend(fontsize="small", loc="lower left")
    return _save(figure, path)


def write_plots(rows, output_dir, imbalance_ratio=None, partial_rate=None):
    """Draws all three plots into ``output_dir`` (names in :data:`PLOT_FILES`).

    A plot with no data is skipped. Returns the paths written, in the order of ``PLOT_FILES``.

    Raises:
        LTPLLError: if matplotlib is not installed.
    """
    _require_matplotlib()
    rows = list(rows)
    os.makedirs(output_dir, exist_ok=True)
    setting = {"imbalance_ratio": imbalance_ratio, "partial_rate": partial_rate}
    written = []
    for key, draw in (
        ("priors", plot_priors),
        ("prior_distance", plot_prior_distance),
        ("per_class", plot_per_class_accuracy),
    ):
        path = draw(rows, os.path.join(output_dir, PLOT_FILES[key]), **setting)
        if path is not None:
            written.append(path)
    return written

