"""``ltpll bench-step``: images/s of the full training step vs the bare backbone."""

import json

import click

from ltpll.cli.app import pass_app, user_errors
from ltpll.cli.options import ComponentChoice, component_choice
from ltpll.config import PRECISION_CHOICES


@click.command("bench-step")
@component_choice("backbone")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--steps", type=int, default=50, show_default=True,
              help="Timed steps per repeat.")
@click.option("--warmup", type=int, default=3, show_default=True,
              help="Untimed steps first (they compile).")
@click.option("--repeats", type=int, default=5, show_default=True,
              help="Rounds; each times one window of --steps steps of the full step, then one of "
                   "the bare step, so that a drift in the machine's speed reaches both alike.")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto",
              show_default=True, help="Keras dtype policy; auto: as `ltpll train` would here.")
@click.option("--steps-per-execution", type=int, default=1, show_default=True,
              help="Steps per compiled call; --steps and --warmup are rounded up to a multiple "
                   "of it.")
@component_choice("method")
@click.option("--rebalance", type=ComponentChoice("rebalancer"),
              default="records", show_default=True)
@click.option("--loss-weighting", type=ComponentChoice("weighting"),
              default="none", show_default=True,
              help="Loss weighting in the full step (meta: its ~3x virtual step is timed).")
@click.option("--image-size", type=int, default=32, show_default=True)
@click.option("--num-classes", type=int, default=10, show_default=True)
@click.option("--jit/--no-jit", "jit_compile", default=None,
              help="Compile both steps with XLA (TensorFlow; JAX always jits) [default: as "
                   "`ltpll train` would here: XLA on a GPU, not on a CPU].")
@click.option("--json", "as_json", is_flag=True, help="Print the measurement as JSON.")
@pass_app
@user_errors
def bench_step(app, as_json, **options):
    """Time the full PLL training step (two views, augmentation, table, prior) against the bare
    forward+backward of the same views; prints ms/step (min/median/max over --repeats windows
    timed inside fit, warm-up excluded, the two steps alternating), images/s, views/s and the
    step-time ratio (the median of the rounds' paired ratios)."""
    from ltpll.errors import LTPLLError

    for name in ("batch_size", "steps", "warmup", "repeats", "steps_per_execution",
                 "num_classes"):
        if options[name] < 1:
            raise LTPLLError(f"--{name.replace('_', '-')} must be >= 1; received {options[name]}")
    from ltpll.benchmark.step import bench_step as measure

    with app.console.status("compiling and timing (full step and bare backbone, alternating)..."):
        result = measure(**options)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{result['backbone']}, batch {result['batch_size']}, "
                        f"{result['precision']}, {result['backend']}"
                        f"{'' if result['jit_compile'] else ' (no XLA)'} on "
                        f"{', '.join(result['devices'])}")
    for column in ("step", "ms/step min", "median", "max", "images/s", "views/s"):
        table.add_column(column, justify="right")
    weighting = ("" if result["loss_weighting"] == "none"
                 else f" + {result['loss_weighting']} weighting")
    names = {"full": f"full {result['method'].upper()} + {result['rebalance']}{weighting}",
             "bare": "bare backbone"}
    for key, name in names.items():
        timing = result[key]
        table.add_row(name, *(f"{timing[column]:.1f}" for column in ("min", "median", "max")),
                      f"{timing['images_per_s']:,.1f}", f"{timing['views_per_s']:,.1f}")
    table.caption = (f"{result['repeats']} rounds of one {result['steps']}-step window each, "
                     f"after {result['warmup']} warm-up steps (then one per fit); images/s and "
                     "views/s at the median; 2 views per training image in both steps")
    app.console.print(table)
    paired = result["paired_ratios"]
    app.console.print(f"step-time ratio (full / bare, median of {len(paired)} rounds): "
                      f"[bold]{result['overhead_ratio']:.3f}[/] "
                      f"(rounds {min(paired):.3f}-{max(paired):.3f})")
