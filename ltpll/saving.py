"""Saving and loading ltpll models: ``ltpll.load_model``.

A saved :class:`~ltpll.models.pll_model.PLLModel` refers to ltpll's own layers (augmentation,
heads, rebalancers, weightings, and those of plugins) by their registered names, which Keras can
only resolve once the modules defining them are imported. :func:`load_model` imports every
registered component first, so a fresh interpreter can load any ltpll model.

It also reads the models of config version 2, whose single ``LossWeighting`` layer became one
class per weighting: Keras files a layer's variables under its class name, so those variables
are moved to the new class's place in a temporary copy of the file before it loads.
"""

import contextlib
import json
import os
import tempfile
import zipfile

from ltpll import components
from ltpll.errors import LTPLLError
from ltpll.fileio import atomic_path
from ltpll.run_dir import RUN_FILES, read_run


def register_layers():
    """Imports the code of every registered component (and the model's own layers), so their
    Keras serialisation names are known."""
    import ltpll.models.augment  # noqa: F401
    import ltpll.models.heads  # noqa: F401
    import ltpll.models.pll_model  # noqa: F401
    import ltpll.optimizers  # noqa: F401  (--backbone-lr-scale's optimizer)

    for kind in components.KINDS:
        for component in components.components(kind):
            component.load()


def load_model(path, compile=True, precision=None):
    """Loads an ltpll model.

    Args:
        path: a ``.keras`` file, a run directory (``RUN/model.keras``), an ``ltpll export``
            directory or a checkpoint directory (their ``model.keras``).
        compile: restore the optimizer and compile state as well (as ``keras.saving``).
        precision: None keeps the dtype policy each layer was trained with; ``"float32"``
            loads the layers of a mixed-precision model in float32 instead (the variables are
            float32 either way, so the weights are the same): ``ltpll export`` does, since a
            bf16 model trained on a CPU with native bf16 would run emulated, several times
            slower, on a CPU without it.

    Returns:
        The :class:`~ltpll.models.pll_model.PLLModel`.

    Raises:
        LTPLLError: if there is no model at ``path``.
    """
    import keras

    if os.path.isdir(path):
        path = os.path.join(path, "model.keras")
    if not os.path.isfile(path):
        raise LTPLLError(f"no saved ltpll model at {path}")
    register_layers()
    with _version_2_migrated(path) as migrated, _with_precision(migrated, precision) as readable:
        return keras.saving.load_model(readable, compile=compile)


def save_model(model, path):
    """``model.save(path)``, atomically: the file appears whole or not at all."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def load_run(run_dir, precision=None):
    """``(config, class_counts, model)`` of a finished run directory; ``precision`` as in
    :func:`load_model`.

    Raises:
        LTPLLError: if the directory is missing, unfinished or from another ltpll version.
    """
    config, counts = read_run(run_dir)
    return config, counts, load_model(os.path.join(run_dir, RUN_FILES["model"]),
                                      precision=precision)


@contextlib.contextmanager
def _with_precision(path, precision):
    """``path`` itself, or a temporary copy whose mixed dtype policies read ``precision``."""
    config = None if precision is None else _saved_config(path)
    if config is None or not _set_mixed_policies(config, precision):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="ltpll-model-") as scratch:
        rewritten = os.path.join(scratch, "model.keras")
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(rewritten, "w") as archive:
            for name in source.namelist():
                archive.writestr(name, json.dumps(config) if name == "config.json"
                                 else source.read(name))
        yield rewritten


def _set_mixed_policies(node, precision):
    """Sets every serialised ``mixed_*`` DTypePolicy under ``node`` to ``precision``, in place;
    True if there was one."""
    changed = False
    if isinstance(node, dict):
        if node.get("class_name") == "DTypePolicy" and \
                str(node.get("config", {}).get("name", "")).startswith("mixed_"):
            node["config"]["name"] = precision
            changed = True
        for value in node.values():
            changed |= _set_mixed_policies(value, precision)
    elif isinstance(node, list):
        for value in node:
            changed |= _set_mixed_policies(value, precision)
    return changed


@contextlib.contextmanager
def _version_2_migrated(path):
    """``path`` itself, or a temporary copy of a version-2 model with its weighting's variables
    filed under the class that replaces ``LossWeighting(kind=...)``."""
    weighting = _saved_weighting(path)
    if weighting is None or "kind" not in weighting.get("config", {}) \
            or weighting["config"]["kind"] == "none":
        yield path
        return
    from keras.src.utils.naming import to_snake_case  # how Keras names a layer's place

    new_class = components.get("weighting", weighting["config"]["kind"]).load()
    old_group = f"layers/{to_snake_case('LossWeighting')}"
    new_group = f"layers/{to_snake_case(new_class.__name__)}"
    with tempfile.TemporaryDirectory(prefix="ltpll-v2-model-") as scratch:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(scratch)
        import h5py

        with h5py.File(os.path.join(scratch, "model.weights.h5"), "r+") as weights:
            if old_group in weights and new_group not in weights:
                weights.move(old_group, new_group)
        migrated = os.path.join(scratch, "model.keras")
        with zipfile.ZipFile(migrated, "w") as archive:
            for name in sorted(os.listdir(scratch)):
                if name != "model.keras":
                    archive.write(os.path.join(scratch, name), name)
        yield migrated


def _saved_weighting(path):
    """The serialised weighting layer in a ``.keras`` file's config, or None."""
    config = _saved_config(path)
    return None if config is None else config.get("config", {}).get("weighting")


def _saved_config(path):
    """A ``.keras`` file's ``config.json``, or None where it cannot be read."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # not ours to judge: Keras says what is wrong with it
