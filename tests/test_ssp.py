"""Self-supervised rotation pre-training: the rotated batches, that the pretext task is learnt,
the pretrain directory, `ltpll pretrain` and loading its backbone back."""

import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from ltpll.cli.main import main
from ltpll.config import DataConfig
from ltpll.errors import LTPLLError
from ltpll.models.backbones import build_backbone
from ltpll.representation.ssp import (
    RotationPretrainer,
    load_pretrained_backbone,
    pretrain,
    rotate90,
    rotation_batch,
)
from tests.helpers import PER_CLASS, run_python


def numpy_of(tensor):
    return keras.ops.convert_to_numpy(tensor)


def weights_of(model):
    return [numpy_of(w) for w in model.weights]


def same_weights(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# --- rotation batches ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_rotation_batch_is_np_rot90_per_label(dtype):
    images = np.random.default_rng(0).integers(0, 256, (3, 5, 5, 3)).astype(dtype)
    rotated, labels = rotation_batch(images)
    rotated, labels = numpy_of(rotated), numpy_of(labels)
    assert rotated.shape == (12, 5, 5, 3) and rotated.dtype == np.dtype(dtype)
    assert labels.dtype == np.int32 and labels.shape == (12,)
    for k in range(4):
        chosen = rotated[labels == k]
        assert len(chosen) == 3
        expected = np.stack([np.rot90(image, k, axes=(0, 1)) for image in images])
        np.testing.assert_array_equal(chosen, expected)
        # ...and turning them the rest of the way round gives the originals back.
        np.testing.assert_array_equal(numpy_of(rotate90(chosen, 4 - k)), images)
    # Counter-clockwise: the top-right pixel goes to the top-left.
    first = labels.tolist().index(1)
    np.testing.assert_array_equal(rotated[first, 0, 0], images[0, 0, -1])


def test_rotation_batch_refuses_non_square_images():
    with pytest.raises(LTPLLError, match="square"):
        rotation_batch(np.zeros((2, 4, 6, 3), dtype="uint8"))


# --- the pretext task is learnt --------------------------------------------------------------


def _fit_rotations(images, steps):
    keras.utils.set_random_seed(0)
    model = RotationPretrainer(build_backbone("tiny", image_size=16), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=True)
    history = model.fit(images, batch_size=16, epochs=steps * 16 // len(images), verbose=0)
    return history, model.evaluate(images, batch_size=32, verbose=0, return_dict=True)


def test_pretrainer_learns_predictable_rotations():
    # Dark at the top, bright at the bottom: the crop and flip of the weak augmentation keep
    # which way is down, so the rotation of every image can be read off.
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 200, 16)[None, :, None, None]
    images = (rng.integers(0, 50, (64, 16, 16, 3)) + ramp).astype(np.uint8)
    history, evaluated = _fit_rotations(images, steps=40)
    assert all(np.isfinite(history.history["loss"]))
    assert history.history["acc"][-1] > 0.6      # augmented training batches
    assert evaluated["acc"] > 0.9                # the un-augmented images: chance is 0.25


# --- the pretrain job and loading its result -------------------------------------------------


def _config(folder):
    return DataConfig(dataset=folder, imbalance_ratio=2.0)


@pytest.fixture(scope="module")
def pretrained(image_folder, tmp_path_factory):
    """A pretrain directory of the `tiny` backbone, and the backbone it trained."""
    out = str(tmp_path_factory.mktemp("ssp") / "pretrained")
    backbone, summary = pretrain(_config(image_folder), "tiny", epochs=2, batch_size=8, lr=0.05,
                                 weight_decay=5e-4, seed=5, output=out, log=lambda _: None,
                                 jit_compile=False)
    return out, backbone, summary


def test_pretrain_writes_the_backbone_and_its_summary(pretrained, image_folder):
    out, _, summary = pretrained
    assert sorted(os.listdir(out)) == ["backbone.weights.h5", "pretrain.json"]
    assert not [name for name in os.listdir(os.path.dirname(out)) if ".tmp-" in name]
    saved = json.loads(Path(out, "pretrain.json").read_text())
    assert saved == summary
    assert saved["backbone"] == "tiny" and saved["image_size"] == 16
    assert saved["dataset"] == image_folder and saved["seed"] == 5 and saved["epochs"] == 2
    # The long-tailed subset of `ltpll train --imbalance-ratio 2`, not the whole split.
    n = PER_CLASS["train"]
    assert saved["num_images"] == n + int(n * 2 ** -0.5) + n // 2
    assert len(saved["mean"]) == 3 and len(saved["std"]) == 3
    assert 0.0 <= saved["rotation_accuracy"] <= 1.0
    assert np.isfinite(saved["loss"]) and saved["seconds"] > 0


def test_loaded_backbone_is_the_pretrained_one(pretrained):
    out, trained, _ = pretrained
    fresh = build_backbone("tiny", image_size=16)
    initial = weights_of(fresh)
    summary = load_pretrained_backbone(fresh, out, "tiny", 16)
    assert summary["backbone"] == "tiny" and summary["task"] == "rotation"
    assert same_weights(weights_of(fresh), weights_of(trained))
    assert not same_weights(weights_of(fresh), initial)


def _one_line_error(call):
    with pytest.raises(LTPLLError) as error:
        call()
    message = str(error.value)
    assert message and "\n" not in message
    return message


def test_mismatched_backbone_or_image_size_is_refused(pretrained):
    out, _, _ = pretrained
    small = build_backbone("resnet-small", image_size=16)
    assert "'tiny'" in _one_line_error(
        lambda: load_pretrained_backbone(small, out, "resnet-small", 16))
    tiny32 = build_backbone("tiny", image_size=32)
    initial = weights_of(tiny32)
    assert "16x16" in _one_line_error(lambda: load_pretrained_backbone(tiny32, out, "tiny", 32))
    assert same_weights(weights_of(tiny32), initial)      # refused before touching the weights


# Keras warns about each layer of the lying file's other architecture before it raises.
@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_missing_or_broken_pretrain_directories_are_one_line_errors(pretrained, tmp_path):
    out, _, _ = pretrained
    fresh = build_backbone("tiny", image_size=16)

    def load(directory, name="tiny", backbone=fresh):
        return lambda: load_pretrained_backbone(backbone, str(directory), name, 16)

    assert "does not exist" in _one_line_error(load(tmp_path / "none"))
    assert "no pretrain.json" in _one_line_error(load(tmp_path))

    no_weights = tmp_path / "no_weights"
    shutil.copytree(out, no_weights)
    os.remove(no_weights / "backbone.weights.h5")
    assert "backbone.weights.h5" in _one_line_error(load(no_weights))

    garbage = tmp_path / "garbage"
    shutil.copytree(out, garbage)
    (garbage / "backbone.weights.h5").write_bytes(b"not an HDF5 file")
    assert "cannot load" in _one_line_error(load(garbage))

    bad_json = tmp_path / "bad_json"
    shutil.copytree(out, bad_json)
    (bad_json / "pretrain.json").write_text("{")
    assert "not readable" in _one_line_error(load(bad_json))

    # A summary that lies about the backbone: Keras' own mismatch error, as one line.
    lying = tmp_path / "lying"
    shutil.copytree(out, lying)
    summary = json.loads((lying / "pretrain.json").read_text())
    (lying / "pretrain.json").write_text(json.dumps({**summary, "backbone": "resnet-small"}))
    small = build_backbone("resnet-small", image_size=16)
    assert "cannot load" in _one_line_error(load(lying, "resnet-small", small))


def test_pretrain_refuses_an_existing_result_before_loading_data(pretrained, tmp_path):
    out, _, _ = pretrained
    before = Path(out, "backbone.weights.h5").read_bytes()
    # A dataset that does not exist: the output check must come first.
    config = DataConfig(dataset=str(tmp_path / "no-such-data"), imbalance_ratio=None)
    message = _one_line_error(lambda: pretrain(config, "tiny", 1, 8, 0.1, 0.0, 5, out,
                                               log=lambda _: None))
    assert "already holds a pretrain result" in message
    assert Path(out, "backbone.weights.h5").read_bytes() == before


# --- the command line ------------------------------------------------------------------------


def test_pretrain_command_end_to_end(image_folder, tmp_path):
    out = str(tmp_path / "ssp")
    args = ["pretrain", "--dataset", image_folder, "--imbalance-ratio", "2", "--backbone", "tiny",
            "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--seed", "5", "--no-jit",
            "--output", out]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "rotation accuracy" in result.output and out in result.output
    assert sorted(os.listdir(out)) == ["backbone.weights.h5", "pretrain.json"]

    # Two backbones initialised differently load the same pretrained weights: every weight
    # comes from the file.
    keras.utils.set_random_seed(1)
    first = build_backbone("tiny", image_size=16)
    keras.utils.set_random_seed(2)
    second = build_backbone("tiny", image_size=16)
    initial = weights_of(second)
    assert not same_weights(weights_of(first), initial)
    load_pretrained_backbone(first, out, "tiny", 16)
    load_pretrained_backbone(second, out, "tiny", 16)
    assert same_weights(weights_of(first), weights_of(second))
    assert not same_weights(weights_of(second), initial)

    # Again into the same output: refused with one line and exit 2, the result untouched.
    before = Path(out, "pretrain.json").read_text()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2, again.output
    assert "Traceback" not in again.output
    assert again.stderr.count("\n") == 1 and "already holds a pretrain result" in again.stderr
    assert Path(out, "pretrain.json").read_text() == before


def test_pretrain_command_refuses_a_backbone_it_does_not_know(image_folder, tmp_path):
    out = tmp_path / "ssp"
    result = CliRunner().invoke(main, ["pretrain", "--dataset", image_folder, "--backbone",
                                       "vgg", "--output", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and "unknown --backbone 'vgg'" in result.stderr
    assert not out.exists()


# --- JAX ---------------------------------------------------------------------------------------

PRETRAIN_ON_JAX = r"""
import json, keras
from ltpll.config import DataConfig
from ltpll.representation.ssp import pretrain
_, summary = pretrain(DataConfig(dataset={folder!r}, imbalance_ratio=None), "tiny", epochs=2,
                      batch_size=8, lr=0.05, weight_decay=5e-4, seed=3, output={out!r},
                      log=lambda _: None, jit_compile=True)
print(json.dumps(summary))
"""


def test_pretrain_runs_compiled_on_jax_and_loads_on_tensorflow(image_folder, tmp_path):
    out = str(tmp_path / "ssp-jax")
    summary = json.loads(run_python(PRETRAIN_ON_JAX.format(folder=image_folder, out=out),
                                    backend="jax").strip().splitlines()[-1])
    assert summary["keras_backend"] == "jax" and np.isfinite(summary["loss"])
    fresh = build_backbone("tiny", image_size=16)
    initial = weights_of(fresh)
    load_pretrained_backbone(fresh, out, "tiny", 16)       # this process runs TensorFlow
    assert not same_weights(weights_of(fresh), initial)
