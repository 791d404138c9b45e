"""``ltpll components``: what can be chosen, from the registry (no Keras, instant)."""

import click

from ltpll import components as registry
from ltpll.cli.app import pass_app


@click.command()
@click.argument("kind", required=False, type=click.Choice(list(registry.KINDS)))
@pass_app
def components(app, kind):
    """List the registered methods, rebalancers, loss weightings and backbones (or one KIND),
    with their flags and defaults; plugins in LTPLL_PLUGINS are included."""
    from rich.markup import escape
    from rich.table import Table

    for name in [kind] if kind else registry.KINDS:
        info = registry.KINDS[name]
        table = Table(title=f"{info.title}s ({info.flag})", title_justify="left")
        table.add_column("name", no_wrap=True)
        table.add_column("label")
        table.add_column("options (default)", no_wrap=True)
        table.add_column("what it is")
        for component in registry.components(name):
            options = "\n".join(
                f"{option.flag(component.name)} "
                f"{option.default_help if option.default is None and option.default_help else option.default}"
                for option in component.options)
            table.add_row(escape(component.name), escape(component.label), escape(options),
                          escape(component.help))
        app.console.print(table)
