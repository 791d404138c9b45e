"""PLLModel's training step: which confidence rows change, and to what."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from ltpll.callbacks import Records
from ltpll.errors import LTPLLError
from ltpll.models.pll_model import UpdateStart
from tests.helpers import targets, tiny_model


def _table(model):
    return ops.convert_to_numpy(model.confidence)


def _fit_one_batch(model, images, candidates, labels, index, lr=0.1):
    model.compile(optimizer=keras.optimizers.SGD(lr), jit_compile=True)
    model.update_enabled.assign(1.0)
    model.fit(images[index], targets(candidates, labels, index), batch_size=len(index),
              epochs=1, shuffle=False, verbose=0)


def test_table_starts_uniform_over_each_candidate_set(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    table = _table(tiny_model(images, candidates))
    assert np.allclose(table, candidates / candidates.sum(1, keepdims=True))


def test_only_the_batch_rows_change(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    model = tiny_model(images, candidates)
    before = _table(model)
    # Samples with more than one candidate: a single-candidate row cannot move.
    index = np.flatnonzero(candidates.sum(axis=1) > 1)[[0, 2, 4, 6]]
    _fit_one_batch(model, images, candidates, labels, index)
    after = _table(model)
    changed = np.flatnonzero(np.abs(after - before).max(axis=1) > 1e-7)
    assert sorted(changed.tolist()) == sorted(index.tolist())
    assert np.all(after[index][candidates[index] == 0] == 0)
    assert np.allclose(after[index].sum(axis=1), 1.0, atol=1e-6)


def test_rows_land_at_their_sample_index(tiny_pll_data):
    # With identity augmentation and lr = 0 the new row of sample i is the softmax of its own
    # logits over its candidates. Feed the batch in a scrambled order: the rows must follow the
    # index, not the position in the batch.
    images, candidates, labels = tiny_pll_data
    model = tiny_model(images, candidates)
    logits = ops.convert_to_numpy(model.head(model.features(images)))
    index = np.array([9, 3, 30, 0, 17])
    _fit_one_batch(model, images, candidates, labels, index, lr=0.0)
    masked = np.where(candidates > 0, logits, -np.inf)
    expected = np.exp(masked - masked.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    assert np.allclose(_table(model)[index], expected[index], atol=1e-5)


def test_no_update_before_update_start(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    model = tiny_model(images, candidates)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
    before = _table(model)
    model.fit(images, targets(candidates, labels), batch_size=8, epochs=1, verbose=0,
              callbacks=[UpdateStart(1)])
    assert np.array_equal(_table(model), before)
    # The same compiled step starts updating once the callback flips the variable.
    model.fit(images, targets(candidates, labels), batch_size=8, epochs=2, initial_epoch=1,
              verbose=0, callbacks=[UpdateStart(1)])
    assert not np.allclose(_table(model), before)


def test_prediction_is_debiased_by_the_records_prior(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    records = Records(momentum=0.5)
    model = tiny_model(images, candidates, rebalancer=records)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
    model.fit(images, targets(candidates, labels), batch_size=8, epochs=1, verbose=0,
              callbacks=[records])
    assert np.abs(ops.convert_to_numpy(model.rebalancer.feature_mean)).sum() > 0
    raw = ops.convert_to_numpy(model.head(model.features(images)))
    predicted = model.predict(images, verbose=0)
    assert np.allclose(predicted, raw - np.log(model.estimated_prior()), atol=1e-4)


def test_saved_model_keeps_table_and_feature_mean(tiny_pll_data, tmp_path):
    images, candidates, labels = tiny_pll_data
    records = Records()
    model = tiny_model(images, candidates, rebalancer=records, deterministic=False)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
    model.fit(images, targets(candidates, labels), batch_size=8, epochs=2, verbose=0,
              callbacks=[records, UpdateStart(0)])
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert np.array_equal(_table(loaded), _table(model))
    assert np.allclose(loaded.estimated_prior(), model.estimated_prior())
    assert np.allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)


def test_bad_candidate_shapes_and_empty_sets_are_rejected(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    model = tiny_model(images, candidates)
    with pytest.raises(LTPLLError):
        model.set_candidates(candidates[:-1])
    empty = candidates.copy()
    empty[3] = 0
    with pytest.raises(LTPLLError, match="empty"):
        model.set_candidates(empty)


def test_the_records_example_disambiguates_without_update_start(tiny_pll_data):
    """The docstring's example (fit with the Records callback only) moves the table."""
    images, candidates, labels = tiny_pll_data
    records = Records(momentum=0.9)
    model = tiny_model(images, candidates, rebalancer=records)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = _table(model)
    model.fit(images, targets(candidates, labels), batch_size=8, epochs=1, verbose=0,
              callbacks=[records])
    assert not np.allclose(_table(model), before)
    assert len(records.history) == 1


def test_regularizers_of_the_backbone_join_the_loss(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    model = tiny_model(images, candidates)
    batch, y = images[:8], targets(candidates, labels, np.arange(8))
    outputs = model(batch, training=True)

    def loss():
        return float(ops.convert_to_numpy(model.compute_loss(batch, y, outputs, training=False)))

    plain = loss()
    kernel = model.backbone.get_layer("conv").kernel
    kernel.regularizer = keras.regularizers.L2(0.5)   # as a user's backbone would declare it
    penalty = 0.5 * float(np.sum(np.square(ops.convert_to_numpy(kernel))))
    assert penalty > 0
    assert np.isclose(loss() - plain, penalty, rtol=1e-4)


def test_load_model_works_in_a_fresh_interpreter(tiny_pll_data, tmp_path):
    """keras.saving.load_model needs ltpll's layers imported first; ltpll.load_model does it."""
    from ltpll import components
    from tests.helpers import run_python

    images, candidates, labels = tiny_pll_data
    context = components.BuildContext(num_classes=4, class_counts=[8, 8, 8, 8], epochs=2)
    model = tiny_model(images, candidates,
                       rebalancer=components.build("rebalancer", "temp-oracle-la", context),
                       weighting=components.build("weighting", "ldam", context))
    path = str(tmp_path / "model.keras")
    model.save(path)
    np.save(tmp_path / "images.npy", images)
    expected = model.predict(images, verbose=0)
    out = run_python(f"""
        import json, numpy as np, ltpll
        model = ltpll.load_model({str(tmp_path)!r} + "/model.keras")
        images = np.load({str(tmp_path)!r} + "/images.npy")
        print(json.dumps([type(model.head).__name__, type(model.rebalancer).__name__,
                          model.predict(images, verbose=0).tolist()]))
    """)
    head, rebalancer, predicted = json.loads(out.strip().splitlines()[-1])
    assert (head, rebalancer) == ("CosineHead", "OracleLogitAdjustment")
    assert np.allclose(predicted, expected, atol=1e-5)
