"""``ltpll pretrain``: self-supervised rotation pre-training of a backbone (SSP).

The result directory is what ``ltpll train --init-from DIR`` starts from. The pre-training uses
the long-tailed training subset that ``ltpll train`` makes, so the flags that decide the subset
(``--dataset``, ``--imbalance-ratio``, ``--imbalance-profile``, ``--max-per-class``,
``--candidate-model``/``--hierarchical``, ``--image-size``, ``--strict`` and ``--seed`` or
``--data-seed``) must be the same in both.
"""

import click

from ltpll.cli.app import pass_app, user_errors
from ltpll.cli.options import component_choice, subset_config, subset_options


@click.command()
@subset_options
@click.option("--imbalance-ratio", type=float, default=None,
              help="rho of the long-tailed subset, as in `ltpll train` (pass the same value). "
                   "Default: keep the training split as it is.")
@component_choice("backbone", help="The backbone to pre-train; train with the same one.")
@click.option("--epochs", type=int, default=200, show_default=True)
@click.option("--batch-size", type=int, default=256, show_default=True,
              help="Images per step; each is seen rotated 4 ways, so the backbone sees 4x.")
@click.option("--lr", type=float, default=0.1, show_default=True,
              help="Initial SGD learning rate (momentum 0.9, cosine decay); RotNet's 0.1.")
@click.option("--weight-decay", type=float, default=5e-4, show_default=True,
              help="Coupled L2, as PyTorch SGD's weight_decay (RotNet's 5e-4).")
@click.option("--seed", type=int, default=123, show_default=True,
              help="Also picks the long-tailed subset (unless --data-seed is given): use the "
                   "seed of the training run.")
@click.option("--jit/--no-jit", "jit_compile", default=None,
              help="XLA-compile the step (TensorFlow) or not [default: XLA on a GPU, a plain "
                   "TensorFlow graph on a CPU, where it is faster].")
@click.option("--output", required=True, metavar="DIR",
              help="New directory for backbone.weights.h5 and pretrain.json.")
@pass_app
@user_errors
def pretrain(app, **flags):
    """Pre-train a backbone by predicting image rotations (self-supervised, no labels).

    Yang & Xu (NeurIPS 2020) found that this pre-training on the training images lifts every
    long-tail method. Pass the same --dataset, --imbalance-ratio, --max-per-class, --seed (and
    --data-seed, --imbalance-profile, --hierarchical, --image-size) as the later `ltpll train`,
    so both see the same long-tailed subset; then train with `ltpll train --init-from DIR`.
    """
    from rich.markup import escape

    from ltpll.config import DataConfig
    from ltpll.reporting import RichProgress
    from ltpll.representation.ssp import pretrain as run_pretraining

    data = DataConfig(**subset_config(flags), imbalance_ratio=flags["imbalance_ratio"])
    app.console.print(
        f"[bold]ltpll pretrain[/]: rotation prediction on {escape(data.dataset)}, backbone "
        f"{escape(flags['backbone'])}, {flags['epochs']} epochs -> {escape(flags['output'])}"
    )
    _, summary = run_pretraining(
        data, flags["backbone"], epochs=flags["epochs"], batch_size=flags["batch_size"],
        lr=flags["lr"], weight_decay=flags["weight_decay"], seed=flags["seed"],
        output=flags["output"], log=app.console.print,
        callbacks=[RichProgress(app.console, flags["epochs"])], jit_compile=flags["jit_compile"],
    )
    app.console.print(
        f"rotation accuracy {summary['rotation_accuracy']:.2%} (loss {summary['loss']:.4f}) "
        f"after {summary['seconds']:.1f}s; backbone saved to [bold]{escape(flags['output'])}[/]"
    )
    app.console.print(f"use it with `ltpll train --init-from {escape(flags['output'])}` and the "
                      "same --dataset, --imbalance-ratio, --max-per-class and --seed")
