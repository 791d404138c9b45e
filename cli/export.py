"""``ltpll export``: a finished run as a TensorFlow SavedModel (and a ``.keras`` copy)."""

import time

import click

from ltpll.cli.app import pass_app, user_errors


@click.command()
@click.argument("run_dir")
@click.argument("out_dir")
@pass_app
@user_errors
def export(app, run_dir, out_dir):
    """Export RUN_DIR to OUT_DIR as a SavedModel for TensorFlow Serving.

    Signatures: serving_default (encoded JPEG/PNG strings) and serve_uint8 (uint8 [N, H, W, 3]);
    both return probabilities (prior removed), class_id and class_name. OUT_DIR must not exist
    or be empty; it appears only once the export is complete.
    """
    from ltpll.export import EXPORT_FILES, SERVE_ENCODED, SERVE_UINT8
    from ltpll.export import export as run_export

    started = time.time()
    run_export(run_dir, out_dir)
    app.console.print(
        f"exported [bold]{run_dir}[/] to [bold]{out_dir}[/] in {time.time() - started:.1f}s: "
        f"SavedModel signatures {SERVE_ENCODED} (encoded images) and {SERVE_UINT8} "
        f"(uint8 arrays); Keras model {EXPORT_FILES['keras']}",
        soft_wrap=True,
    )
