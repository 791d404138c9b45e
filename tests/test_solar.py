"""SoLar and SoLar-LA: Sinkhorn on hand-solved plans, the reliable-sample selection, the queue,
the marginal schedule, the step's loss, saving, and training on TensorFlow and JAX."""

import types

import keras
import numpy as np
import pytest
from keras import ops

from ltpll.disambiguation import get_method
from ltpll.disambiguation.base import cross_entropy_to_targets
from ltpll.disambiguation.solar import (
    SolarSchedule,
    high_confidence,
    permutation_within,
    refine,
    select_small_loss,
    sinkhorn,
)
from ltpll.errors import LTPLLError
from ltpll.models.pll_model import UpdateStart
from tests.helpers import run_python, targets, tiny_model


def _np(x):
    return ops.convert_to_numpy(x)


def _f32(values):
    return np.asarray(values, dtype="float32")


# --- Sinkhorn ----------------------------------------------------------------------------------

def test_sinkhorn_reaches_the_hand_solved_plan():
    # K = cost ** 2 = [[1/4, 1/4], [1/16, 1/4]]: a plan diag(u) K diag(v) keeps K's cross ratio
    # (p11 p22) / (p12 p21) = 4. Rows of mass 1/2 with p11 = p12 = 1/4 then force p21 = 0.1,
    # p22 = 0.4, so the class marginal [0.35, 0.65] has the plan (times N = 2) below.
    plan = _np(sinkhorn(_f32([[0.5, 0.5], [0.25, 0.5]]), _f32([0.35, 0.65]), lamd=2.0,
                        iterations=200))
    assert np.allclose(plan, [[0.5, 0.5], [0.2, 0.8]], atol=1e-5)


def test_sinkhorn_gives_uninformative_rows_the_marginal():
    plan = _np(sinkhorn(np.ones((3, 3), "float32"), _f32([0.5, 0.3, 0.2]), lamd=1.0))
    assert np.allclose(plan, [[0.5, 0.3, 0.2]] * 3, atol=1e-6)


def test_rows_without_weight_take_no_part():
    cost = _f32([[0.7, 0.3, 0.0], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    marginal = _f32([0.5, 0.3, 0.2])
    alone = _np(sinkhorn(cost, marginal))
    stacked = np.concatenate([np.full((2, 3), 0.4, "float32"), cost])
    plan = _np(sinkhorn(stacked, marginal, weights=_f32([0, 0, 1, 1, 1])))
    assert np.allclose(plan[2:], alone, atol=1e-5) and np.all(plan[:2] == 0)
    assert np.allclose(alone.sum(axis=1), 1.0, atol=1e-5) and alone[0, 2] == 0


def test_a_class_nobody_may_be_falls_back_to_the_relaxed_plan():
    cost = _f32([[0.6, 0.4, 0.0], [0.5, 0.5, 0.0]])
    marginal = _f32([0.4, 0.4, 0.2])
    assert not np.all(np.isfinite(_np(sinkhorn(cost, marginal))))
    plan = _np(refine(cost, marginal))
    # The lifted third class takes its N * 0.2 of the mass, then is cut off again, as the
    # authors do: the other classes keep their column sums N * 0.4 = 0.8.
    assert np.all(np.isfinite(plan)) and np.all(plan[:, 2] == 0)
    assert np.allclose(plan.sum(axis=0)[:2], [0.8, 0.8], atol=1e-4)
    finite = _f32([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]])
    assert np.allclose(_np(refine(finite, marginal)), _np(sinkhorn(finite, marginal)))


# --- reliable samples --------------------------------------------------------------------------

def test_small_loss_selection_keeps_each_class_quota():
    refined = _f32([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4]])
    losses = _f32([0.3, 0.1, 0.2, 0.5, 0.4, 0.1])
    # Class 0 holds samples 0, 1, 2, 5; class 1 holds 3, 4. B = 6, rho = 0.5.
    # Marginal [0.5, 0.5]: quota ceil(6 * 0.5 * 0.5) = 2 each -> class 0 keeps 1 and 5 (the tie
    # at 0.1 keeps both), class 1 keeps both of its samples.
    chosen = _np(select_small_loss(refined, losses, _f32([0.5, 0.5]), 0.5))
    assert chosen.tolist() == [False, True, False, True, True, True]
    # Marginal [0.9, 0.1]: quotas ceil(2.7) = 3 and max(ceil(0.3), 1) = 1.
    chosen = _np(select_small_loss(refined, losses, _f32([0.9, 0.1]), 0.5))
    assert chosen.tolist() == [False, True, True, False, True, True]


def test_high_confidence_is_agreement_above_tau():
    refined = _f32([[1.0, 0.0], [0.5, 0.5]])
    probs = _f32([[0.995, 0.005], [0.999, 0.001]])  # agreements 0.995 and 0.5
    assert _np(high_confidence(refined, probs, 0.99)).tolist() == [True, False]


def test_mixup_partners_are_reliable_samples():
    selected = np.array([1, 0, 1, 1, 0, 1, 1, 0], bool)
    for seed in range(5):
        perm = _np(permutation_within(selected, keras.random.SeedGenerator(seed)))
        assert sorted(perm.tolist()) == list(range(8))
        assert np.array_equal(selected[perm], selected)


# --- state: queue and marginal -----------------------------------------------------------------

def _solar(**options):
    method = get_method({"name": "solar", **options})
    method.build(types.SimpleNamespace(num_classes=2))
    return method


def test_queue_fills_newest_first_and_joins_when_full():
    method = _solar(queue_size=4)
    state, marginal = method.state, _f32([0.5, 0.5])
    costs = [_f32([[0.9, 0.1], [0.3, 0.7]]), _f32([[0.6, 0.4], [0.2, 0.0]]),
             _f32([[0.5, 0.5], [0.1, 0.9]])]
    # Not yet full: the batch alone.
    for k, cost in enumerate(costs[:2]):
        assert np.allclose(_np(method.refined_labels(cost, training=True)),
                           _np(refine(cost, marginal)), atol=1e-6)
        assert float(_np(state.queue_filled)) == 2 * (k + 1)
    assert np.allclose(_np(state.queue), np.concatenate([costs[1], costs[0]]))
    # Full: Sinkhorn runs on queue + batch, and the oldest batch leaves.
    stacked = np.concatenate([costs[1], costs[0], costs[2]])
    assert np.allclose(_np(method.refined_labels(costs[2], training=True)),
                       _np(refine(stacked, marginal))[4:], atol=1e-6)
    assert np.allclose(_np(state.queue), np.concatenate([costs[2], costs[1]]))
    method.refined_labels(costs[0], training=False)
    assert np.allclose(_np(state.queue), np.concatenate([costs[2], costs[1]]))


def test_marginal_moves_by_gamma_est_then_gamma():
    method = _solar(est_epochs=1, gamma_est=0.1, gamma=0.01)
    schedule, state = SolarSchedule(method), method.state
    state.counts.assign(_f32([3, 1]))
    schedule.on_epoch_end(0)  # 0.1 * [0.75, 0.25] + 0.9 * [0.5, 0.5]
    assert np.allclose(_np(state.class_marginal), [0.525, 0.475])
    assert np.all(_np(state.counts) == 0)
    state.counts.assign(_f32([0, 4]))
    schedule.on_epoch_end(1)  # 0.01 * [0, 1] + 0.99 * [0.525, 0.475]
    assert np.allclose(_np(state.class_marginal), [0.51975, 0.48025])
    schedule.on_epoch_begin(7)
    assert float(_np(state.epoch)) == 7


def test_solar_la_adjusts_training_logits_by_the_marginal():
    method = get_method("solar-la")
    method.build(types.SimpleNamespace(num_classes=2))
    method.state.class_marginal.assign(_f32([0.8, 0.2]))
    assert np.allclose(_np(method.adjust(_f32([[0.0, 0.0]]))), [[np.log(0.8), np.log(0.2)]])
    assert np.allclose(_np(_solar().adjust(_f32([[0.0, 0.0]]))), [[0.0, 0.0]])
    with pytest.raises(LTPLLError, match="la_tau"):
        get_method({"name": "solar", "la_tau": 1.0})
    with pytest.raises(LTPLLError, match="--solar-eta"):
        get_method({"name": "solar", "eta": 1.5})


# --- the step in the model ---------------------------------------------------------------------

def _step_loss(model, images, candidates, labels):
    y = targets(candidates, labels, np.arange(8))
    outputs = model(images[:8], training=True)
    loss = float(_np(model.compute_loss(images[:8], y, outputs, training=False)))
    return loss, outputs


def test_first_epoch_trains_the_proden_loss_alone(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    model = tiny_model(images, candidates, method={"name": "solar", "queue_size": 0})
    loss, outputs = _step_loss(model, images, candidates, labels)
    rows = candidates[:8] / candidates[:8].sum(axis=1, keepdims=True)
    expected = _np(cross_entropy_to_targets(outputs["logits_w"], rows)).mean()
    assert np.isclose(loss, expected, atol=1e-5)


def test_after_warm_up_every_confident_sample_trains_on_its_refined_label(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    # tau = 0: every sample is reliable, so the loss is eta * (CE_weak + CE_strong) to the
    # refined labels, with no PRODEN term.
    model = tiny_model(images, candidates, method={
        "name": "solar", "queue_size": 0, "tau": 0.0, "eta": 0.6, "warmup_epochs": 2})
    model.method_state.epoch.assign(5.0)
    loss, outputs = _step_loss(model, images, candidates, labels)
    probs = _np(ops.softmax(outputs["logits_w"]))
    refined = refine(probs * candidates[:8], _f32([0.25] * 4))
    expected = 0.6 * (_np(cross_entropy_to_targets(outputs["logits_w"], refined)).mean()
                      + _np(cross_entropy_to_targets(outputs["logits_s"], refined)).mean())
    assert np.isclose(loss, expected, atol=1e-4)


def test_solar_la_with_mixup_trains_and_fills_its_state(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    model = tiny_model(images, candidates, method={
        "name": "solar-la", "queue_size": 16, "warmup_epochs": 1, "est_epochs": 1},
        mixup=True, deterministic=False)
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=True)
    history = model.fit(images, targets(candidates, labels), batch_size=8, epochs=2, verbose=0,
                        callbacks=[UpdateStart(0)])
    assert np.all(np.isfinite(history.history["loss"]))
    state = model.method_state
    assert float(_np(state.queue_filled)) == 16 and float(_np(state.epoch)) == 1
    marginal = _np(state.class_marginal)
    assert np.isclose(marginal.sum(), 1.0, atol=1e-5) and not np.allclose(marginal, 0.25)
    # Queued costs are predictions restricted to candidate sets: each row's mass is in (0, 1].
    sums = _np(state.queue).sum(axis=1)
    assert np.all(sums > 0) and np.all(sums <= 1 + 1e-6)
    table = _np(model.confidence)
    assert np.all(table[candidates == 0] == 0) and np.allclose(table.sum(1), 1.0, atol=1e-5)
    # Prediction uses the plain logits: the adjustment is for training only.
    plain = model.head(model.features(images[:4]))
    assert np.allclose(_np(model(images[:4])), _np(plain), atol=1e-5)


def test_state_and_options_survive_saving(tiny_pll_data, tmp_path):
    images, candidates, _ = tiny_pll_data
    model = tiny_model(images, candidates, method={"name": "solar-la", "queue_size": 8,
                                                   "la_tau": 0.5})
    model.method_state.class_marginal.assign(_f32([0.4, 0.3, 0.2, 0.1]))
    model.method_state.queue.assign(np.arange(32, dtype="float32").reshape(8, 4))
    path = str(tmp_path / "solar.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.method.get_config()["la_tau"] == 0.5 and loaded.method.name == "solar-la"
    assert np.allclose(_np(loaded.method_state.class_marginal), [0.4, 0.3, 0.2, 0.1])
    assert np.allclose(_np(loaded.method_state.queue), np.arange(32).reshape(8, 4))


def test_solar_trains_on_jax():
    out = run_python("""
        import keras, numpy as np
        from ltpll.models.pll_model import UpdateStart
        from tests.helpers import targets, tiny_model, tiny_pll_arrays
        images, candidates, labels = tiny_pll_arrays()
        model = tiny_model(images, candidates, method={"name": "solar", "queue_size": 16,
                           "warmup_epochs": 1}, mixup=True, deterministic=False)
        model.compile(optimizer=keras.optimizers.SGD(0.05))
        history = model.fit(images, targets(candidates, labels), batch_size=8, epochs=2,
                            verbose=0, callbacks=[UpdateStart(0)])
        state = model.method_state
        marginal = keras.ops.convert_to_numpy(state.class_marginal)
        print(bool(np.all(np.isfinite(history.history["loss"]))),
              float(keras.ops.convert_to_numpy(state.queue_filled)),
              bool(np.isclose(marginal.sum(), 1.0)), bool(not np.allclose(marginal, 0.25)))
    """, backend="jax")
    assert out.strip().splitlines()[-1] == "True 16.0 True True", out


def test_solar_la_trains_from_the_cli(image_folder, tmp_path):
    import json
    import os

    from tests.test_cli import TRAIN_ARGS, invoke

    run = str(tmp_path / "run")
    result = invoke("train", "--dataset", image_folder, "--method", "solar-la", "--mixup",
                    "--solar-queue-size", "16", "--solar-la-tau", "0.5", "--update-start", "0",
                    "--output", run, *TRAIN_ARGS)
    assert result.exit_code == 0, result.output
    with open(os.path.join(run, "config.json")) as file:
        method = json.load(file)["model"]["method"]
    assert method["name"] == "solar-la" and method["la_tau"] == 0.5
    assert method["queue_size"] == 16 and method["eta"] == 0.9
    bad = invoke("train", "--dataset", image_folder, "--method", "solar", "--solar-eta", "2",
                 "--output", str(tmp_path / "bad"), *TRAIN_ARGS)
    assert bad.exit_code != 0 and "--solar-eta must be in [0, 1]" in bad.output
