"""HTC: the ensemble and one classifier's loss on hand-worked numbers, the step's loss and table
update, the schedule, saving, RECORDS, and training on TensorFlow, JAX and from the CLI."""

import types

import keras
import numpy as np
import pytest
from keras import ops

from ltpll.disambiguation import get_method
from ltpll.disambiguation.htc import HtcSchedule, _Classifier, ensemble_logits, table_distribution
from ltpll.disambiguation.solar import select_small_loss
from ltpll.errors import LTPLLError
from ltpll.models.pll_model import UpdateStart
from ltpll.rebalancing import RecordsPrior
from tests.helpers import run_python, targets, tiny_model

LOG3 = float(np.log(3.0))


def _np(x):
    return ops.convert_to_numpy(x)


def _f32(values):
    return np.asarray(values, dtype="float32")


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _attention(bias, classes=2):
    layer = keras.layers.Dense(2)
    layer.build((None, 2 * classes))
    layer.set_weights([np.zeros((2 * classes, 2), "float32"), _f32(bias)])
    return layer


# --- the ensemble -------------------------------------------------------------------------

def test_ensemble_is_the_attention_weighted_sum_of_both_classifiers():
    distribution = _f32([0.8, 0.2])
    # p1 = softmax(head - log(pi + 1e-5)) = [3/4, 1/4]; p2 = softmax(tail) = [1/4, 3/4].
    head = np.log(distribution + 1e-5)[None] + _f32([[LOG3, 0.0]])
    tail = _f32([[0.0, LOG3]])
    # Scores [log 3, 0] (a zero kernel): softmax [3/4, 1/4], divided by its L2 norm sqrt(5/8).
    fused = _np(ensemble_logits(_attention([LOG3, 0.0]), head, tail, distribution))
    norm = np.sqrt(0.625)
    expected = (0.75 * np.array([0.75, 0.25]) + 0.25 * np.array([0.25, 0.75])) / norm
    assert np.allclose(fused, [expected], atol=1e-5)  # [0.625, 0.375] / sqrt(5/8)
    # A negative score goes through PyTorch's leaky ReLU slope 0.01, not Keras' 0.2:
    # softmax([-0.01, 0]) = [1, e^0.01] / (1 + e^0.01).
    fused = _np(ensemble_logits(_attention([-1.0, 0.0]), head, tail, distribution))
    w = np.array([1.0, np.exp(0.01)]) / (1.0 + np.exp(0.01))
    w = w / np.sqrt((w ** 2).sum())
    assert np.allclose(fused, [w[0] * np.array([0.75, 0.25]) + w[1] * np.array([0.25, 0.75])],
                       atol=1e-5)


# --- one classifier's loss (the authors' get_loss) -----------------------------------------

