"""The benchmark grid's results as the RECORDS paper prints them (Hong et al., ICLR 2023).

A grid of runs only answers a question once it is read the way the paper reads it: top-1 accuracy
of each PLL method, plain and with each rebalancer, for every (imbalance ratio ρ, partial rate q),
as mean ± std over seeds (Table 1), with the gain RECORDS brings over the plain method; and the
same runs split into Many / Medium / Few classes (Table 2), which shows *where* the gain comes from.

The input is a list of *cell rows*, one per finished run (one seed of one grid cell)::

    {"method": "corr", "rebalancer": "records", "imbalance_ratio": 100.0, "partial_rate": 0.3,
     "seed": 1, "run_dir": "...", "top1": 0.77, "top5": 0.98, "many": 0.9, "medium": 0.75,
     "few": 0.6, "prior_l2": 0.12, "train_seconds": 95.2, "epochs": 20}

Accuracies are fractions; the tables show percent with two decimals. The spread over seeds is
the *sample* standard deviation (``ddof=1``), and 0 for a single seed (then only the mean is
shown). If the same seed of a cell appears twice, the later row wins.
"""

import csv
import math
import os
import statistics

from rich.table import Table

from ltpll import components
from ltpll.fileio import atomic_path

# Row labels and order come from the component registry (ltpll.components): each method and
# rebalancer declares its label, and Table 1 lists them in registration order (inside a method's
# block: the plain method, the oracles, then RECORDS last).
# results.csv columns; keys of a row not listed here go after these, before run_dir.
RESULT_COLUMNS = (
    "method", "rebalancer", "imbalance_ratio", "partial_rate", "seed",
    "top1", "top5", "many", "medium", "few", "prior_l2", "train_seconds", "epochs", "run_dir",
)
# Epoch selection (ltpll.selection): (row-key prefix, metrics.json block, Table 3 label). The
# unprefixed metrics are the last epoch's, as in Tables 1 and 2.
SELECTIONS = (
    ("", None, "last epoch"),
    ("best_test_", "best_test_epoch", "best test epoch (optimistic)"),
    ("val_cov_", "selected_by_val_covering", "val covering (label-free)"),
    ("val_bcov_", "selected_by_val_covering_balanced", "val balanced covering (label-free)"),
)
SELECTED_METRICS = ("top1", "many", "medium", "few", "epoch")
# The row keys of the selected epochs: results.csv puts them after the last epoch's metrics.
SELECTION_COLUMNS = tuple(prefix + metric for prefix, block, _ in SELECTIONS if block
                          for metric in SELECTED_METRICS)
SUMMARY_METRICS = ("top1", "top5", "many", "medium", "few", "prior_l2", *SELECTION_COLUMNS)
GROUP_METRICS = (("Many", "many"), ("Medium", "medium"), ("Few", "few"), ("Overall", "top1"))
GAIN_LABEL = "  gain of + RECORDS"
MISSING = "–"   # a cell the grid did not run (or whose metric is absent)
PENDING = "…"   # live display: a cell not finished yet
DEFAULT_TITLE = "LT-PLL benchmark results"

_INT_COLUMNS = ("seed", "epochs")
_TEXT_COLUMNS = ("method", "rebalancer", "run_dir")


# --- names and order ---------------------------------------------------------------------------

def method_name(method):
    """``"corr"`` -> ``"CORR"``, ``"corr+mixup"`` -> ``"CORR (mixup)"``; a method the registry
    does not know (a plugin that is not loaded) in capitals."""
    base, *variants = str(method).split("+")
    name = components.label("method", base) if base in components.names("method") else base.upper()
    return f"{name} ({', '.join(variants)})" if variants else name


def rebalancer_label(rebalancer):
    """``"records"`` -> ``"+ RECORDS"``; ``""`` for no rebalancer."""
    if _rebalancer(rebalancer) == "none":
        return ""
    return f"+ {components.label('rebalancer', rebalancer)}"


def row_label(method, rebalancer):
    """Table 1's row label: the method for the plain run, else ``"+ RECORDS"`` (under it)."""
    return rebalancer_label(rebalancer) or method_name(method)


def display_name(method, rebalancer):
    """A stand-alone name (Table 2, plot legends): ``"CORR"``, ``"CORR + RECORDS"``."""
    label = rebalancer_label(rebalancer)
    return f"{method_name(method)} {label}" if label else method_name(method)


def setting_label(imbalance_ratio, partial_rate):
    """``(100.0, 0.3)`` -> ``"ρ=100, q=0.3"``."""
    return f"ρ={float(imbalance_ratio):g}, q={float(partial_rate):g}"


