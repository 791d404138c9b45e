"""The compact (float16) confidence table against the dense float32 one.

Tolerances, from float16's unit roundoff u = 2**-11 (about 4.9e-4; 11 significant bits):

* a stored entry x is within u * x of the float32 value it was rounded from, so a stored row sums
  to 1 within u (plus float32 noise), and non-candidates, written as exact zeros, stay 0;
* the method reads rows renormalised over the candidates, so training sees a distribution either
  way and the two runs' weights differ only through the rounding of the targets: measured
  2e-4 after a few epochs here, so the table is compared with atol 2u ~ 1e-3 and the
  weights/predictions with 1e-3.
"""

import json

import keras
import numpy as np
import pytest
from keras import ops

from ltpll.errors import LTPLLError
from ltpll.models.backbones import build_backbone
from ltpll.models.pll_model import PLLModel, UpdateStart
from tests.helpers import run_python, targets, tiny_model

U16 = 2.0**-11  # float16 unit roundoff (round to nearest)
EPOCHS = 5


def _np(x):
    return ops.convert_to_numpy(x)


def _train(data, dtype, epochs=EPOCHS, update_start=1, table=None):
    images, candidates, labels = data
    keras.utils.set_random_seed(0)
    model = tiny_model(images, candidates, confidence_dtype=dtype)
    if table is not None:
        model.confidence.assign(table)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=True)
    model.fit(images, targets(candidates, labels), batch_size=8, epochs=epochs, shuffle=False,
              verbose=0, callbacks=[UpdateStart(update_start)])
    return model


def test_float16_table_trains_like_float32(tiny_pll_data):
    images, candidates, _ = tiny_pll_data
    dense = _train(tiny_pll_data, "float32")
    compact = _train(tiny_pll_data, "float16")
    assert compact.jit_compile

    table16 = _np(compact.confidence)
    assert table16.dtype == np.float16 and compact.confidence.dtype == "float16"
    assert table16.nbytes * 2 == _np(dense.confidence).nbytes
    table16 = table16.astype(np.float64)
    table32 = _np(dense.confidence).astype(np.float64)

    # The table moved (updates ran) and agrees with the float32 run within two roundings.
    initial = candidates / candidates.sum(1, keepdims=True)
    assert np.abs(table32 - initial).max() > 0.05
    assert np.abs(table16 - table32).max() < 2 * U16
    assert np.array_equal(table16.argmax(1), table32.argmax(1))
    # Rows: exactly zero outside the candidates, summing to 1 within one rounding.
    assert np.all(table16[candidates == 0] == 0)
    assert np.abs(table16.sum(1) - 1).max() <= U16 + 1e-6

    for w16, w32 in zip(compact.trainable_weights, dense.trainable_weights, strict=True):
        np.testing.assert_allclose(_np(w16), _np(w32), atol=1e-3)
    np.testing.assert_allclose(compact.predict(images, verbose=0),
                               dense.predict(images, verbose=0), atol=1e-3)


def test_float16_table_is_untouched_before_update_start(tiny_pll_data):
    """Before --update-start the stored rows are written back as read, bit for bit.

    The rows are chosen so that renormalising and rounding them again would move an entry by an
    ulp (about 1-2% of random float16 rows are like this; uniform 1/|S| rows never are): writing
    back the targets the method saw instead of the stored rows fails this test.
    """
    _, candidates, _ = tiny_pll_data
    table = _rows_moved_by_renormalising(candidates, np.random.default_rng(1))
    model = _train(tiny_pll_data, "float16", epochs=2, update_start=10, table=table)
    assert np.array_equal(_np(model.confidence), table)


def _rows_moved_by_renormalising(candidates, rng):
    """A float16 table over the candidates with as many rows as it finds (at least 10) that
    ``float16(row / sum(row))`` changes."""
    table = np.zeros(candidates.shape, np.float16)
    for i, row_candidates in enumerate(candidates):
        for _ in range(2_000):
            row = (rng.random(len(row_candidates)) + 0.01) * row_candidates
            row = (row / row.sum()).astype(np.float16)
            row32 = row.astype(np.float32)
            if row_candidates.sum() == 1 or np.any((row32 / row32.sum()).astype(np.float16) != row):
                break
        table[i] = row
    moved = sum(np.any((r / r.sum()).astype(np.float16) != r) for r in table.astype(np.float32))
    assert moved >= 10
    return table


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_set_candidates_stores_uniform_rows_in_the_table_dtype(tiny_pll_data, dtype):
    images, candidates, _ = tiny_pll_data
    model = tiny_model(images, candidates.astype(bool), confidence_dtype=dtype)
    expected = (candidates / candidates.sum(1, keepdims=True)).astype(dtype)
    assert np.array_equal(_np(model.confidence), expected)
    with pytest.raises(LTPLLError):
        model.set_candidates(np.zeros_like(candidates))


def test_save_and_load_keep_the_dtype_and_values(tiny_pll_data, tmp_path):
    images, candidates, labels = tiny_pll_data
    model = tiny_model(images, candidates, confidence_dtype="float16")
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=True)
    model.fit(images, targets(candidates, labels), batch_size=8, epochs=1, verbose=0,
              callbacks=[UpdateStart(0)])
    assert model.get_config()["confidence_dtype"] == "float16"
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.confidence_dtype == "float16"
    assert _np(loaded.confidence).dtype == np.float16
    assert np.array_equal(_np(loaded.confidence), _np(model.confidence))


@pytest.mark.parametrize("bad", ["bfloat16", "float64", "int8", "fp16", np.float16, None])
def test_bad_confidence_dtype_is_rejected(bad):
    with pytest.raises(LTPLLError, match="--confidence-dtype must be one of float32, float16"):
        PLLModel(build_backbone("tiny", image_size=16), num_classes=4, num_samples=8,
                 image_shape=(16, 16, 3), confidence_dtype=bad)


JAX_FLOAT16 = r"""
import json, numpy as np, keras
from tests.helpers import targets, tiny_model, tiny_pll_arrays
from ltpll.models.pll_model import UpdateStart
images, candidates, labels = tiny_pll_arrays()
tables = {}
for dtype in ("float32", "float16"):
    keras.utils.set_random_seed(0)
    model = tiny_model(images, candidates, confidence_dtype=dtype)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=True)
    model.fit(images, targets(candidates, labels), batch_size=8, epochs=3, shuffle=False,
              verbose=0, callbacks=[UpdateStart(1)])
    tables[dtype] = keras.ops.convert_to_numpy(model.confidence)
t16, t32 = tables["float16"], tables["float32"]
print(json.dumps({
    "backend": keras.backend.backend(), "jit": bool(model.jit_compile),
    "dtype": str(t16.dtype), "moved": float(np.abs(t32 - candidates / candidates.sum(1, keepdims=True)).max()),
    "diff": float(np.abs(t16.astype("float64") - t32).max()),
    "outside": float(np.abs(t16.astype("float64") * (1 - candidates)).max()),
    "row_sum_error": float(np.abs(t16.astype("float64").sum(1) - 1).max()),
}))
"""


def test_float16_table_under_jax():
    result = json.loads(run_python(JAX_FLOAT16, backend="jax").strip().splitlines()[-1])
    assert result["backend"] == "jax" and result["jit"]
    assert result["dtype"] == "float16"
    assert result["moved"] > 0.05
    assert result["diff"] < 2 * U16
    assert result["outside"] == 0.0
    assert result["row_sum_error"] <= U16 + 1e-6
