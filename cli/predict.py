"""``ltpll predict``: classify image files with an exported model."""

import json

import click

from ltpll.cli.app import pass_app, user_errors


@click.command()
@click.argument("export_dir")
@click.argument("images", nargs=-1, required=True)
@click.option("--top-k", type=int, default=3, show_default=True,
              help="Classes to show per image, most probable first.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON for scripts instead of a table.")
@pass_app
@user_errors
def predict(app, export_dir, images, top_k, as_json):
    """Classify IMAGES (JPEG, PNG, GIF, BMP; any size) with an `ltpll export` directory."""
    from ltpll.export import predict_files

    results = predict_files(export_dir, images, top_k=top_k)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    app.console.print(predictions_table(results, title=f"Predictions of {export_dir}"))


def predictions_table(results, title=None):
    """One row per image: its top-k classes with their probabilities."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title) if title else None)
    table.add_column("image", overflow="fold")
    width = max((len(result["top_k"]) for result in results), default=0)
    for rank in range(width):
        table.add_column(f"#{rank + 1}")
    for result in results:
        table.add_row(escape(result["image"]), *(
            f"{escape(guess['class_name'])} [dim]{guess['probability']:.3f}[/]"
            for guess in result["top_k"]
        ))
    return table
