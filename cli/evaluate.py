"""``ltpll evaluate``: test metrics of a finished run."""

import os

import click

from ltpll.cli.app import pass_app, user_errors


@click.command()
@click.argument("run_dir")
@click.option("--dataset", default=None,
              help="Evaluate on another dataset with the same classes (default: the run's own).")
@click.option("--split", default=None, help="Split to evaluate (default: the run's test split).")
@click.option("--batch-size", type=int, default=512, show_default=True)
@click.option("--output", default=None,
              help="Metrics JSON to write (default: RUN_DIR/metrics.json for the run's own data).")
@pass_app
@user_errors
def evaluate(app, run_dir, dataset, split, batch_size, output):
    """Evaluate a trained run: top-1/top-5, per-class and Many/Medium/Few accuracy."""
    from ltpll.errors import LTPLLError
    from ltpll.fileio import read_json
    from ltpll.reporting import metrics_table, per_class_table
    from ltpll.run_dir import RUN_FILES
    from ltpll.training import evaluate as run_evaluation

    if batch_size < 1:
        raise LTPLLError(f"--batch-size must be >= 1; received {batch_size}")
    result = run_evaluation(run_dir, dataset=dataset, split=split, batch_size=batch_size,
                            output=output)
    counts = read_json(os.path.join(run_dir, RUN_FILES["class_counts"]))["counts"]
    app.console.print(metrics_table(result, title=f"Test metrics of {run_dir}"))
    app.console.print(per_class_table(result, counts))
