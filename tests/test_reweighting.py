"""Loss reweighting for candidate sets: class-balanced weights, focal factor, LDAM margins and
DRW, class counts estimated from the confidence table, the dev set, and each weighting inside a
model that trains, saves and reloads."""

import math

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from keras import ops

from ltpll import components
from ltpll.cli.main import main
from ltpll.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ltpll.data.devset import hold_out_dev
from ltpll.data.prepare import prepare_data
from ltpll.disambiguation import PRODEN
from ltpll.errors import LTPLLError
from ltpll.weighting import (
    LDAM,
    LDAMDRW,
    ClassBalanced,
    EstimateClassCounts,
    Focal,
    MetaWeighting,
    WeightingStart,
    class_balanced_weights,
    estimated_class_counts,
    get_weighting,
    ldam_margins,
)
from tests.helpers import FOLDER_CLASSES, PER_CLASS, targets, tiny_model


def _np(x):
    return ops.convert_to_numpy(x)


# --- weights and margins on known counts ---------------------------------------------------

def test_class_balanced_weights_follow_the_effective_number_formula():
    counts, beta = [5000, 500, 50], 0.999
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    expected = [3 * w / sum(raw) for w in raw]
    weights = class_balanced_weights(counts, beta)
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    assert math.isclose(float(weights.sum()), 3.0, rel_tol=1e-6)


def test_class_balanced_weights_span_uniform_to_inverse_frequency():
    counts = [1000, 100, 10]
    np.testing.assert_allclose(class_balanced_weights(counts, 0.0), [1, 1, 1])
    near_inverse = class_balanced_weights(counts, 0.9999999)
    np.testing.assert_allclose(near_inverse / near_inverse[-1], [0.01, 0.1, 1.0], rtol=1e-3)


def test_ldam_margins_scale_as_inverse_fourth_root_with_largest_half():
    np.testing.assert_allclose(ldam_margins([10000, 16, 1]), [0.05, 0.25, 0.5], rtol=1e-6)
    # An estimated count of almost nothing is clamped to one image, not an infinite margin.
    np.testing.assert_allclose(ldam_margins([1e-9, 1.0]), [0.5, 0.5])


def test_example_weight_is_the_class_weight_expected_under_the_target_row():
    layer = ClassBalanced(num_classes=3, beta=0.999)
    layer.refresh([5000, 500, 50])
    w = class_balanced_weights([5000, 500, 50], 0.999)
    rows = np.array([[0, 1, 0], [0.5, 0, 0.5]], dtype="float32")
    np.testing.assert_allclose(_np(layer.example_weights(rows, None)),
                               [w[1], 0.5 * (w[0] + w[2])], rtol=1e-6)
    layer.active.assign(0.0)
    np.testing.assert_allclose(_np(layer.example_weights(rows, None)), [1.0, 1.0])


def test_focal_weighting_with_proden_is_the_focal_loss_on_one_hot_targets():
    gamma = 2.0
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], dtype="float32")
    labels = [0, 2]
    one_hot = np.eye(3, dtype="float32")[labels]
    layer = Focal(num_classes=3, gamma=gamma)
    weighted = _np(layer.example_weights(one_hot, logits) *
                   PRODEN().example_losses(logits, None, one_hot, one_hot))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    p_true = probs[np.arange(2), labels]
    np.testing.assert_allclose(weighted, -(1 - p_true) ** gamma * np.log(p_true), rtol=1e-5)


def test_ldam_subtracts_scaled_margin_from_the_target_logit_only():
    layer = LDAM(num_classes=3, scale=30.0)
    layer.refresh([10000, 16, 1])
    logits = np.zeros((1, 3), dtype="float32")
    adjusted = _np(layer.margin_logits(logits, np.array([[0, 0, 1]], dtype="float32")))
    np.testing.assert_allclose(adjusted, [[0.0, 0.0, -15.0]])
    # Without margins the logits pass through untouched.
    plain = ClassBalanced(num_classes=3)
    assert _np(plain.margin_logits(logits + 1, logits)).tolist() == [[1.0, 1.0, 1.0]]