def method_key(method):
    """Sort key: registered methods in their order, then others alphabetically; variants
    (``+mixup``) after their base."""
    base, _, variant = str(method).partition("+")
    return (components.order_key("method", base), base, variant)


def rebalancer_key(rebalancer):
    rebalancer = _rebalancer(rebalancer)
    return (components.order_key("rebalancer", rebalancer), rebalancer)


def group_key(row):
    """The cell a row belongs to, seeds aside: (method, rebalancer, ρ, q)."""
    return (
        str(row["method"]), _rebalancer(row.get("rebalancer")),
        float(row["imbalance_ratio"]), float(row["partial_rate"]),
    )


def _group_sort(key):
    method, rebalancer, rho, q = key
    return (method_key(method), rebalancer_key(rebalancer), rho, q)


def _rebalancer(rebalancer):
    return rebalancer if rebalancer else "none"


# --- numbers -----------------------------------------------------------------------------------

def _number(value):
    """A float, or None for a missing / empty / NaN value."""
    if value is None or value == "":
        return None
    value = float(value)
    return None if math.isnan(value) else value


def mean_std(values):
    """Mean and sample std (ddof=1) of ``values``; std 0 for one value; (None, None) for none."""
    values = [float(v) for v in values]
    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    return mean, (statistics.stdev(values) if len(values) >= 2 else 0.0)


def summarise(rows):
    """Mean and spread over seeds of every (method, rebalancer, ρ, q) cell.

    Returns:
        One dict per cell, in Table 1 order: ``method``, ``rebalancer``, ``imbalance_ratio``,
        ``partial_rate``, ``seeds`` (sorted list), ``n_seeds``, and for each metric in
        :data:`SUMMARY_METRICS` ``<metric>_mean``, ``<metric>_std`` (sample std, 0 for one
        value; both None when no seed has the metric) and ``<metric>_n`` (seeds that have it).
    """
    cells = {}
    for row in rows:
        cells.setdefault(group_key(row), {})[row.get("seed")] = row
    summary = []
    for key in sorted(cells, key=_group_sort):
        by_seed = cells[key]
        method, rebalancer, rho, q = key
        entry = {
            "method": method, "rebalancer": rebalancer, "imbalance_ratio": rho,
            "partial_rate": q, "seeds": sorted(by_seed, key=_seed_key), "n_seeds": len(by_seed),
        }
        for metric in SUMMARY_METRICS:
            values = [_number(row.get(metric)) for row in by_seed.values()]
            values = [v for v in values if v is not None]
            entry[f"{metric}_mean"], entry[f"{metric}_std"] = mean_std(values)
            entry[f"{metric}_n"] = len(values)
        summary.append(entry)
    return summary


def _seed_key(seed):
    return (0, seed, "") if isinstance(seed, (int, float)) else (1, 0, str(seed))


def _percent(value):
    return f"{100.0 * value:.2f}"


def _mean_pm_std(entry, metric="top1"):
    """``"77.66 ± 0.35"``, ``"77.66"`` for one seed, None when the metric is absent."""
    mean = entry.get(f"{metric}_mean") if entry else None
    if mean is None:
        return None
    if entry[f"{metric}_n"] >= 2:
        return f"{_percent(mean)} ± {_percent(entry[f'{metric}_std'])}"
    return _percent(mean)


def _gain(plain, records):
    """RECORDS minus plain, in percent, from the two *shown* (rounded) means: ``"+11.28"``."""
    if not plain or not records or plain["top1_mean"] is None or records["top1_mean"] is None:
        return None
    difference = round(round(100 * records["top1_mean"], 2) - round(100 * plain["top1_mean"], 2), 2)
    return f"{difference + 0.0:+.2f}"  # + 0.0 turns -0.0 into 0.0


# --- Table 1 -----------------------------------------------------------------------------------

def _settings(keys):
    return sorted({(rho, q) for _, _, rho, q in keys})


