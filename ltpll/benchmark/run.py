"""Runs a benchmark grid cell by cell, skipping finished cells, and keeps the results current.

A cell interrupted mid-training (crash, Ctrl-C, SIGKILL) continues from its last complete epoch
when the grid runs again with the same settings; with other settings it starts over.

After every cell ``results.csv`` and ``results.md`` are rewritten (atomically), so an
interrupted grid still leaves a complete report of what finished; the plots are drawn at the end.
"""

import os

import keras

from ltpll.benchmark.grid import cell_dir, finished_row, prepare_cell_dir, same_settings
from ltpll.benchmark.report import write_results
from ltpll.errors import LTPLLError
from ltpll.run_dir import read_config, run_status
from ltpll.training import resume, train


def run_grid(cells, config_for, output, *, callbacks=None, on_cell=None, log=None, plots=True):
    """Trains every unfinished cell of a grid and writes the tables (and plots).

    Args:
        cells: the :class:`~ltpll.benchmark.grid.Cell` list, in running order.
        config_for: ``config_for(cell, run_dir)`` -> the cell's validated RunConfig.
        output: the benchmark directory; cells go to ``output/cells/<name>``.
        callbacks: ``callbacks(cell)`` -> extra Keras callbacks for a cell's ``fit``.
        on_cell: ``on_cell(cell, row, skipped, rows)`` after each cell (progress display).
        log: one-line messages from training (default: silent).
        plots: draw the PNG figures at the end.

    Returns:
        The result rows of all cells, in running order.

    Raises:
        LTPLLError: for bad data or settings; rows of cells finished before stay written.
    """
    os.makedirs(output, exist_ok=True)
    rows = []
    for cell in cells:
        run_dir = cell_dir(output, cell)
        config = config_for(cell, run_dir)
        row = finished_row(cell, run_dir, config.to_dict())
        skipped = row is not None
        if not skipped:
            keras.backend.clear_session()  # one grid builds many models; free the last one
            extra = list(callbacks(cell)) if callbacks else []
            if _resumable(run_dir, config):
                resume(run_dir, callbacks=extra, log=log or (lambda *_: None))
            else:
                prepare_cell_dir(run_dir)
                train(config, callbacks=extra, log=log or (lambda *_: None))
            row = finished_row(cell, run_dir)
        rows.append(row)
        write_results(rows, output)
        if on_cell is not None:
            on_cell(cell, row, skipped, rows)
    if plots:
        from ltpll.benchmark.plots import write_plots

        write_results(rows, output, plots=write_plots(rows, output))
    return rows


def _resumable(run_dir, config):
    """True for an unfinished run of exactly this cell's settings."""
    if run_status(run_dir) != "unfinished":
        return False
    try:
        saved = read_config(run_dir)
    except LTPLLError:  # written by another ltpll version: start over
        return False
    return same_settings(saved.to_dict(), config.to_dict())
