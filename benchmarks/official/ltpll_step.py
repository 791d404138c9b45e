"""A real ``ltpll train`` run, timed per step from inside ``fit`` (run with ltpll's venv).

The command is the CLI's own (``ltpll.cli.main``, in this process), with the user's defaults
for everything but what the comparison fixes: ``--method corr --records``, the backbone, the
batch size, few epochs, and ``--update-start 0``, so that the timed steps update the confidence
table and the RECORDS feature mean as every step does from epoch 1 on (the authors' side does
the same). The only addition is one callback, handed to :func:`ltpll.training.train` the way the
CLI hands it its progress display: :class:`BatchClock` reads the clock at the end of every batch
once the step's work is done (:func:`ltpll.benchmark.timing.finish_device_work`) and stops
training once it has enough steps. The library is not changed; :mod:`steps` turns the readings
into per-step times by the same rule as for the authors' loop.

Writes one JSON object to ``--json-out``.
"""

import argparse
import json
import os
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(1, os.path.dirname(os.path.dirname(_HERE)))   # the repository, for ltpll

from steps import batches_needed, step_intervals  # noqa: E402


def make_clock(total):
    """A Keras callback recording ``(epoch, seconds)`` at each batch end, stopping ``fit`` after
    ``total`` batches (built here so that Keras is imported only when a run starts)."""
    import keras

    from ltpll.benchmark.timing import finish_device_work

    class BatchClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.stamps, self.epoch = [], 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if len(self.stamps) >= total:
                return
            finish_device_work(self.model, logs)
            self.stamps.append((self.epoch, time.perf_counter()))
            if len(self.stamps) == total:
                self.model.stop_training = True

    return BatchClock()


def train_flags(args, epochs, output):
    """The ``ltpll train`` command line of the comparison."""
    return ["train", "--dataset", args.data, "--method", "corr", "--records",
            "--backbone", args.backbone, "--batch-size", str(args.batch_size),
            "--epochs", str(epochs), "--update-start", "0", "--seed", str(args.seed),
            "--output", output]


def default_step():
    """What the default flags chose on this machine: the dtype policy and XLA or not."""
    from ltpll.assembly import use_jit, use_precision
    from ltpll.config import TrainConfig

    return {"precision": use_precision(TrainConfig()), "jit_compile": use_jit(TrainConfig())}


def run(args):
    import ltpll.training   # first: it sets TensorFlow's CPU options before Keras loads it
    import keras

    from ltpll.cli.main import main as ltpll_main
    from ltpll.data.pipeline import steps_per_epoch

    images = sum(len(files) for _, _, files in os.walk(os.path.join(args.data, "train")))
    per_epoch = steps_per_epoch(images, args.batch_size)
    total = batches_needed(args.warmup, args.steps, per_epoch)
    clock = make_clock(total)
    original = ltpll.training.train

    def timed_train(config, callbacks=(), log=print):
        return original(config, callbacks=[*callbacks, clock], log=log)

    ltpll.training.train = timed_train   # the CLI looks it up when the command runs
    with tempfile.TemporaryDirectory(prefix="ltpll-vs-official-") as scratch:
        flags = train_flags(args, -(-total // per_epoch), os.path.join(scratch, "run"))
        started = time.perf_counter()
        ltpll_main(flags, standalone_mode=False)
        run_s = time.perf_counter() - started
    ms = step_intervals(clock.stamps, args.warmup, args.steps)
    if len(ms) < args.steps:
        raise SystemExit(f"ltpll_step: only {len(ms)} of {args.steps} steps were timed")
    return {
        "implementation": "ltpll", "backbone": args.backbone, "batch_size": args.batch_size,
        "images": images, "warmup": args.warmup, "steps": args.steps, "ms_per_step": ms,
        "run_s": run_s, "backend": keras.backend.backend(), **default_step(),
        "command": "ltpll " + " ".join(
            train_flags(args, -(-total // per_epoch), "RUN_DIR")),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="image folder with train/ and test/")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", required=True)
    args = parser.parse_args(argv)
    result = run(args)
    with open(args.json_out, "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main()
