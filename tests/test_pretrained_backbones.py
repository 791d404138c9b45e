"""Pretrained backbones: ResNet-50 with ImageNet or local weights and the preprocessing its weights
expect, keras-hub presets, and --backbone-lr-scale (a scaled or frozen backbone)."""

import functools
import importlib.util
import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
from keras import ops

from ltpll import components
from ltpll.assembly import compile_model, initial_backbone
from ltpll.cli.main import main
from ltpll.cli.options import component_config
from ltpll.config import ModelConfig, RunConfig, TrainConfig
from ltpll.errors import LTPLLError
from ltpll.models.backbones import build_backbone
from ltpll.models.pll_model import PLLModel
from ltpll.optimizers import BackboneScaledSGD
from ltpll.saving import load_model
from tests.helpers import REPO, identity_augment, targets, tiny_pll_arrays

SIZE = 32  # the smallest size keras.applications builds ResNet-50 for by itself


@pytest.fixture(scope="module")
def resnet50():
    return build_backbone("resnet50", image_size=SIZE)


def _variables(model):
    return {v.path: ops.convert_to_numpy(v) for v in model.weights}


# --- resnet50 --------------------------------------------------------------------------------


def test_resnet50_has_the_imagenet_stem_and_2048_d_features(resnet50):
    assert resnet50.output_shape == (None, 2048)
    assert resnet50.get_layer("conv1_conv").kernel.shape == (7, 7, 3, 64)
    assert resnet50.get_layer("conv1_conv").strides == (2, 2)
    assert resnet50.get_layer("pool1_pool").strides == (2, 2)
    assert resnet50.count_params() == keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)).count_params()
    features = resnet50(np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)))
    assert features.shape == (2, 2048) and np.all(np.isfinite(ops.convert_to_numpy(features)))


