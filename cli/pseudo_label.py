"""``ltpll pseudo-label``: label a pool of unlabeled images with a finished run.

The file it writes is added to a later run with ``ltpll train --pseudo-labels FILE``
(semi-supervised long-tailed learning as in Yang & Xu, NeurIPS 2020).
"""

import click

from ltpll.cli.app import pass_app, user_errors


@click.command(name="pseudo-label")
@click.argument("run_dir")
@click.option("--output", required=True, metavar="FILE.npz",
              help="The pseudo-label file to write (must not exist).")
@click.option("--unlabeled", default=None, metavar="FOLDER",
              help="A folder of image files (any nesting, names and sizes; subfolder names are "
                   "ignored). Default: the images of the run's training split that its "
                   "long-tailed subset left out.")
@click.option("--threshold", type=float, default=0.95, show_default=True,
              help="Keep images whose top probability is at least this.")
@click.option("--unlabeled-ratio", type=float, default=5.0, show_default=True,
              help="Keep at most this many pseudo-labels per labelled training image, the most "
                   "confident first.")
@click.option("--batch-size", type=int, default=512, show_default=True)
@pass_app
@user_errors
def pseudo_label(app, run_dir, output, unlabeled, threshold, unlabeled_ratio, batch_size):
    """Pseudo-label unlabeled images with the trained run RUN_DIR."""
    from ltpll.errors import LTPLLError
    from ltpll.representation import pseudo_label as pl

    # Every check that needs no model first: a typo should not cost a model load.
    pl.check_output_path(output)
    if not 0.0 <= threshold <= 1.0:
        raise LTPLLError(f"--threshold must be in [0, 1]; received {threshold}")
    if not unlabeled_ratio >= 0:
        raise LTPLLError(f"--unlabeled-ratio must be >= 0; received {unlabeled_ratio}")
    if batch_size < 1:
        raise LTPLLError(f"--batch-size must be >= 1; received {batch_size}")

    from ltpll.saving import load_run

    config, counts, model = load_run(run_dir)
    class_names = [str(name) for name in counts["class_names"]]
    if unlabeled:
        images, paths, skipped = pl.load_unlabeled_folder(unlabeled, model.image_shape)
        true_labels, pool = None, f"folder {unlabeled}"
        if skipped:
            app.console.print(f"skipped {len(skipped)} unreadable image(s) under {unlabeled}, "
                              f"e.g. {skipped[0]}")
    else:
        images, true_labels, paths = pl.leftover_pool(config)
        pool = (f"the {config.data.train_split} images of {config.data.dataset} the run did "
                "not train on")
        if not len(images):
            raise LTPLLError(f"{run_dir} trained on every image of its training split, so none "
                             "is left to pseudo-label; pass --unlabeled FOLDER")

    labelled = int(sum(counts["counts"]))
    max_count = int(unlabeled_ratio * labelled)
    kept = pl.pseudo_label(model, images, threshold, max_count, batch_size=batch_size)
    kept_true = None if true_labels is None else true_labels[kept.indices]
    metadata = pl.save_pseudo_labels(
        output, images[kept.indices], kept.labels, kept.confidences,
        [paths[i] for i in kept.indices], class_names, source=run_dir, threshold=threshold,
        true_labels=kept_true,
        extra={"pool": pool, "pool_size": len(images), "max_count": max_count,
               "unlabeled_ratio": unlabeled_ratio},
    )
    _report(app, metadata, counts, pool, true_labels, class_names, labelled, output)


def _report(app, metadata, counts, pool, true_labels, class_names, labelled, output):
    """The pool, what was kept, per class, and how often the pseudo-labels are right."""
    import numpy as np
    from rich.markup import escape
    from rich.table import Table

    app.console.print(f"pool: {metadata['pool_size']} images ({escape(pool)})")
    app.console.print(
        f"kept: {metadata['num_images']} pseudo-labels (threshold {metadata['threshold']:g}, "
        f"at most {metadata['max_count']} = {metadata['unlabeled_ratio']:g} x {labelled} "
        "labelled images)")
    table = Table(title="Pseudo-labels per class")
    table.add_column("class")
    table.add_column("labelled", justify="right")
    if true_labels is not None:
        table.add_column("in pool", justify="right")
    table.add_column("pseudo-labelled", justify="right")
    if true_labels is not None:
        table.add_column("accuracy", justify="right")
    in_pool = (np.bincount(true_labels, minlength=len(class_names))
               if true_labels is not None else None)
    for c, name in enumerate(class_names):
        row = [escape(name), str(counts["counts"][c])]
        if in_pool is not None:
            row.append(str(int(in_pool[c])))
        row.append(str(metadata["counts"][name]))
        if in_pool is not None:
            row.append(_percent(metadata["per_class_accuracy"][name]))
        table.add_row(*row)
    app.console.print(table)
    if true_labels is not None:
        app.console.print(f"pseudo-label accuracy: {_percent(metadata['accuracy'])}")
    app.console.print(f"wrote [bold]{escape(output)}[/]; train on it with "
                      f"`ltpll train ... --pseudo-labels {escape(output)}`")


def _percent(value):
    return "-" if value is None else f"{100 * value:.1f}%"
