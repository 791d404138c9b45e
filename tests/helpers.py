"""Builders shared by several test modules."""

import keras
import numpy as np

from ltpll.models.backbones import build_backbone
from ltpll.models.pll_model import PLLModel


def identity_augment(name):
    """Augmentation that only rescales to [0, 1]: makes the step deterministic."""
    return keras.layers.Rescaling(1.0 / 255.0, name=name)


def tiny_model(images, candidates, rebalancer=None, deterministic=True, seed=1):
    """A PLLModel with the BN-free ``tiny`` backbone, set up on the given candidate sets."""
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
    )
    model.set_candidates(candidates)
    return model


def targets(candidates, labels, index=None):
    index = np.arange(len(candidates)) if index is None else index
    return {
        "candidates": candidates[index].astype("float32"),
        "index": np.asarray(index, dtype="int32"),
        "label": np.asarray(labels)[index].astype("int32"),
    }
