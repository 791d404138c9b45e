"""The ``ltpll`` command line: flags in, a RunConfig out, the library does the work.

Heavy modules (Keras, TensorFlow) are imported inside the commands so ``ltpll --help`` is
instant. Every user error surfaces as one line on stderr and exit status 2.
"""

import functools
import os
import sys

import click

EXIT_USER_ERROR = 2


class App:
    """State shared by the commands: one rich console for output, one for errors."""

    def __init__(self):
        from rich.console import Console

        self.console = Console(highlight=False)
        self.errors = Console(stderr=True, highlight=False)

    def fail(self, message):
        self.errors.print(f"[bold red]error:[/] {message}", soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)


def user_errors(command):
    """Turns LTPLLError (and Ctrl-C) into one line and a non-zero exit, never a traceback."""

    @functools.wraps(command)
    def wrapper(app, *args, **kwargs):
        from ltpll.errors import LTPLLError

        try:
            return command(app, *args, **kwargs)
        except LTPLLError as error:
            app.fail(str(error))
        except KeyboardInterrupt:
            app.errors.print("interrupted")
            sys.exit(130)

    return wrapper


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx):
    """Long-tailed partial-label learning: CORR + RECORDS with Keras 3."""
    ctx.obj = App()


pass_app = click.make_pass_decorator(App)


@main.command()
@click.option("--dataset", default="cifar10", show_default=True,
              help="cifar10, cifar100, sample (the bundled demo), an image folder "
                   "(<split>/<class>/<image>) or a .tar.gz of one.")
@click.option("--imbalance-ratio", type=float, default=None,
              help="rho = largest/smallest class of the long-tailed subset (e.g. 100). "
                   "Default: keep the training split as it is.")
@click.option("--imbalance-profile", type=click.Choice(["exp", "step"]), default="exp",
              show_default=True)
@click.option("--max-per-class", type=int, default=None,
              help="n_max of the long-tailed subset (default: the largest class).")
@click.option("--partial-rate", type=float, default=0.3, show_default=True,
              help="q: probability that each false label joins a generated candidate set.")
@click.option("--hierarchical", is_flag=True,
              help="Candidates within the true label's superclass (CIFAR-100-LT-NU).")
@click.option("--candidates", "candidates_file", type=str, default=None,
              help="CSV of your own candidate sets: path,candidates (';'-separated names or ids).")
@click.option("--image-size", type=int, default=None, help="Resize images to this square size.")
@click.option("--method", default="corr", show_default=True, help="PLL method.")
@click.option("--records/--no-records", default=False, show_default=True,
              help="RECORDS dynamic rebalancing.")
@click.option("--records-momentum", type=float, default=0.9, show_default=True)
@click.option("--backbone", default="resnet18", show_default=True,
              help="resnet18, resnet-small (CPU) or tiny.")
@click.option("--epochs", type=int, default=800, show_default=True)
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--lr", type=float, default=0.01, show_default=True)
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--weight-decay", type=float, default=1e-3, show_default=True)
@click.option("--cosine/--no-cosine", default=True, show_default=True,
              help="Cosine learning-rate decay.")
@click.option("--update-start", type=int, default=1, show_default=True,
              help="Epochs before the confidence table starts to update.")
@click.option("--eval-every", type=int, default=1, show_default=True,
              help="Evaluate on the test split every N epochs.")
@click.option("--distribute", type=click.Choice(["none", "mirrored"]), default="none",
              show_default=True)
@click.option("--seed", type=int, default=123, show_default=True)
@click.option("--output", default="runs/latest", show_default=True, help="Run directory.")
@pass_app
@user_errors
def train(app, **flags):
    """Train a PLL model on long-tailed data and write a run directory."""
    _quiet_tensorflow()
    from ltpll.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from ltpll.reporting import RichProgress, metrics_table, per_class_table
    from ltpll.training import train as run_training

    config = RunConfig(
        data=DataConfig(
            dataset=flags["dataset"], imbalance_ratio=flags["imbalance_ratio"],
            imbalance_profile=flags["imbalance_profile"], max_per_class=flags["max_per_class"],
            partial_rate=flags["partial_rate"], hierarchical=flags["hierarchical"],
            candidates=flags["candidates_file"], image_size=flags["image_size"],
        ),
        model=ModelConfig(
            backbone=flags["backbone"], method=flags["method"], records=flags["records"],
            records_momentum=flags["records_momentum"],
        ),
        train=TrainConfig(
            epochs=flags["epochs"], batch_size=flags["batch_size"], lr=flags["lr"],
            momentum=flags["momentum"], weight_decay=flags["weight_decay"],
            cosine=flags["cosine"], update_start=flags["update_start"],
            eval_every=flags["eval_every"], distribute=flags["distribute"], seed=flags["seed"],
        ),
        output=flags["output"],
    )
    config.validate()
    app.console.print(
        f"[bold]ltpll train[/]: {config.model.method.upper()}"
        f"{' + RECORDS' if config.model.records else ''} on {config.data.dataset}, "
        f"backbone {config.model.backbone}, {config.train.epochs} epochs -> {config.output}"
    )
    _, final = run_training(
        config, callbacks=[RichProgress(app.console, config.train.epochs)],
        log=app.console.print,
    )
    app.console.print(metrics_table(final))
    app.console.print(per_class_table(final))
    app.console.print(
        f"trained in {final['train_seconds']:.1f}s; run saved to [bold]{config.output}[/]"
    )


@main.command()
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
    _quiet_tensorflow()
    from ltpll.errors import LTPLLError
    from ltpll.fileio import read_json
    from ltpll.reporting import metrics_table, per_class_table
    from ltpll.training import RUN_FILES, evaluate as run_evaluation

    if batch_size < 1:
        raise LTPLLError(f"--batch-size must be >= 1; received {batch_size}")
    result = run_evaluation(run_dir, dataset=dataset, split=split, batch_size=batch_size,
                            output=output)
    counts = read_json(os.path.join(run_dir, RUN_FILES["class_counts"]))["counts"]
    app.console.print(metrics_table(result, title=f"Test metrics of {run_dir}"))
    app.console.print(per_class_table(result, counts))


if __name__ == "__main__":
    main()