def test_bad_weighting_options_are_one_line_errors():
    with pytest.raises(LTPLLError, match="--loss-weighting"):
        get_weighting("reweigh")
    with pytest.raises(LTPLLError, match="--cb-beta"):
        ClassBalanced(num_classes=3, beta=1.0)
    with pytest.raises(LTPLLError, match="--focal-gamma"):
        Focal(num_classes=3, gamma=-1)
    with pytest.raises(LTPLLError, match="dev set"):
        MetaWeighting(num_classes=3)
    with pytest.raises(LTPLLError, match="dev set"):
        get_weighting("meta", components.BuildContext(num_classes=3))
    with pytest.raises(LTPLLError, match="--ldam-scale"):
        ModelConfig(weighting={"name": "ldam", "scale": 0}).validate()
    with pytest.raises(LTPLLError, match="--oracle-counts needs the true class counts"):
        get_weighting({"name": "cb", "oracle_counts": True}, components.BuildContext())


# --- class counts from the confidence table; the DRW switch -------------------------------

def test_class_counts_are_estimated_from_the_confidence_table_each_epoch(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    weighting = LDAMDRW(num_classes=4, beta=0.99)
    model = tiny_model(images, candidates, weighting=weighting)
    rows = candidates / candidates.sum(axis=1, keepdims=True)
    rows[:8] = np.eye(4)[labels[:8]]   # some rows already disambiguated
    model.confidence.assign(rows)
    estimate = EstimateClassCounts()
    estimate.set_model(model)
    estimate.on_epoch_begin(0)
    column_sums = rows.sum(axis=0)
    np.testing.assert_allclose(estimated_class_counts(model.confidence), column_sums, atol=0.01)
    np.testing.assert_allclose(_np(weighting.class_weights),
                               class_balanced_weights(column_sums, 0.99), rtol=1e-5)
    np.testing.assert_allclose(_np(weighting.margins), ldam_margins(column_sums), rtol=1e-5)


def test_oracle_counts_replace_the_estimate(tiny_pll_data):
    images, candidates, _ = tiny_pll_data
    weighting = ClassBalanced(num_classes=4, oracle_counts=[100, 10, 5, 1])
    model = tiny_model(images, candidates, weighting=weighting)
    estimate = EstimateClassCounts()
    estimate.set_model(model)
    estimate.on_epoch_begin(0)
    np.testing.assert_allclose(_np(weighting.class_weights),
                               class_balanced_weights([100, 10, 5, 1], 0.9999), rtol=1e-5)


def test_drw_switches_class_weights_on_at_the_start_epoch(tiny_pll_data):
    images, candidates, _ = tiny_pll_data
    weighting = LDAMDRW(num_classes=4, start=2)
    model = tiny_model(images, candidates, weighting=weighting)
    assert {type(c) for c in model.training_callbacks()} == {EstimateClassCounts, WeightingStart}
    (start,) = [c for c in model.training_callbacks() if isinstance(c, WeightingStart)]
    start.set_model(model)
    start.set_params({"epochs": 10})
    seen = []
    for epoch in range(4):
        start.on_epoch_begin(epoch)
        seen.append(float(_np(weighting.active)))
    assert seen == [0.0, 0.0, 1.0, 1.0]
    assert type(model.head).__name__ == "CosineHead"


def test_deferred_start_defaults():
    context = components.BuildContext(num_classes=3, dev_images=np.zeros((3, 8, 8, 3), "uint8"),
                                      dev_labels=np.arange(3))
    assert get_weighting("ldam-drw").start_epoch(200) == 160
    assert get_weighting("meta", context).start_epoch(16) == 8
    assert get_weighting({"name": "meta", "start": 3}, context).start_epoch(16) == 3
    assert get_weighting("cb").start_epoch(16) == 0


def test_fit_switches_a_deferred_weighting_on_by_itself(tiny_pll_data):
    """No callback passed: the model's fit adds WeightingStart, which reads the run's epochs."""
    images, candidates, labels = tiny_pll_data
    weighting = LDAMDRW(num_classes=4)      # default start: 80% of the epochs
    model = tiny_model(images, candidates, weighting=weighting)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(_np(weighting.active)))

    model.fit(images, targets(candidates, labels), batch_size=16, epochs=5, verbose=0,
              callbacks=[Watch()])
    assert seen == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert not np.allclose(_np(weighting.margins), 0.0)  # EstimateClassCounts ran too


# --- every weighting inside a model: trains, saves, reloads -------------------------------

