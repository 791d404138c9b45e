"""The run directory: what a training run writes, how to tell its state, how to read it back.

Keras-free (:func:`ltpll.saving.load_run` loads a run's model too), so the CLI and the
benchmark can inspect runs without starting a backend.

A run directory is marked by ``config.json``, written after everything the data decides
(``class_counts.json``, ``candidates.csv``) and before training; ``metrics.json`` marks it
finished. While it trains, ``checkpoint/`` holds the last complete epoch
(:mod:`ltpll.checkpoint`).
"""

import os

from ltpll.config import RunConfig
from ltpll.data.candidates import save_candidate_file
from ltpll.errors import LTPLLError
from ltpll.fileio import read_json, write_json

# What a finished run directory holds.
RUN_FILES = {
    "config": "config.json",          # the RunConfig
    "model": "model.keras",           # weights, confidence table, RECORDS feature mean
    "history": "history.csv",         # one row per epoch: loss, acc, prior_l2, test metrics
    "class_counts": "class_counts.json",  # per-class training counts of the LT subset
    "candidates": "candidates.csv",   # the training candidate sets (path,candidates)
    "val_candidates": "val_candidates.csv",  # --val-fraction: the held-out split's sets
    "prior": "prior.json",            # the prior the rebalancer used, per epoch
    "metrics": "metrics.json",        # final test metrics
    "tensorboard": "tensorboard",     # TensorBoard logs
    "checkpoint": "checkpoint",       # while training: the last complete epoch (ltpll.checkpoint)
}
CHECKPOINT_LATEST = "latest.json"     # inside checkpoint/: names the last complete checkpoint


def run_status(path):
    """``"none"``, ``"finished"`` or ``"unfinished"`` for a directory that may hold a run."""
    if not os.path.exists(os.path.join(path, RUN_FILES["config"])):
        return "none"
    return "finished" if os.path.exists(os.path.join(path, RUN_FILES["metrics"])) else "unfinished"


def latest_checkpoint(run_dir):
    """``(path, epoch)`` of the last complete checkpoint, or ``(None, 0)`` if there is none.

    Raises:
        LTPLLError: if ``latest.json`` names a checkpoint that is not complete.
    """
    pointer = os.path.join(run_dir, RUN_FILES["checkpoint"], CHECKPOINT_LATEST)
    if not os.path.exists(pointer):
        return None, 0
    latest = read_json(pointer)
    path = os.path.join(run_dir, RUN_FILES["checkpoint"], latest["checkpoint"])
    if not os.path.exists(os.path.join(path, "state.json")):
        raise LTPLLError(f"checkpoint {path} named by {pointer} is incomplete")
    return path, int(latest["epoch"])


def check_output_directory(path):
    """Refuses to overwrite an existing run, and says how to continue an unfinished one."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise LTPLLError(f"--output {path} exists and is not a directory")
    status = run_status(path)
    if status == "finished":
        raise LTPLLError(f"{path} already holds a finished run; choose another --output or "
                         "delete it")
    if status == "unfinished":
        _, epoch = latest_checkpoint(path)
        raise LTPLLError(
            f"{path} holds an unfinished run (last complete epoch: {epoch}); continue it with "
            f"`ltpll train --resume {path}`, or choose another --output"
        )


def start_run_directory(config, data):
    """Writes what the data decided (class counts, candidate sets), then ``config.json``."""
    out = config.output
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, RUN_FILES["class_counts"]), {
        "class_names": data.class_names,
        "counts": data.class_counts.tolist(),
    })
    save_candidate_file(os.path.join(out, RUN_FILES["candidates"]), data.candidates,
                        data.class_names, data.paths)
    if data.val_paths:
        save_candidate_file(os.path.join(out, RUN_FILES["val_candidates"]), data.val_candidates,
                            data.class_names, data.val_paths)
    # config.json last: its presence marks the directory as a run (finished or resumable).
    write_json(os.path.join(out, RUN_FILES["config"]), config.to_dict())


def read_config(run_dir):
    """The run's :class:`~ltpll.config.RunConfig` (migrated from older versions)."""
    return RunConfig.from_dict(read_json(os.path.join(run_dir, RUN_FILES["config"])))


def read_run(run_dir):
    """``(config, class_counts)`` of a finished run, without loading its model.

    Raises:
        LTPLLError: if the directory is missing, unfinished or from another ltpll version.
    """
    if not os.path.isdir(run_dir):
        raise LTPLLError(f"run directory {run_dir} does not exist")
    for key in ("config", "class_counts", "model"):
        if not os.path.exists(os.path.join(run_dir, RUN_FILES[key])):
            raise LTPLLError(f"{run_dir} is not a finished ltpll run (no {RUN_FILES[key]})")
    counts = read_json(os.path.join(run_dir, RUN_FILES["class_counts"]))
    return read_config(run_dir), counts