def _table1_lines(by_key, keys, cell_text, empty):
    """Table 1's rows as ``(label, cells, kind)``; kind is "method", "rebalancer" or "gain".

    ``cell_text(key)`` writes a method / rebalancer cell, ``empty(method, rho, q)`` a gain cell
    that has no value.

    Every method block starts with the plain method's row (even if it was not run, so the
    ``+ ...`` rows below always have a method above them); the gain row follows a block where
    both the plain method and RECORDS have results.
    """
    settings = _settings(keys)
    lines = []
    for method in sorted({key[0] for key in keys}, key=method_key):
        rebalancers = {key[1] for key in keys if key[0] == method} | {"none"}
        for rebalancer in sorted(rebalancers, key=rebalancer_key):
            cells = [cell_text((method, rebalancer, rho, q)) for rho, q in settings]
            kind = "method" if rebalancer == "none" else "rebalancer"
            lines.append((row_label(method, rebalancer), cells, kind))
        gains = [
            _gain(by_key.get((method, "none", rho, q)), by_key.get((method, "records", rho, q)))
            for rho, q in settings
        ]
        if any(gain is not None for gain in gains):
            gains = [gain or empty(method, rho, q) for gain, (rho, q) in zip(gains, settings)]
            lines.append((GAIN_LABEL, gains, "gain"))
    return settings, lines


def _markdown_table(header, rows):
    """A GitHub Markdown table, first column left-aligned, the others right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _by_key(summary):
    return {
        (s["method"], s["rebalancer"], s["imbalance_ratio"], s["partial_rate"]): s
        for s in summary
    }


def table1_markdown(rows):
    """Top-1 accuracy (%) as the paper's Table 1: methods x (ρ, q), mean ± std over seeds."""
    by_key = _by_key(summarise(rows))
    if not by_key:
        return "_No finished cells._"
    settings, lines = _table1_lines(
        by_key, set(by_key), lambda key: _mean_pm_std(by_key.get(key)) or MISSING,
        lambda *_: MISSING,
    )
    header = ["Method"] + [setting_label(rho, q) for rho, q in settings]
    return _markdown_table(header, [[label, *cells] for label, cells, _ in lines])


# --- Table 2 -----------------------------------------------------------------------------------

def _layout(summary):
    """What Tables 2 and 3 lay out: the summary by cell key, the (rho, q) settings as columns
    and the method+rebalancer pairs as rows, in the paper's order."""
    by_key = _by_key(summary)
    pairs = sorted(
        {(s["method"], s["rebalancer"]) for s in summary},
        key=lambda pair: (method_key(pair[0]), rebalancer_key(pair[1])),
    )
    return by_key, _settings(by_key), pairs


def table2_markdown(rows):
    """Many / Medium / Few / Overall accuracy (%) per method+rebalancer and (ρ, q).

    Mean over seeds of each frequency group's mean per-class accuracy (the groups of
    :func:`ltpll.metrics.frequency_groups`); Overall is top-1.
    """
    summary = summarise(rows)
    if not summary:
        return "_No finished cells._"
    by_key, settings, pairs = _layout(summary)
    header = ["Method"] + [
        f"{name} ({setting_label(rho, q)})" for rho, q in settings for name, _ in GROUP_METRICS
    ]
    body = []
    for method, rebalancer in pairs:
        cells = []
        for rho, q in settings:
            entry = by_key.get((method, rebalancer, rho, q))
            for _, metric in GROUP_METRICS:
                mean = entry.get(f"{metric}_mean") if entry else None
                cells.append(MISSING if mean is None else _percent(mean))
        body.append([display_name(method, rebalancer), *cells])
    return _markdown_table(header, body)


# --- Table 3: epoch selection -------------------------------------------------------------------

def selection_fields(metrics):
    """The row keys of the selected epochs (:data:`SELECTION_COLUMNS`) from a run's
    ``metrics.json``; None where the run has no such selection (no ``--val-fraction``, or a run
    of an older ltpll)."""
    fields = {}
    for prefix, block, _ in SELECTIONS:
        if block:
            values = metrics.get(block) or {}
            fields.update({prefix + metric: values.get(metric) for metric in SELECTED_METRICS})
    return fields


def _selections_present(summary):
    """The :data:`SELECTIONS` some cell has a top-1 for (the last epoch always)."""
    return [selection for selection in SELECTIONS
            if not selection[1] or any(s[f"{selection[0]}top1_n"] for s in summary)]


