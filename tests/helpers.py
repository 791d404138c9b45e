"""Builders shared by several test modules."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from ltpll.models.backbones import build_backbone
from ltpll.models.pll_model import PLLModel


def identity_augment(name):
    """Augmentation that only rescales to [0, 1]: makes the step deterministic."""
    return keras.layers.Rescaling(1.0 / 255.0, name=name)


def tiny_model(images, candidates, rebalancer=None, deterministic=True, seed=1, **model_kwargs):
    """A PLLModel with the BN-free ``tiny`` backbone, set up on the given candidate sets.

    ``model_kwargs`` go to PLLModel (``method``, ``mixup``...).
    """
    kwargs = {}
    if deterministic:
        kwargs = {"weak_augment": identity_augment("weak"), "strong_augment": identity_augment("strong")}
    model = PLLModel(
        build_backbone("tiny", image_size=images.shape[1]),
        num_classes=candidates.shape[1],
        num_samples=len(candidates),
        image_shape=images.shape[1:],
        rebalancer=rebalancer,
        seed=seed,
        **kwargs,
        **model_kwargs,
    )
    model.set_candidates(candidates)
    return model


def tiny_pll_arrays(n=32, c=4, rate=0.4, seed=0):
    """``n`` random 16x16 uint8 images in ``c`` classes, candidate sets (each false label with
    probability ``rate``) that contain the true label, and the labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, c, n)
    candidates = (rng.random((n, c)) < rate).astype("float32")
    candidates[np.arange(n), labels] = 1.0
    return images, candidates, labels


def targets(candidates, labels, index=None):
    index = np.arange(len(candidates)) if index is None else index
    return {
        "candidates": candidates[index].astype("float32"),
        "index": np.asarray(index, dtype="int32"),
        "label": np.asarray(labels)[index].astype("int32"),
    }


# The generated image folder of the `image_folder` fixture (conftest.py).
FOLDER_CLASSES = ["ant", "bee", "cow"]
PER_CLASS = {"train": 20, "test": 6}

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, backend="tensorflow", timeout=600):
    """Runs ``code`` in a fresh interpreter with the given Keras backend; returns its stdout.

    The Keras backend, TensorFlow's device list and blocked imports are fixed per process, so
    tests of those run here. Skips when the backend's package is not installed.
    """
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout
