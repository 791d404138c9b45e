"""The same training step under TensorFlow and JAX, and under MirroredStrategy.

The Keras backend (and TensorFlow's device list) is fixed when a process starts, so each case runs
in a fresh Python process.
"""

import json
import platform

import numpy as np
import pytest

from tests.helpers import run_python

TRAIN_A_FEW_STEPS = r"""
import json, numpy as np, keras
from ltpll.models.backbones import build_backbone
from ltpll.models.pll_model import PLLModel, UpdateStart
from ltpll.callbacks import Records
from tests.helpers import tiny_pll_arrays
n, c = 32, 4
images, candidates, labels = tiny_pll_arrays(n, c, rate=0.5)
records = Records(0.9)
model = PLLModel(build_backbone("resnet-small", image_size=16), c, n, image_shape=(16, 16, 3),
                 rebalancer=records, seed=3)
model.set_candidates(candidates)
model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=True)
history = model.fit(images, {"candidates": candidates, "index": np.arange(n, dtype="int32"),
                             "label": labels.astype("int32")},
                    batch_size=8, epochs=2, verbose=0, callbacks=[records, UpdateStart(0)])
table = keras.ops.convert_to_numpy(model.confidence)
print(json.dumps({
    "backend": keras.backend.backend(), "jit": bool(model.jit_compile),
    "loss": history.history["loss"],
    "moved": float(np.abs(table - candidates / candidates.sum(1, keepdims=True)).max()),
    "outside": float((table * (1 - candidates)).sum()),
    "row_sums": table.sum(1).tolist(),
    "feature_mean_norm": float(np.linalg.norm(keras.ops.convert_to_numpy(model.rebalancer.feature_mean))),
    "prediction_shape": list(model.predict(images[:5], verbose=0).shape),
}))
"""


def run_json(code, backend):
    return json.loads(run_python(code, backend).strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_training_steps_run_compiled_on_each_backend(backend):
    result = run_json(TRAIN_A_FEW_STEPS, backend)
    assert result["backend"] == backend and result["jit"] is True
    assert all(np.isfinite(result["loss"]))
    assert result["moved"] > 1e-4                  # disambiguation happened
    assert result["outside"] == 0.0                # never outside the candidate sets
    assert np.allclose(result["row_sums"], 1.0, atol=1e-5)
    assert result["feature_mean_norm"] > 0         # RECORDS mean updated inside the step
    assert result["prediction_shape"] == [5, 4]


def test_jax_backend_does_not_import_tensorflow_for_the_model():
    code = ("import sys, ltpll.models.pll_model, ltpll.rebalancing, ltpll.training; "
            "print(__import__('json').dumps({'tf': 'tensorflow' in sys.modules}))")
    assert run_json(code, "jax") == {"tf": False}


ONEDNN_STATE = (
    "import os, json; {setup}; import ltpll, tensorflow; "
    "from tensorflow.python.util import _pywrap_util_port as port; "
    "print(json.dumps({{'onednn': bool(port.IsMklEnabled())}}))"
)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 only")
def test_importing_ltpll_first_turns_on_onednn_unless_the_user_said_no():
    # TensorFlow itself enables oneDNN only on CPUs with AVX512-VNNI/BF16 or AMX; ltpll asks
    # for it on every x86 CPU, and an explicit TF_ENABLE_ONEDNN_OPTS=0 wins.
    unset = ONEDNN_STATE.format(setup="os.environ.pop('TF_ENABLE_ONEDNN_OPTS', None)")
    refused = ONEDNN_STATE.format(setup="os.environ['TF_ENABLE_ONEDNN_OPTS'] = '0'")
    assert run_json(unset, "tensorflow") == {"onednn": True}
    assert run_json(refused, "tensorflow") == {"onednn": False}


MIRRORED_EQUIVALENCE = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np, keras
sys.path.insert(0, ".")
from tests.helpers import tiny_model
from ltpll.models.pll_model import UpdateStart
from ltpll.callbacks import Records
rng = np.random.default_rng(0)
n, c = 48, 5
images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
labels = rng.integers(0, c, n)
candidates = (rng.random((n, c)) < 0.5).astype("float32")
candidates[np.arange(n), labels] = 1
# Samples in a scrambled order (index != position), fed unshuffled: tf.data's shuffle draws a
# different order once the strategy rewrites the dataset for its replicas.
order = rng.permutation(n)
y = {"candidates": candidates[order], "index": order.astype("int32"), "label": labels[order].astype("int32")}

def run(strategy):
    keras.utils.set_random_seed(7)
    dataset = tf.data.Dataset.from_tensor_slices((images[order], y)).batch(8, drop_remainder=True)
    with strategy.scope():
        records = Records(0.9)
        model = tiny_model(images, candidates, rebalancer=records)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=False)
        model.fit(dataset, epochs=STEPS_EPOCHS, verbose=0, callbacks=[records, UpdateStart(0)])
    return (keras.ops.convert_to_numpy(model.confidence),
            keras.ops.convert_to_numpy(model.rebalancer.feature_mean),
            model.get_weights()[0])

single = run(tf.distribute.get_strategy())
mirrored = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
initial = candidates / candidates.sum(1, keepdims=True)
print(json.dumps({
    "table_diff": float(np.abs(single[0] - mirrored[0]).max()),
    "mean_diff": float(np.abs(single[1] - mirrored[1]).max()),
    "weight_diff": float(np.abs(single[2] - mirrored[2]).max()),
    "rows_moved": int((np.abs(mirrored[0] - initial).max(1) > 1e-6).sum()),
}))
"""


def _mirrored(epochs):
    return run_json(MIRRORED_EQUIVALENCE.replace("STEPS_EPOCHS", str(epochs)), "tensorflow")


def test_mirrored_strategy_table_equals_single_device():
    # 2 epochs of 6 steps; each replica sees half of every batch, and their rows must all land.
    result = _mirrored(2)
    assert result["rows_moved"] > 30
    assert result["table_diff"] < 1e-5
    assert result["mean_diff"] < 1e-5
    assert result["weight_diff"] < 1e-5


@pytest.mark.slow
def test_mirrored_strategy_stays_equal_over_more_epochs():
    result = _mirrored(10)
    assert result["table_diff"] < 1e-4 and result["weight_diff"] < 1e-4