def table3_markdown(rows):
    """Many / Medium / Few / Overall accuracy (%) and the epoch at each epoch selection.

    One row per method+rebalancer and selection: the last epoch (Tables 1 and 2), the best test
    epoch (optimistic: chosen on the test labels) and, for runs with ``--val-fraction``, the two
    label-free selections of :mod:`ltpll.selection`. Overall is top-1 as mean ± std over seeds,
    the rest means; Epoch is the mean selected epoch.
    """
    summary = summarise(rows)
    if not summary:
        return "_No finished cells._"
    by_key, settings, pairs = _layout(summary)
    header = ["Method", "Selection"] + [
        f"{name} ({setting_label(rho, q)})" for rho, q in settings
        for name in ("Many", "Medium", "Few", "Overall", "Epoch")
    ]
    body = []
    for method, rebalancer in pairs:
        for prefix, _, label in _selections_present(summary):
            cells = []
            for rho, q in settings:
                entry = by_key.get((method, rebalancer, rho, q))
                for metric in ("many", "medium", "few"):
                    mean = entry.get(f"{prefix}{metric}_mean") if entry else None
                    cells.append(MISSING if mean is None else _percent(mean))
                cells.append(_mean_pm_std(entry, f"{prefix}top1") or MISSING)
                epoch = _epoch_mean(entry, prefix, rows, (method, rebalancer, rho, q))
                cells.append(MISSING if epoch is None else f"{epoch:g}")
            body.append([display_name(method, rebalancer), label, *cells])
    return _markdown_table(header, body)


def _epoch_mean(entry, prefix, rows, key):
    """The mean selected epoch of a cell, one decimal; the last epoch is the run's length."""
    if entry is None:
        return None
    if prefix:
        mean = entry.get(f"{prefix}epoch_mean")
    else:
        epochs = [_number(row.get("epochs")) for row in rows if group_key(row) == key]
        mean = mean_std([e for e in epochs if e is not None])[0]
    return None if mean is None else round(mean, 1)


# --- results.md / results.csv ------------------------------------------------------------------

PLOT_CAPTIONS = {
    "prior_vs_true.png": "estimated class prior at the end of training vs the true prior",
    "prior_l2_over_epochs.png": "L2 distance between estimated and true prior over epochs",
    "per_class_accuracy.png": "per-class test accuracy, classes by training count",
}


def _duration(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _overview(rows, summary):
    """``"12 finished cells: 4 configurations x seeds 1, 2, 3; 20 epochs each; ..."``."""
    seeds = sorted({row.get("seed") for row in rows}, key=_seed_key)
    epochs = [_number(row.get("epochs")) for row in rows]
    epochs = sorted({int(e) for e in epochs if e is not None})
    parts = [(
        f"{len(rows)} finished cell{'s' if len(rows) != 1 else ''}: {len(summary)} "
        f"configuration{'s' if len(summary) != 1 else ''} × "
        f"seed{'s' if len(seeds) != 1 else ''} {', '.join(str(s) for s in seeds)}"
    )]
    if epochs:
        span = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}–{epochs[-1]}"
        parts.append(f"{span} epoch{'s' if span != '1' else ''} each")
    seconds = [s for s in (_number(row.get("train_seconds")) for row in rows) if s is not None]
    if seconds:
        parts.append(f"{_duration(math.fsum(seconds))} of training in all")
    return "; ".join(parts) + "."


def results_markdown(rows, title=DEFAULT_TITLE, plots=()):
    """The whole ``results.md``: title, overview line, Table 1, Table 2 and the plot links.

    Args:
        plots: plot file paths, written as given (pass them relative to the markdown file).
    """
    rows = list(rows)
    summary = summarise(rows)
    lines = [f"# {title}", ""]
    lines += [_overview(rows, summary) if rows else "No finished cells yet.", ""]
    lines += [
        "## Table 1: top-1 accuracy (%)", "",
        (
            "Mean ± sample standard deviation (ddof=1) over seeds; a single number is a single "
            f"seed; {MISSING} = not run. *gain of + RECORDS* = mean with RECORDS minus the "
            "plain method's mean (of the means shown)."
        ), "",
        table1_markdown(rows), "",
        "## Table 2: Many / Medium / Few accuracy (%)", "",
        (
            "Mean over seeds of the mean per-class test accuracy of each class-frequency "
            "group; Overall is top-1."
        ), "",
        table2_markdown(rows), "",
    ]
    if len(_selections_present(summary)) > 1:
        lines += [
            "## Table 3: epoch selection (%)", "",
            (
                "*last epoch* is the epoch training ended (Tables 1 and 2). *best test epoch* "
                "is the epoch of the highest test top-1, chosen on the test labels, as the "
                "authors' scripts report 'Best Acc': optimistic, comparable only with numbers "
                "chosen the same way. The *label-free* rows choose the epoch without any true "
                "label, by the covering rate (share of predictions inside the candidate set) "
                "and its prior-balanced version on the `--val-fraction` split held out of "
                "training. Overall is top-1 (mean ± std over seeds); Epoch is the mean "
                "selected epoch."
            ), "",
            table3_markdown(rows), "",
        ]
    if plots:
        lines += ["## Plots", ""]
        for plot in plots:
            name = os.path.basename(str(plot))
            caption = PLOT_CAPTIONS.get(name)
            link = str(plot).replace(os.sep, "/")
            lines.append(f"- [{name}]({link})" + (f": {caption}" if caption else ""))
        lines.append("")
    return "\n".join(lines)


