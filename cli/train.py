"""``ltpll train``: one training run into a run directory, or ``--resume`` an unfinished one."""

import click

from ltpll import components
from ltpll.cli.app import pass_app, user_errors
from ltpll.cli.options import (
    ComponentChoice,
    component_choice,
    run_config,
    shared_training_options,
    unused_option_flags,
)


@click.command()
@shared_training_options
@click.option("--imbalance-ratio", type=float, default=None,
              help="rho = largest/smallest class of the long-tailed subset (e.g. 100). "
                   "Default: keep the training split's own class sizes (at most "
                   "--max-per-class each, if given).")
@click.option("--partial-rate", type=float, default=0.3, show_default=True,
              help="q: probability that each false label joins a generated candidate set.")
@component_choice("method")
@click.option("--rebalance", type=ComponentChoice("rebalancer"), default=None,
              help=f"Long-tail rebalancing: {', '.join(components.names('rebalancer'))} "
                   "[default: none].")
@click.option("--records/--no-records", default=None,
              help="Shorthand for --rebalance records / none.")
@click.option("--seed", type=int, default=123, show_default=True)
@click.option("--output", default="runs/latest", show_default=True, help="Run directory.")
@click.option("--resume", "resume_dir", default=None, metavar="RUN_DIR",
              help="Continue an unfinished run from its last complete epoch (its config.json "
                   "decides every setting; other flags are ignored).")
@pass_app
@user_errors
def train(app, **flags):
    """Train a PLL model on long-tailed data and write a run directory."""
    from click.core import ParameterSource
    from rich.markup import escape

    from ltpll.errors import LTPLLError
    from ltpll.reporting import RichProgress
    from ltpll.training import resume
    from ltpll.training import train as run_training

    if flags["resume_dir"]:
        return _resume(app, flags["resume_dir"], resume)
    rebalance = flags["rebalance"]
    if flags["records"] is not None:
        implied = "records" if flags["records"] else "none"
        if rebalance not in (None, implied):
            raise LTPLLError(f"--{'' if flags['records'] else 'no-'}records contradicts "
                             f"--rebalance {rebalance}")
        rebalance = implied
    config = run_config(
        flags, method=flags["method"], rebalance=rebalance or "none",
        imbalance_ratio=flags["imbalance_ratio"], partial_rate=flags["partial_rate"],
        seed=flags["seed"], output=flags["output"],
    )
    context = click.get_current_context()
    typed = {name for name in context.params
             if context.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    chosen = {kind: [config.model.name(kind)] for kind in components.KINDS}
    for flag in unused_option_flags(chosen, typed):
        app.errors.print(f"note: {flag} does not apply to this run; ignored")
    app.console.print(
        f"[bold]ltpll train[/]: {describe(config.model)} on {escape(config.data.dataset)} "
        f"({config.data.describe()}), backbone {config.model.name('backbone')}, "
        f"{config.train.epochs} epochs -> {escape(config.output)}", soft_wrap=True,
    )
    _, final = run_training(
        config, callbacks=[RichProgress(app.console, config.train.epochs)],
        log=app.console.print,
    )
    _report(app, final, config.output)


def _report(app, final, run_dir):
    from ltpll.reporting import metrics_table, per_class_table, selection_table

    app.console.print(metrics_table(final))
    app.console.print(per_class_table(final))
    selection = selection_table(final)
    if selection is not None:
        app.console.print(selection)
    app.console.print(f"trained in {final['train_seconds']:.1f}s; run saved to [bold]{run_dir}[/]")


def _resume(app, run_dir, resume):
    from click.core import ParameterSource

    from ltpll.reporting import RichProgress

    context = click.get_current_context()
    ignored = [name for name in context.params if name != "resume_dir"
               and context.get_parameter_source(name) == ParameterSource.COMMANDLINE]
    if ignored:
        app.errors.print(f"note: --resume takes every setting from {run_dir}/config.json; "
                         f"ignoring {', '.join('--' + n.replace('_', '-') for n in ignored)}")
    # RichProgress reads the epoch count from fit: resume() alone reads the run's config.
    _, final = resume(run_dir, callbacks=[RichProgress(app.console)], log=app.console.print)
    _report(app, final, run_dir)


def describe(model_config):
    """``CORR + RECORDS (mixup)``: what a run trains, in words (the components' labels)."""
    text = model_config.declaration("method").label
    if model_config.name("rebalancer") != "none":
        text += f" + {model_config.declaration('rebalancer').label}"
    if model_config.name("weighting") != "none":
        text += f" + {model_config.declaration('weighting').label} weighting"
    if model_config.init_from:
        text += f" from {model_config.init_from}"
    return text + (" (mixup)" if model_config.mixup else "")