def _fit_weighted(kind, images, candidates, labels, seed=7, active=None, **kwargs):
    keras.utils.set_random_seed(seed)
    context = components.BuildContext(num_classes=candidates.shape[1], seed=1,
                                      dev_images=images[:8], dev_labels=labels[:8])
    weighting = get_weighting({"name": kind, **kwargs}, context)
    if kind == "meta":
        weighting.constant_lr.assign(0.1)
    model = tiny_model(images, candidates, weighting=weighting)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    # A WeightingStart of our own replaces the model's: on from the start, or never.
    callbacks = [] if active is None else [WeightingStart(0 if active else 10**6)]
    model.fit(images, targets(candidates, labels), batch_size=16, epochs=1, shuffle=False,
              verbose=0, callbacks=callbacks)
    return model


def _head_kernel(model):
    return _np(model.head.trainable_variables[0])


def test_meta_weights_change_the_step_only_once_active(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    plain = _fit_weighted("none", images, candidates, labels)
    meta_off = _fit_weighted("meta", images, candidates, labels, active=0.0)
    np.testing.assert_allclose(_head_kernel(meta_off), _head_kernel(plain), atol=1e-6)
    cb = _fit_weighted("cb", images, candidates, labels, active=1.0)
    meta_on = _fit_weighted("meta", images, candidates, labels, active=1.0)
    # Same class weights (estimated from the same table), plus the learned offsets.
    assert np.abs(_head_kernel(meta_on) - _head_kernel(cb)).max() > 1e-5


@pytest.mark.parametrize("kind", ["cb", "focal", "ldam-drw", "meta"])
def test_weighted_models_save_and_reload(kind, tiny_pll_data, tmp_path):
    images, candidates, labels = tiny_pll_data
    model = _fit_weighted(kind, images, candidates, labels, active=1.0)
    assert np.isfinite(_head_kernel(model)).all()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.weighting.kind == kind
    assert type(loaded.head).__name__ == type(model.head).__name__
    np.testing.assert_allclose(_np(loaded.predict(images, verbose=0)),
                               _np(model.predict(images, verbose=0)), atol=1e-5)
    if kind == "meta":
        np.testing.assert_array_equal(_np(loaded.weighting.dev_labels), labels[:8])


# --- the dev set ---------------------------------------------------------------------------

def test_dev_set_prefers_images_the_long_tail_left_out():
    labels = np.repeat(np.arange(3), 10)            # 10 images per class
    keep = np.concatenate([np.arange(0, 10), np.arange(10, 14), np.arange(20, 22)])
    dev, trained = hold_out_dev(labels, keep, per_class=3, num_classes=3, seed=0)
    assert np.bincount(labels[dev], minlength=3).tolist() == [3, 3, 3]
    assert not set(dev) & set(trained)
    # Classes 1 and 2 had left-over images: their training images are untouched. Class 0 had
    # none, so it gave three of its own.
    assert set(trained) == set(keep) - set(dev)
    assert np.bincount(labels[trained], minlength=3).tolist() == [7, 4, 2]


def test_dev_set_refuses_to_empty_a_class():
    labels = np.array([0] * 5 + [1] * 3)
    with pytest.raises(LTPLLError, match="class 1 has 3 images"):
        hold_out_dev(labels, np.arange(8), per_class=3, num_classes=2, seed=0)


def test_prepare_data_holds_the_dev_set_out_of_training(image_folder):
    data = prepare_data(DataConfig(dataset=image_folder, imbalance_ratio=4, dev_per_class=2),
                        seed=3, log=lambda *_: None)
    assert np.bincount(data.dev_labels, minlength=3).tolist() == [2, 2, 2]
    images = {image.tobytes() for image in data.images}
    assert not any(image.tobytes() in images for image in data.dev_images)
    n_train = PER_CLASS["train"] * len(FOLDER_CLASSES)
    assert len(data.unused_index) + len(data.labels) + len(data.dev_labels) == n_train


def test_meta_without_a_dev_set_is_refused():
    config = RunConfig(data=DataConfig(dev_per_class=0),
                       model=ModelConfig(weighting="meta"), train=TrainConfig())
    with pytest.raises(LTPLLError, match="--dev-per-class"):
        config.validate()


def test_train_with_an_unknown_weighting_exits_with_one_line(image_folder, tmp_path):
    result = CliRunner().invoke(main, ["train", "--dataset", image_folder, "--loss-weighting",
                                       "nope", "--output", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "nope" in result.output