def _columns(rows):
    keys = {key for row in rows for key in row}
    selected = [key for key in SELECTION_COLUMNS if key in keys]
    extras = sorted(keys - set(RESULT_COLUMNS) - set(selected))
    return [*RESULT_COLUMNS[:-1], *selected, *extras, RESULT_COLUMNS[-1]]


def write_results_csv(rows, path):
    """One line per finished cell (Table 1 order, then seed), columns :data:`RESULT_COLUMNS`.

    Keys a row has beyond those go after them (sorted), before ``run_dir``; None is written as
    an empty field. Written atomically.
    """
    rows = sorted(rows, key=lambda row: (_group_sort(group_key(row)), _seed_key(row.get("seed"))))
    columns = _columns(rows)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return path


def read_results_csv(path):
    """Reads ``results.csv`` back into cell rows (numbers as numbers, empty fields as None)."""
    with open(path, newline="") as handle:
        return [_parse_row(row) for row in csv.DictReader(handle)]


def _parse_row(row):
    parsed = {}
    for key, text in row.items():
        if text == "" or text is None:
            parsed[key] = None
        elif key in _TEXT_COLUMNS:
            parsed[key] = text
        elif key in _INT_COLUMNS:
            parsed[key] = int(float(text))
        else:
            try:
                parsed[key] = float(text)
            except ValueError:
                parsed[key] = text
    return parsed


def write_results(rows, output_dir, plots=(), title=DEFAULT_TITLE):
    """Writes ``results.csv`` and ``results.md`` into ``output_dir``; returns the markdown.

    ``plots`` (paths of written plot files) are linked relative to ``output_dir``.
    """
    rows = list(rows)
    os.makedirs(output_dir, exist_ok=True)
    write_results_csv(rows, os.path.join(output_dir, "results.csv"))
    relative = [os.path.relpath(os.path.abspath(p), os.path.abspath(output_dir)) for p in plots]
    text = results_markdown(rows, title=title, plots=relative)
    with atomic_path(os.path.join(output_dir, "results.md")) as tmp, open(tmp, "w") as handle:
        handle.write(text)
    return text


# --- live display ------------------------------------------------------------------------------

def live_table(rows, total_cells, expected=None):
    """Table 1 as a rich table while the grid fills: finished means, ``…`` for what is pending.

    Args:
        rows: the cell rows finished so far.
        total_cells: how many runs the grid has in all (for the title).
        expected: optionally every planned run (dicts with method, rebalancer, imbalance_ratio,
            partial_rate and seed), so rows and columns not started yet show from the start and
            a cell with some seeds done shows e.g. ``(2/3)``; a cell not in the plan shows
            ``–``. Without it the table has the rows and columns of the finished runs.
    """
    rows = list(rows)
    by_key = _by_key(summarise(rows))
    planned = {}
    for cell in expected or ():
        planned.setdefault(group_key(cell), set()).add(cell.get("seed"))

    def cell_text(key):
        text = _mean_pm_std(by_key.get(key))
        if text is None:
            return MISSING if planned and key not in planned else PENDING
        wanted = len(planned.get(key, ()))
        done = by_key[key]["n_seeds"]
        return f"{text} ({done}/{wanted})" if done < wanted else text

    def gain_empty(method, rho, q):
        if not planned:
            return PENDING
        both = all((method, r, rho, q) in planned for r in ("none", "records"))
        return PENDING if both else MISSING

    keys = set(by_key) | set(planned)
    title = f"Top-1 accuracy (%): {len(rows)}/{total_cells} runs done"
    caption = f"mean ± std over finished seeds; {PENDING} = not finished"
    # Wide enough for the title and caption not to wrap while only a column or two exist.
    table = Table(title=title, caption=caption, min_width=max(len(title), len(caption)) + 2)
    table.add_column("Method")
    if not keys:
        return table
    settings, lines = _table1_lines(by_key, keys, cell_text, gain_empty)
    for rho, q in settings:
        table.add_column(setting_label(rho, q), justify="right")
    for index, (label, cells, kind) in enumerate(lines):
        last_of_block = index + 1 == len(lines) or lines[index + 1][2] == "method"
        style = {"method": "bold", "gain": "italic"}.get(kind)
        table.add_row(label, *cells, style=style, end_section=last_of_block)
    return table
