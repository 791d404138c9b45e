"""Per-epoch training checkpoints, written atomically, and the state a resumed run needs.

A checkpoint is a directory ``RUN/checkpoint/epoch-NNNNN/`` holding

* ``model.keras``: weights, optimizer state (momentum buffers, step count for the learning-rate
  schedule), the confidence table and the rebalancer's state (RECORDS feature mean...), all of
  which live in the model as variables;
* ``state.json``: the completed epoch, the random-generator states of the augmentation and
  Mixup layers (Keras does not save those), and the state of the run's callbacks (history rows,
  prior log, latest test metrics, training seconds; each callback says what its own is, see
  :class:`ltpll.callbacks.Checkpoint`).

It is written into a temporary directory and renamed into place, then ``latest.json`` (itself
replaced atomically) is pointed at it, and only then is the previous checkpoint deleted. A crash
at any moment therefore leaves ``latest.json`` naming a complete checkpoint, or no checkpoint at
all. The shuffling order of epoch ``e`` depends only on ``(seed, e)``
(:func:`ltpll.data.pipeline.train_dataset`), so a resumed run sees the same batches, the same
augmentations and the same updates as an uninterrupted one.
"""

import os
import shutil

import keras
import numpy as np

from ltpll.errors import LTPLLError
from ltpll.fileio import atomic_directory, read_json, write_json
from ltpll.run_dir import CHECKPOINT_LATEST, RUN_FILES
from ltpll.saving import load_model


def seed_generators(model):
    """Every SeedGenerator of the model and its layers, in a stable order."""
    generators = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        generators.extend(getattr(layer, "_seed_generators", []))
    return generators


def save_checkpoint(run_dir, model, epoch, state):
    """Writes the checkpoint of ``epoch`` (1-based count of completed epochs) atomically.

    Args:
        run_dir: the run directory.
        model: the compiled model.
        epoch: epochs completed.
        state: JSON-ready dict of callback state to restore on resume.
    """
    root = os.path.join(run_dir, RUN_FILES["checkpoint"])
    name = f"epoch-{epoch:05d}"
    with atomic_directory(os.path.join(root, name), replace=True) as tmp:
        model.save(os.path.join(tmp, "model.keras"))
        seeds = [np.asarray(keras.ops.convert_to_numpy(g.state)).tolist()
                 for g in seed_generators(model)]
        write_json(os.path.join(tmp, "state.json"), {"epoch": epoch, "seeds": seeds, **state})
    write_json(os.path.join(root, CHECKPOINT_LATEST), {"epoch": epoch, "checkpoint": name})
    for entry in os.listdir(root):
        if entry != name and entry != CHECKPOINT_LATEST:
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)


def load_checkpoint(path):
    """The compiled model and the saved state of a checkpoint directory.

    Raises:
        LTPLLError: if the checkpoint cannot be read.
    """
    try:
        model = load_model(os.path.join(path, "model.keras"))
    except (OSError, ValueError) as error:
        raise LTPLLError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from None
    state = read_json(os.path.join(path, "state.json"))
    generators = seed_generators(model)
    if len(generators) != len(state["seeds"]):
        raise LTPLLError(f"checkpoint {path} does not match the model it holds")
    for generator, value in zip(generators, state["seeds"]):
        generator.state.assign(np.asarray(value, dtype=generator.state.dtype))
    return model, state


def remove_checkpoints(run_dir):
    """Deletes the checkpoints of a finished run (its model.keras holds the final state)."""
    shutil.rmtree(os.path.join(run_dir, RUN_FILES["checkpoint"]), ignore_errors=True)
