"""The ``ltpll`` command line: flags in, a RunConfig out, the library does the work.

One module per command (``cli/train.py``, ...); this one only assembles the group. Heavy modules
(Keras, TensorFlow) are imported inside the commands so ``ltpll --help`` is instant.
"""

import click

from cli.app import App
from cli.bench_step import bench_step
from cli.benchmark import benchmark
from cli.evaluate import evaluate
from cli.export import export
from cli.predict import predict
from cli.pretrain import pretrain
from cli.pseudo_label import pseudo_label
from cli.train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx):
    """Long-tailed partial-label learning: CORR + RECORDS with Keras 3."""
    ctx.obj = App()


for command in (train, pretrain, evaluate, export, predict, pseudo_label, benchmark, bench_step):
    main.add_command(command)


if __name__ == "__main__":
    main()