def test_the_network_sees_exactly_keras_preprocess_input_of_the_pixels(resnet50):
    """PLLModel normalises with the training set's statistics; the caffe preprocessing inside
    the backbone must undo that and give what resnet50.preprocess_input gives the uint8
    pixels."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    mean, std = (0.52, 0.47, 0.40), (0.27, 0.23, 0.26)
    model = PLLModel(resnet50, num_classes=3, num_samples=4, image_shape=(SIZE, SIZE, 3),
                     mean=mean, std=std)
    seen = keras.Model(resnet50.input, resnet50.get_layer("caffe_preprocessing").output)
    normalised = model.normalise(ops.cast(pixels, "float32") / 255.0)   # what call() feeds it
    expected = keras.applications.resnet50.preprocess_input(pixels.astype("float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(seen(normalised)), expected, atol=2e-3)
    # ...and the statistics travel with the saved backbone.
    config = resnet50.get_layer("caffe_preprocessing").get_config()
    np.testing.assert_allclose(config["mean"], mean)
    np.testing.assert_allclose(config["std"], std)


def _known_values(model, seed):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(size=variable.shape).astype(variable.dtype) * 0.1
                        + (1.0 if "variance" in variable.path else 0.0))


def test_a_local_weights_file_ends_up_in_the_backbone(resnet50, tmp_path):
    # A .weights.h5 of the backbone, through the run config (the Python API of a run).
    _known_values(resnet50, seed=2)
    saved = tmp_path / "r50.weights.h5"
    resnet50.save_weights(saved)
    model_config = ModelConfig(backbone={"name": "resnet50", "weights": str(saved)})
    model_config.validate()
    loaded = initial_backbone(model_config, components.BuildContext(image_size=SIZE))
    want, got = _variables(resnet50), _variables(loaded)
    assert want.keys() == got.keys()
    for path in want:
        np.testing.assert_array_equal(got[path], want[path], err_msg=path)

    # The ImageNet file's format: a legacy .h5 of the bare application, loaded layer by layer.
    from keras.src.legacy.saving import legacy_h5_format

    bare = keras.applications.ResNet50(include_top=False, weights=None,
                                       input_shape=(SIZE, SIZE, 3))
    _known_values(bare, seed=3)
    legacy = tmp_path / "imagenet-like_notop.h5"
    with h5py.File(legacy, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, bare)
    loaded = build_backbone("resnet50", image_size=SIZE, weights=str(legacy))
    for layer in bare.layers:
        if not layer.weights:
            continue
        for want_value, got_value in zip(layer.weights, loaded.get_layer(layer.name).weights):
            np.testing.assert_array_equal(ops.convert_to_numpy(got_value),
                                          ops.convert_to_numpy(want_value))


def test_weights_flags_and_bad_weights_are_one_line_errors(tmp_path):
    for flag in ("--backbone-weights", "--pretrained"):
        flags = main.commands["train"].make_context("train", [flag, "imagenet"]).params
        assert component_config("backbone", "resnet50", flags)["weights"] == "imagenet"
    with pytest.raises(LTPLLError, match="--backbone-weights must be imagenet, none or the "
                                         "path of a .h5"):
        ModelConfig(backbone={"name": "resnet50", "weights": "imagenet21k"}).validate()
    with pytest.raises(LTPLLError, match="no such file"):
        build_backbone("resnet50", image_size=SIZE, weights=str(tmp_path / "missing.h5"))
    other = tmp_path / "tiny.weights.h5"
    build_backbone("tiny", image_size=SIZE).save_weights(other)
    with pytest.raises(LTPLLError) as error:
        build_backbone("resnet50", image_size=SIZE, weights=str(other))
    assert str(error.value).startswith(f"could not load --backbone-weights {other} into resnet50")
    assert "\n" not in str(error.value)


def test_imagenet_weights_offline_fail_as_one_line_through_the_cli(image_folder, tmp_path):
    """No network (a proxy nobody listens on) and an empty Keras cache: the download fails at
    once and `ltpll train` says so in one line, exit 2, no traceback."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "KERAS_HOME": str(tmp_path / "keras"),
           "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "no_proxy": "", "NO_PROXY": ""}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)   # the CLI keeps TensorFlow's start-up lines away
    done = subprocess.run(
        [sys.executable, "-m", "ltpll.cli.main", "train", "--dataset", image_folder,
         "--backbone", "resnet50", "--pretrained", "imagenet", "--epochs", "1",
         "--batch-size", "8", "--no-jit", "--output", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=240)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: could not fetch the ImageNet weights of resnet50 (")
    assert "--pretrained PATH" in lines[0]
    assert os.listdir(tmp_path / "keras" / "models") == []   # no partial download left
    assert not (tmp_path / "run").exists()   # nothing written: the same command can be retried


# --- keras-hub -------------------------------------------------------------------------------


def test_keras_hub_names_and_a_missing_keras_hub(monkeypatch):
    flags = main.commands["train"].make_context(
        "train", ["--backbone", "keras-hub:resnet_50_imagenet"]).params
    config = ModelConfig(backbone=component_config("backbone", flags["backbone"], flags))
    config.validate()
    assert config.backbone == {"name": "keras-hub", "preset": "resnet_50_imagenet"}
    with pytest.raises(LTPLLError, match="contradicts --backbone-preset b"):
        components.resolve("backbone", {"name": "keras-hub:a", "preset": "b"})
    import ltpll.models.hub

    monkeypatch.setattr(ltpll.models.hub, "keras_hub", None)
    with pytest.raises(LTPLLError, match="^--backbone keras-hub needs the keras-hub package: "
                                         "pip install keras-hub$"):
        components.build("backbone", "keras-hub:resnet_50_imagenet")


@pytest.mark.skipif(importlib.util.find_spec("keras_hub") is None,
                    reason="keras-hub is not installed (optional)")
def test_a_local_keras_hub_preset_becomes_a_pooled_backbone(tmp_path):
    import keras_hub

    network = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block")
    preset = tmp_path / "tiny_resnet"
    network.save_to_preset(str(preset))
    scale, offset = [1 / 255 / s for s in (0.2, 0.3, 0.4)], [-0.5, -1.0, -1.5]
    keras_hub.layers.ResNetImageConverter(scale=scale, offset=offset).save_to_preset(str(preset))

    backbone = components.build("backbone", f"keras-hub:{preset}",
                                components.BuildContext(image_size=SIZE))
    assert backbone.output_shape == (None, 128)
    hub = [layer for layer in backbone.layers if isinstance(layer, keras_hub.models.Backbone)][0]
    for want, got in zip(network.weights, hub.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(got), ops.convert_to_numpy(want))
    preprocessing = backbone.get_layer("preset_preprocessing").get_config()
    np.testing.assert_allclose(preprocessing["scale"], scale)
    np.testing.assert_allclose(preprocessing["offset"], offset)
    rebuilt = keras.Model.from_config(backbone.get_config())
    assert rebuilt.count_params() == backbone.count_params()


# --- --backbone-lr-scale ---------------------------------------------------------------------


def _values(layer):
    return [ops.convert_to_numpy(v) for v in layer.weights]


@functools.lru_cache(maxsize=None)
def _one_step(scale, jit_compile=False):
    """A PLLModel on a BatchNorm backbone after one SGD step at --backbone-lr-scale ``scale``,
    and the values of its backbone's and head's variables before and after the step."""
    images, candidates, labels = tiny_pll_arrays(n=16)
    keras.utils.set_random_seed(5)
    model = PLLModel(build_backbone("resnet-small", image_size=16), num_classes=4,
                     num_samples=16, image_shape=(16, 16, 3), weight_decay=5e-3, seed=1,
                     weak_augment=identity_augment("weak"),
                     strong_augment=identity_augment("strong"))
    model.set_candidates(candidates)
    config = RunConfig(train=TrainConfig(lr=0.5, momentum=0.9, cosine=False, batch_size=16,
                                         epochs=1, jit_compile=jit_compile,
                                         backbone_lr_scale=scale)).validate()
    compile_model(model, config, num_samples=16)
    before = {"backbone": _values(model.backbone), "head": _values(model.head)}
    model.fit(images, targets(candidates, labels), batch_size=16, epochs=1, verbose=0,
              shuffle=False)
    after = {"backbone": _values(model.backbone), "head": _values(model.head)}
    return model, before, after


def test_the_backbone_learns_at_its_scale_of_the_learning_rate():
    _, before, full = _one_step(1.0)
    model, before_half, half = _one_step(0.5)
    assert isinstance(model.optimizer, BackboneScaledSGD)
    for part in before:  # the same start
        for want, got in zip(before[part], before_half[part]):
            np.testing.assert_array_equal(got, want)
    trainable = [any(v is w for w in model.backbone.trainable_weights)
                 for v in model.backbone.weights]
    assert sum(trainable) > 10
    moved = 0.0
    for is_trainable, start, step_full, step_half in zip(
            trainable, before["backbone"], full["backbone"], half["backbone"]):
        if not is_trainable:  # BatchNorm statistics follow the batch, not the learning rate
            continue
        step_full, step_half = step_full - start, step_half - start
        np.testing.assert_allclose(step_half, 0.5 * step_full, rtol=1e-3,
                                   atol=1e-6 + 1e-3 * np.abs(step_full).max())
        moved = max(moved, float(np.abs(step_full).max()))
    assert moved > 1e-3
    for start, after_full, after_half in zip(before["head"], full["head"], half["head"]):
        # the head's step is the same whatever the backbone's scale
        np.testing.assert_allclose(after_half - start, after_full - start, rtol=1e-4, atol=1e-7)
        assert not np.allclose(after_full, start)


def test_scale_zero_freezes_the_backbone_and_its_batch_norm_statistics():
    model, before, after = _one_step(0.0)
    assert not model.backbone.trainable and not model.backbone.trainable_weights
    assert not isinstance(model.optimizer, BackboneScaledSGD)
    assert any("moving" in v.path for v in model.backbone.weights)  # BatchNorm's are among them
    for want, got in zip(before["backbone"], after["backbone"]):
        np.testing.assert_array_equal(got, want)
    assert any(not np.allclose(a, b) for a, b in zip(after["head"], before["head"]))


def test_a_scaled_optimizer_survives_save_and_load(tmp_path):
    model, _, _ = _one_step(0.5)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = load_model(path)   # what resume and evaluate do
    optimizer = loaded.optimizer
    assert isinstance(optimizer, BackboneScaledSGD) and optimizer.backbone_lr_scale == 0.5
    assert optimizer._backbone_keys == {optimizer._var_key(v)
                                        for v in loaded.backbone.trainable_variables}
    for want, got in zip(model.optimizer.variables, optimizer.variables):  # momentum buffers
        np.testing.assert_array_equal(ops.convert_to_numpy(got), ops.convert_to_numpy(want))
    with pytest.raises(LTPLLError, match="--backbone-lr-scale must be >= 0"):
        TrainConfig(backbone_lr_scale=-1).validate()
    assert RunConfig.from_dict(RunConfig(train=TrainConfig(backbone_lr_scale=0.1)).to_dict()
                               ).train.backbone_lr_scale == 0.1
    old = RunConfig().to_dict()
    del old["train"]["backbone_lr_scale"]   # a config written before the field existed
    assert RunConfig.from_dict(old).train.backbone_lr_scale == 1.0


# Keras' JAX train step updates through optimizer.stateless_apply, which calls apply() without
# variables: the scale must still find the backbone's.
JAX_STEP = """
import numpy as np, keras
from ltpll.optimizers import BackboneScaledSGD

x = np.random.default_rng(0).normal(size=(16, 5)).astype("float32")
y = np.random.default_rng(1).normal(size=(16, 2)).astype("float32")
steps = []
for scale in (1.0, 0.5):
    keras.utils.set_random_seed(5)
    backbone = keras.layers.Dense(4, name="backbone")
    model = keras.Sequential([keras.Input((5,)), backbone, keras.layers.Dense(2, name="head")])
    optimizer = BackboneScaledSGD(0.1, momentum=0.9, backbone_lr_scale=scale)
    model.compile(optimizer, loss="mse")
    optimizer.set_backbone_variables(backbone.trainable_variables)
    before = [np.array(v) for v in model.trainable_variables]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    steps.append([np.array(v) - b for v, b in zip(model.trainable_variables, before)])
print(keras.backend.backend(), *[round(float(np.abs(h).sum() / np.abs(f).sum()), 4)
                                 for f, h in zip(*steps)])
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_the_scale_holds_in_the_jax_stateless_train_step():
    from tests.helpers import run_python

    # backbone kernel and bias at half the step, the head's the same
    assert run_python(JAX_STEP, backend="jax").split() == ["jax", "0.5", "0.5", "1.0", "1.0"]
