"""``ltpll benchmark``: the paper's comparison grid, resumable, with a live table."""

import os

import click

from ltpll import components
from ltpll.cli.app import pass_app, user_errors
from ltpll.cli.options import flag_dest, run_config, shared_training_options

GRID_DEFAULTS = {
    "methods": "corr,proden,lw,cavl",
    "rebalancers": "none,oracle-la,oracle-la-posthoc,records",
    "imbalance_ratios": "100",
    "partial_rates": "0.3,0.5",
    "seeds": "1",
}


@click.command()
@shared_training_options
@click.option("--methods", default=GRID_DEFAULTS["methods"], show_default=True,
              help="Comma-separated PLL methods; append +mixup for the Mixup variant.")
@click.option("--rebalancers", default=GRID_DEFAULTS["rebalancers"], show_default=True,
              help=f"Comma-separated, from: {', '.join(components.names('rebalancer'))}.")
@click.option("--imbalance-ratios", default=GRID_DEFAULTS["imbalance_ratios"],
              show_default=True, help="Comma-separated rho values.")
@click.option("--partial-rates", default=GRID_DEFAULTS["partial_rates"], show_default=True,
              help="Comma-separated q values.")
@click.option("--seeds", default=GRID_DEFAULTS["seeds"], show_default=True,
              help="Comma-separated seeds.")
@click.option("--pairs", default=None,
              help="Comma-separated method:rebalancer pairs (corr:none,corr:records,cc:none) to "
                   "run instead of every --methods x --rebalancers combination.")
@click.option("--grid", "grid_file", default=None,
              help="YAML or JSON file setting the grid axes and any of these flags; flags given "
                   "on the command line win.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG figures.")
@click.option("--output", default="runs/benchmark", show_default=True,
              help="Benchmark directory (cells/, results.csv, results.md, plots).")
@pass_app
@user_errors
def benchmark(app, **flags):
    """Run methods x rebalancers x rho x q x seeds and tabulate them like the paper.

    Finished cells are skipped, so the same command resumes an interrupted grid.
    """
    from ltpll.benchmark.grid import Grid, load_grid_file, parse_list, parse_pairs
    from ltpll.fileio import write_json

    flags = _merge_grid_file(flags, load_grid_file) if flags["grid_file"] else flags
    axes = {
        "imbalance_ratios": parse_list(flags["imbalance_ratios"], float, "imbalance-ratios"),
        "partial_rates": parse_list(flags["partial_rates"], float, "partial-rates"),
        "seeds": parse_list(flags["seeds"], int, "seeds"),
    }
    if flags["pairs"]:
        grid = Grid.from_pairs(parse_pairs(flags["pairs"]), **axes).validate()
        shape = f"{len(grid.pairs)} method:rebalancer pairs"
    else:
        grid = Grid(methods=parse_list(flags["methods"], str, "methods"),
                    rebalancers=parse_list(flags["rebalancers"], str, "rebalancers"),
                    **axes).validate()
        shape = f"{len(grid.methods)} methods x {len(grid.rebalancers)} rebalancers"
    cells = grid.cells()

    def config_for(cell, run_dir):
        return run_config(
            {**flags, "mixup": flags["mixup"] or cell.mixup}, method=cell.base_method,
            rebalance=cell.rebalancer, imbalance_ratio=cell.imbalance_ratio,
            partial_rate=cell.partial_rate, seed=cell.seed, output=run_dir,
        )

    for cell in cells:  # every cell's settings are checked before the first one trains
        config_for(cell, "")
    output = flags["output"]
    os.makedirs(output, exist_ok=True)
    write_json(os.path.join(output, "grid.json"), {
        key: value for key, value in flags.items() if key not in ("grid_file",)
    })
    app.console.print(
        f"[bold]ltpll benchmark[/]: {len(cells)} cells ({shape} x "
        f"{len(grid.imbalance_ratios)} rho x "
        f"{len(grid.partial_rates)} q x {len(grid.seeds)} seeds), {flags['epochs']} epochs each "
        f"-> {output}"
    )
    rows = _run_with_live_display(app, cells, config_for, output, flags)
    app.console.print(f"results: [bold]{os.path.join(output, 'results.md')}[/] "
                      f"({len(rows)} cells)")


def _merge_grid_file(flags, load_grid_file):
    """Values from the grid file replace defaults; flags typed on the command line win."""
    from click.core import ParameterSource

    from ltpll.errors import LTPLLError

    context = click.get_current_context()
    merged = dict(flags)
    for key, value in load_grid_file(flags["grid_file"]).items():
        key = flag_dest(key)
        if key not in flags or key in ("grid_file", "output"):
            raise LTPLLError(f"grid file {flags['grid_file']}: unknown option {key!r}")
        if context.get_parameter_source(key) != ParameterSource.COMMANDLINE:
            merged[key] = value
    return merged


def _run_with_live_display(app, cells, config_for, output, flags):
    """rich: cells done / total with an ETA, the current cell's epochs, the table filling."""
    import keras
    from rich.console import Group
    from rich.live import Live
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ltpll.benchmark.report import live_table
    from ltpll.benchmark.run import run_grid

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=app.console, speed_estimate_period=900,
    )
    grid_task = progress.add_task("[bold]cells", total=len(cells))
    epoch_task = progress.add_task("epochs", total=flags["epochs"], visible=False)
    state = {"rows": []}

    class CellEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            progress.update(epoch_task, completed=epoch + 1)
            # Fractional cells keep the ETA moving during a long cell.
            progress.update(grid_task, completed=len(state["rows"]) + (epoch + 1) / flags["epochs"])

    def callbacks(cell):
        progress.reset(epoch_task, total=flags["epochs"], visible=True,
                       description=f"  {cell.name}")
        return [CellEpochs()]

    def render():
        return Group(progress, live_table(state["rows"], len(cells)))

    with Live(render(), console=app.console, refresh_per_second=2) as live:
        def on_cell(cell, row, skipped, rows):
            state["rows"] = list(rows)
            if skipped:  # restart the clock so instant skips do not inflate the ETA's speed
                progress.reset(grid_task, total=len(cells), completed=len(rows))
                live.console.print(f"[dim]{cell.name}: finished before, skipped")
            else:
                progress.update(grid_task, completed=len(rows))
            live.update(render())

        return run_grid(cells, config_for, output, callbacks=callbacks, on_cell=on_cell,
                        plots=not flags["no_plots"])
