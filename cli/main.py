"""The ``ltpll`` command line: flags in, a RunConfig out, the library does the work.

One module per command (``ltpll/cli/train.py``, ...); this one only assembles the group. Heavy
modules (Keras, TensorFlow) are imported inside the commands so ``ltpll --help`` is instant.
Plugins that register components of their own (``LTPLL_PLUGINS``, see
:func:`ltpll.components.load_plugins`) are read when the commands build their flags.
"""

import click

from ltpll.cli.app import App, Group, load_plugins, verbose_option

load_plugins()  # before the commands build their flags from the registry

from ltpll.cli.bench_step import bench_step  # noqa: E402
from ltpll.cli.benchmark import benchmark  # noqa: E402
from ltpll.cli.components import components  # noqa: E402
from ltpll.cli.evaluate import evaluate  # noqa: E402
from ltpll.cli.export import export  # noqa: E402
from ltpll.cli.predict import predict  # noqa: E402
from ltpll.cli.pretrain import pretrain  # noqa: E402
from ltpll.cli.pseudo_label import pseudo_label  # noqa: E402
from ltpll.cli.train import train  # noqa: E402


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@verbose_option
@click.pass_context
def main(ctx):
    """Long-tailed partial-label learning: CORR + RECORDS with Keras 3."""
    ctx.obj = App()


for command in (train, pretrain, evaluate, export, predict, pseudo_label, benchmark, bench_step,
                components):
    main.add_command(command)


if __name__ == "__main__":
    main()
