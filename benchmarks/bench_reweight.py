"""The reweighting and representation comparison behind ``make bench-reweight-cpu``.

Nine CORR runs on the same long-tailed partial-label set (CIFAR-10-LT, one seed), each an
ordinary ``ltpll`` command, so the commands printed here are exactly what a user would run:

1. CORR                                  6. CORR + RECORDS from a rotation-SSP backbone
2. CORR + RECORDS                        7. CORR + RECORDS with pseudo-labelled extra data
3. CORR + class-balanced weights            (labelled by run 2 from the unused CIFAR-10 images)
4. CORR + LDAM-DRW                       8. CORR + CB with the true class counts (a control)
5. CORR + meta-learned weights           9. CORR + RECORDS + CB (a control)

Pseudo-labelling follows the authors: no confidence threshold (``--threshold 0``); the
``--unlabeled-ratio 5`` cap keeps the 5x most confident predictions.

Resumable: a finished step is skipped, an interrupted training run continues with ``--resume``.
The table (overall top-1 and Many/Medium/Few, train seconds) is printed and written to
``OUT/results.md`` and ``OUT/results.csv``. Not run by the tests.

Usage::

    python benchmarks/bench_reweight.py --dataset ../shared/data/cifar10-jpg.tar.gz --output DIR \\
        [--epochs 16] [--pretrain-epochs 30] [-- extra ltpll train flags]
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time

LTPLL = [sys.executable, "-m", "ltpll.cli.main"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _runs(args):
    """(name, label, extra flags) of the seven training runs."""
    out = args.output
    return [
        ("corr", "CORR", []),
        ("corr-records", "CORR + RECORDS", ["--rebalance", "records"]),
        ("corr-cb", "CORR + CB", ["--loss-weighting", "cb"]),
        ("corr-ldam-drw", "CORR + LDAM-DRW", ["--loss-weighting", "ldam-drw"]),
        ("corr-meta", "CORR + meta-weights", ["--loss-weighting", "meta"]),
        ("corr-records-ssp", "CORR + RECORDS, SSP init",
         ["--rebalance", "records", "--init-from", os.path.join(out, "ssp")]),
        ("corr-records-pseudo", "CORR + RECORDS + pseudo-labels",
         ["--rebalance", "records", "--pseudo-labels", os.path.join(out, "pseudo.npz")]),
        # Two controls that say why class-balanced weights help or not: the true class counts
        # instead of the table's estimate, and the estimate made from a RECORDS-debiased table.
        ("corr-cb-oracle", "CORR + CB (true counts)", ["--loss-weighting", "cb",
                                                        "--oracle-counts"]),
        ("corr-records-cb", "CORR + RECORDS + CB", ["--rebalance", "records",
                                                     "--loss-weighting", "cb"]),
    ]


def _run(command):
    print("$ ltpll " + " ".join(command[len(LTPLL):]), flush=True)
    started = time.time()
    subprocess.run(command, check=True, cwd=REPO)
    return time.time() - started


def _train(args, name, extra):
    run_dir = os.path.join(args.output, name)
    if os.path.exists(os.path.join(run_dir, "metrics.json")):
        print(f"{name}: finished earlier, skipped")
        return
    if os.path.exists(os.path.join(run_dir, "config.json")):
        _run(LTPLL + ["train", "--resume", run_dir])
        return
    _run(LTPLL + ["train", *args.data_flags, *args.train_flags, *extra, "--output", run_dir])


def _pretrain(args):
    ssp = os.path.join(args.output, "ssp")
    if os.path.exists(os.path.join(ssp, "pretrain.json")):
        print("ssp: finished earlier, skipped")
        return
    _run(LTPLL + ["pretrain", *args.data_flags, "--backbone", args.backbone,
                  "--epochs", str(args.pretrain_epochs), "--batch-size", "128", "--lr", "0.1",
                  "--weight-decay", "5e-4", "--seed", str(args.seed), "--no-jit",
                  "--output", ssp])


def _pseudo_label(args):
    path = os.path.join(args.output, "pseudo.npz")
    if os.path.exists(path):
        print("pseudo-labels: made earlier, skipped")
        return
    _run(LTPLL + ["pseudo-label", os.path.join(args.output, "corr-records"),
                  "--threshold", str(args.threshold), "--unlabeled-ratio", "5",
                  "--output", path])


def _table(args):
    rows = []
    for name, label, _ in _runs(args):
        with open(os.path.join(args.output, name, "metrics.json")) as handle:
            metrics = json.load(handle)
        rows.append({"run": label, **{key: metrics[key] for key in
                                      ("top1", "many", "medium", "few", "train_seconds")}})
    with open(os.path.join(args.output, "results.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pseudo = os.path.join(args.output, "pseudo.npz")
    lines = ["| run | top-1 | many | medium | few | train s |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['run']} | " + " | ".join(
            f"{100 * row[key]:.2f}" for key in ("top1", "many", "medium", "few"))
            + f" | {row['train_seconds']:.0f} |")
    notes = [f"settings: {' '.join(args.data_flags + args.train_flags)}",
             f"SSP: {args.pretrain_epochs} epochs of rotation prediction"]
    if os.path.exists(pseudo):
        import numpy as np

        with np.load(pseudo) as data:
            meta = json.loads(str(data["metadata"]))
        accuracy = meta.get("accuracy")
        notes.append(f"pseudo-labels: {meta['num_images']} of {meta['pool_size']} unused images "
                     f"kept (threshold {meta['threshold']}), accuracy "
                     f"{'n/a' if accuracy is None else f'{100 * accuracy:.1f}%'}, per class "
                     f"{meta['counts']}")
    text = "\n".join(lines + [""] + [f"- {note}" for note in notes]) + "\n"
    with open(os.path.join(args.output, "results.md"), "w") as handle:
        handle.write(text)
    print(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--backbone", default="resnet-small")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--max-per-class", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.0)
    parser.add_argument("train_flags", nargs="*", help="extra `ltpll train` flags (after --)")
    args = parser.parse_args()
    args.data_flags = ["--dataset", args.dataset, "--imbalance-ratio", "100",
                       "--max-per-class", str(args.max_per_class), "--seed", str(args.seed)]
    args.train_flags = ["--partial-rate", "0.3", "--method", "corr", "--backbone",
                        args.backbone, "--epochs", str(args.epochs), "--batch-size", "64",
                        "--lr", "0.05", "--weight-decay", "5e-4",
                        "--eval-every", str(args.epochs), "--no-jit", *args.train_flags]
    os.makedirs(args.output, exist_ok=True)
    runs = {name: extra for name, _, extra in _runs(args)}
    for name in ("corr", "corr-records", "corr-cb", "corr-ldam-drw", "corr-meta"):
        _train(args, name, runs[name])
    _pretrain(args)
    _train(args, "corr-records-ssp", runs["corr-records-ssp"])
    _pseudo_label(args)
    for name in ("corr-records-pseudo", "corr-cb-oracle", "corr-records-cb"):
        _train(args, name, runs[name])
    _table(args)


if __name__ == "__main__":
    main()
