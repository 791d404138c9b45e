"""Training from better representations: `--init-from` a pretrain directory and
`--pseudo-labels` extra samples, through the same data and model builders as `ltpll train`."""

import dataclasses

import keras
import numpy as np
import pytest

from ltpll.assembly import build_model
from ltpll.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ltpll.data.prepare import channel_statistics, prepare_data
from ltpll.errors import LTPLLError
from ltpll.representation.pseudo_label import save_pseudo_labels
from ltpll.representation.ssp import pretrain
from tests.helpers import FOLDER_CLASSES


def _quiet(*_):
    return None


def _config(image_folder, tmp_path, **model):
    return RunConfig(
        data=DataConfig(dataset=image_folder, imbalance_ratio=2),
        model=ModelConfig(backbone="tiny", **model),
        train=TrainConfig(epochs=1, batch_size=8, jit_compile=False),
        output=str(tmp_path / "run"),
    ).validate()


def test_init_from_starts_the_model_from_the_pretrained_backbone(image_folder, tmp_path):
    pretrained, _ = pretrain(DataConfig(dataset=image_folder, imbalance_ratio=2), "tiny",
                             epochs=1, batch_size=8, lr=0.1, weight_decay=0.0, seed=123,
                             output=str(tmp_path / "ssp"), log=_quiet, jit_compile=False)
    config = _config(image_folder, tmp_path, init_from=str(tmp_path / "ssp"))
    data = prepare_data(config.data, config.train.seed, log=_quiet)
    model = build_model(config, data, *channel_statistics(data.images))
    for mine, theirs in zip(model.backbone.weights, pretrained.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine),
                                      keras.ops.convert_to_numpy(theirs))
    fresh = build_model(dataclasses.replace(config, model=ModelConfig(backbone="tiny")),
                           data, *channel_statistics(data.images))
    assert any(not np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
               for a, b in zip(fresh.backbone.weights, pretrained.weights))


def test_init_from_a_missing_directory_is_a_user_error(image_folder, tmp_path):
    config = _config(image_folder, tmp_path, init_from=str(tmp_path / "nothing"))
    data = prepare_data(config.data, config.train.seed, log=_quiet)
    with pytest.raises(LTPLLError, match="nothing"):
        build_model(config, data, *channel_statistics(data.images))


def test_pseudo_labelled_images_join_as_single_candidate_samples(image_folder, tmp_path):
    base = prepare_data(DataConfig(dataset=image_folder, imbalance_ratio=2), 123, log=_quiet)
    rng = np.random.default_rng(0)
    extra = rng.integers(0, 256, (5, *base.images.shape[1:]), dtype=np.uint8)
    labels = np.array([2, 0, 1, 2, 2])
    path = str(tmp_path / "pseudo.npz")
    save_pseudo_labels(path, extra, labels, np.full(5, 0.99), [f"u/{i}.png" for i in range(5)],
                       FOLDER_CLASSES, source="test")
    data = prepare_data(DataConfig(dataset=image_folder, imbalance_ratio=2, pseudo_labels=path),
                        123, log=_quiet)
    n = len(base.labels)
    np.testing.assert_array_equal(data.images[:n], base.images)
    np.testing.assert_array_equal(data.images[n:], extra)
    np.testing.assert_array_equal(data.candidates[n:], np.eye(3)[labels])
    np.testing.assert_array_equal(data.candidates[:n], base.candidates)
    # Hidden labels unknown; the labelled set alone defines the class counts.
    assert data.labels[n:].tolist() == [-1] * 5
    assert data.class_counts.tolist() == base.class_counts.tolist()
    assert data.paths[n:] == [f"pseudo:u/{i}.png" for i in range(5)]


def test_train_with_a_bad_init_from_writes_nothing(image_folder, tmp_path):
    from ltpll.training import train

    config = _config(image_folder, tmp_path, init_from=str(tmp_path / "nothing"))
    with pytest.raises(LTPLLError, match="does not exist"):
        train(config, log=_quiet)
    assert not (tmp_path / "run").exists()