def test_classifier_loss_on_hand_worked_numbers():
    logits_w = _f32([[0.0, 0.0], [LOG3, 0.0], [0.0, LOG3]])
    logits_s = _f32([[0.0, 0.0], [0.0, 0.0], [LOG3, 0.0]])
    targets_ = _f32([[1.0, 0.0], [1.0, 0.0], [0.25, 0.75]])
    table = _f32([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    log2, log4, log43 = np.log(2.0), np.log(4.0), np.log(4.0 / 3.0)
    # Weak cross-entropies to the targets: log 2, log 4/3, 1/4 log 4 + 3/4 log 4/3. Classes
    # (target argmax) 0, 0, 1; uniform prior, alpha 1/2, B = 3: quota ceil(3/4) = 1 per class,
    # so class 0 keeps sample 1 (the smaller loss) and class 1 keeps sample 2.
    classifier = _Classifier(logits_w, logits_s, targets_, table, _f32([0.5, 0.5]), 0.5)
    assert _np(classifier.chosen).tolist() == [False, True, True]
    # Strong cross-entropies on the chosen: log 2 and 1/4 log 4/3 + 3/4 log 4; the table term
    # on all: (log 2 + log 4/3 + log 4/3) / 3.
    strong = (log2 + (0.25 * log43 + 0.75 * log4)) / 2
    table_term = (log2 + log43 + log43) / 3
    ones = np.ones(3, "float32")
    loss = float(_np(classifier.loss(ones, 0.5, ops.convert_to_tensor(False))))
    assert np.isclose(loss, 0.5 * strong + table_term, atol=1e-5)
    first = float(_np(classifier.loss(ones, 0.5, ops.convert_to_tensor(True))))
    assert np.isclose(first, table_term, atol=1e-5)
    # Prior [0.9, 0.1], alpha 1: quotas ceil(2.7) = 3 and max(ceil(0.3), 1) = 1: all chosen.
    classifier = _Classifier(logits_w, logits_s, targets_, table, _f32([0.9, 0.1]), 1.0)
    assert _np(classifier.chosen).tolist() == [True, True, True]


# --- the step in the model -----------------------------------------------------------------

def _step(model, images, candidates, labels, training=False):
    y = targets(candidates, labels, np.arange(8))
    outputs = model(images[:8], training=True)
    loss = float(_np(model.compute_loss(images[:8], y, outputs, training=training)))
    return loss, outputs


def _ensemble_np(model, head, tail, distribution):
    kernel, bias = model.method_state.attention.get_weights()
    p1 = _softmax(head - np.log(distribution + 1e-5))
    p2 = _softmax(tail)
    scores = np.concatenate([p1, p2], axis=1) @ kernel + bias
    w = _softmax(np.where(scores > 0, scores, 0.01 * scores))
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    return w[:, :1] * p1 + w[:, 1:] * p2


def test_first_epoch_loss_and_the_tail_moves_the_table(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    model = tiny_model(images, candidates, method="htc")
    state = model.method_state
    state.fusion_weight.assign(0.3)
    loss, outputs = _step(model, images, candidates, labels, training=True)
    rows = candidates[:8] / candidates[:8].sum(axis=1, keepdims=True)
    head = _np(outputs["logits_w"])
    tail = _np(state.tail(outputs["features_w"]))

    def ce(logits, target):
        return -(target * np.log(_softmax(logits))).sum(axis=1).mean()

    fused = _softmax(_ensemble_np(model, head, tail, np.full(4, 0.25)))
    fusion = -(rows * np.log(fused + 1e-8)).sum(axis=1).mean()
    # Epoch 0: each classifier's table term alone, plus the weighted fusion term.
    assert np.isclose(loss, ce(head, rows) + ce(tail, rows) + 0.3 * fusion, atol=1e-4)
    # The table: 0.4 * old row + 0.6 * the tail's prediction renormalised over the candidates.
    tail_rows = _softmax(tail) * candidates[:8]
    tail_rows /= tail_rows.sum(axis=1, keepdims=True)
    assert np.allclose(_np(model.confidence)[:8], 0.4 * rows + 0.6 * tail_rows, atol=1e-5)
    assert np.allclose(_np(model.confidence)[8:], candidates[8:] / candidates[8:].sum(1)[:, None])
    assert model.method._rows is None  # handed to the table write, not kept


def test_after_warm_up_the_tail_learns_the_logit_adjusted_head(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    model = tiny_model(images, candidates, method={"name": "htc", "t": 1.5, "eta": 0.8,
                                                   "warmup_epochs": 2, "alpha_end": 0.5})
    state = model.method_state
    distribution = _f32([0.4, 0.3, 0.2, 0.1])
    state.class_distribution.assign(distribution)
    state.epoch.assign(5.0)  # past the warm-up: eta = 0.8, alpha = 0.5
    loss, outputs = _step(model, images, candidates, labels)
    rows = candidates[:8] / candidates[:8].sum(axis=1, keepdims=True)
    head_w, head_s = _np(outputs["logits_w"]), _np(outputs["logits_s"])
    tail_w = _np(state.tail(outputs["features_w"]))
    tail_s = _np(state.tail(outputs["features_s"]))

    def ce(logits, target):
        return -(target * np.log(_softmax(logits))).sum(axis=1)

    def classifier_loss(lw, ls, target, prior):
        chosen = _np(select_small_loss(target, ce(lw, target), prior, 0.5)).astype("float32")
        return 0.8 * (ce(ls, target) * chosen).sum() / chosen.sum() + ce(lw, rows).mean()

    tail_targets = _softmax(head_w - 1.5 * np.log(distribution))
    expected = (classifier_loss(head_w, head_s, rows, distribution)
                + classifier_loss(tail_w, tail_s, tail_targets, np.full(4, 0.25, "float32")))
    assert np.isclose(loss, expected, atol=1e-4)  # fusion weight 0 before the schedule runs


def test_htc_with_mixup_on_tensorflow_keeps_a_valid_table(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    model = tiny_model(images, candidates, method={"name": "htc", "warmup_epochs": 1},
                       mixup=True, deterministic=False)
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=True)
    history = model.fit(images, targets(candidates, labels), batch_size=8, epochs=2, verbose=0,
                        callbacks=[UpdateStart(0)])
    assert np.all(np.isfinite(history.history["loss"]))
    table = _np(model.confidence)
    assert np.all(table[candidates == 0] == 0) and np.allclose(table.sum(1), 1.0, atol=1e-5)
    # The estimate is the table's mean row after the last epoch.
    assert np.allclose(_np(model.method_state.class_distribution), table.mean(axis=0), atol=1e-5)
    assert float(_np(model.method_state.fusion_weight)) == 0.25  # 0.5 * epoch 1 / 2 epochs


# --- schedule --------------------------------------------------------------------------------

def test_schedule_ramps_the_fusion_weight_and_takes_the_table_mean():
    method = get_method("htc")
    table = _f32([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75], [1.0, 0.0]])
    method.build(types.SimpleNamespace(num_classes=2, confidence=table,
                                       backbone=types.SimpleNamespace(output_shape=(None, 3))))
    schedule, state = HtcSchedule(method), method.state
    schedule.set_params({"epochs": 10})
    schedule.on_train_begin()
    assert np.allclose(_np(state.class_distribution), [2.75 / 4, 1.25 / 4])
    schedule.on_epoch_begin(3)
    assert float(_np(state.epoch)) == 3 and np.isclose(float(_np(state.fusion_weight)), 0.15)
    schedule.on_epoch_begin(12)
    assert float(_np(state.fusion_weight)) == 0.5
    table[:] = [[0.0, 1.0]] * 4
    schedule.on_epoch_end(12)
    assert np.allclose(_np(state.class_distribution), [0.0, 1.0])
    # A float16 table is summed in float32, block by block.
    assert np.allclose(table_distribution(np.full((5, 4), 0.25, "float16")), 0.25)


def test_options_are_checked():
    assert get_method("htc").get_config() == {
        "name": "htc", "t": 2.0, "eta": 0.9, "alpha_start": 0.2, "alpha_end": 0.6,
        "warmup_epochs": 50, "mu": 0.6}
    with pytest.raises(LTPLLError, match="--htc-eta"):
        get_method({"name": "htc", "eta": 1.5})
    with pytest.raises(LTPLLError, match="--htc-t"):
        get_method({"name": "htc", "t": -1.0})


# --- prediction and saving -----------------------------------------------------------------

def test_saved_model_predicts_with_the_ensemble(tiny_pll_data, tmp_path):
    images, candidates, _ = tiny_pll_data
    model = tiny_model(images, candidates, method={"name": "htc", "t": 1.0})
    state = model.method_state
    state.class_distribution.assign(_f32([0.4, 0.3, 0.2, 0.1]))
    rng = np.random.default_rng(0)
    state.attention.set_weights([rng.normal(size=(8, 2)).astype("float32"), _f32([0.3, -0.2])])
    features = model.features(images[:4])
    expected = _ensemble_np(model, _np(model.head(features)), _np(state.tail(features)),
                            _f32([0.4, 0.3, 0.2, 0.1]))
    assert np.allclose(_np(model(images[:4])), expected, atol=1e-5)
    path = str(tmp_path / "htc.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.method.get_config()["t"] == 1.0 and loaded.method.name == "htc"
    assert np.allclose(_np(loaded.method_state.class_distribution), [0.4, 0.3, 0.2, 0.1])
    assert np.allclose(_np(loaded(images[:4])), expected, atol=1e-5)


def test_with_records_its_prior_is_the_distribution_and_is_not_removed_twice(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    model = tiny_model(images, candidates, rebalancer=RecordsPrior(momentum=0.0, name="records"),
                       method="htc")
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    model.fit(images, targets(candidates, labels), batch_size=8, epochs=1, verbose=0)
    prior = np.exp(_np(model.rebalancer.log_prior(model.head)))
    assert not np.allclose(prior, 0.25, atol=1e-3)
    features = model.features(images[:4])
    expected = _ensemble_np(model, _np(model.head(features)),
                            _np(model.method_state.tail(features)), prior)
    assert np.allclose(_np(model(images[:4])), expected, atol=1e-4)


# --- backends and CLI --------------------------------------------------------------------------

def test_htc_trains_on_jax():
    out = run_python("""
        import keras, numpy as np
        from ltpll.models.pll_model import UpdateStart
        from tests.helpers import targets, tiny_model, tiny_pll_arrays
        images, candidates, labels = tiny_pll_arrays()
        model = tiny_model(images, candidates, method={"name": "htc", "warmup_epochs": 1},
                           mixup=True, deterministic=False)
        model.compile(optimizer=keras.optimizers.SGD(0.05))
        history = model.fit(images, targets(candidates, labels), batch_size=8, epochs=2,
                            verbose=0, callbacks=[UpdateStart(0)])
        table = keras.ops.convert_to_numpy(model.confidence)
        estimate = keras.ops.convert_to_numpy(model.method_state.class_distribution)
        print(bool(np.all(np.isfinite(history.history["loss"]))),
              bool(np.allclose(estimate, table.mean(axis=0), atol=1e-5)),
              bool(not np.allclose(estimate, 0.25)), bool(np.all(table[candidates == 0] == 0)))
    """, backend="jax")
    assert out.strip().splitlines()[-1] == "True True True True", out


def test_htc_trains_from_the_cli_and_exports_the_ensemble(image_folder, tmp_path):
    import glob
    import json
    import os

    import tensorflow as tf
    from PIL import Image

    from ltpll.saving import load_run
    from tests.test_cli import TRAIN_ARGS, invoke

    run = str(tmp_path / "run")
    result = invoke("train", "--dataset", image_folder, "--method", "htc", "--mixup",
                    "--records", "--htc-t", "1.5", "--htc-warmup-epochs", "1",
                    "--update-start", "0", "--output", run, *TRAIN_ARGS)
    assert result.exit_code == 0, result.output
    with open(os.path.join(run, "config.json")) as file:
        method = json.load(file)["model"]["method"]
    assert method["name"] == "htc" and method["t"] == 1.5 and method["mu"] == 0.6
    out = str(tmp_path / "export")
    result = invoke("export", run, out)
    assert result.exit_code == 0, result.output
    _, _, model = load_run(run)
    files = sorted(glob.glob(os.path.join(image_folder, "test", "*", "*.png")))[:4]
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    served = tf.saved_model.load(out).signatures["serve_uint8"](images=tf.constant(images))
    assert np.allclose(served["probabilities"].numpy(), _softmax(_np(model.predict(images))),
                       atol=1e-5)
    bad = invoke("train", "--dataset", image_folder, "--method", "htc", "--htc-mu", "2",
                 "--output", str(tmp_path / "bad"), *TRAIN_ARGS)
    assert bad.exit_code != 0 and "--htc-mu must be in [0, 1]" in bad.output
