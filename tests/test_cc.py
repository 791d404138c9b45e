"""CC (Feng et al., 2020) and CC + RECORDS: loss, gradient and in-model targets worked by hand."""

import json
import os

import numpy as np
from click.testing import CliRunner
from keras import ops

from ltpll.autodiff import grad
from ltpll.cli.main import main
from ltpll.disambiguation import CC, get_method
from ltpll.rebalancing.records import RecordsPrior
from tests.helpers import run_python, targets, tiny_model


def value(x):
    return ops.convert_to_numpy(x).astype("float64")


def f32(rows):
    return np.array(rows, dtype="float32")


# Probabilities p = (0.5, 0.3, 0.2); row 1 has candidates {0, 1}, row 2 only {2}.
LOGITS = np.log(f32([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]))
CANDIDATES = f32([[1, 1, 0], [0, 0, 1]])


def cc_loss(logits, candidates, log_prior=None):
    """CC's loss as the model computes it: KL to the step's target, the target held fixed."""
    method = CC()
    debiased = logits if log_prior is None else logits - log_prior
    step_target = ops.stop_gradient(method.update(debiased, None, candidates))
    return method.loss(logits, None, step_target, candidates)


def test_cc_loss_is_minus_log_candidate_probability():
    # row 1: -log(0.5 + 0.3) = 0.223144; row 2: -log 0.2 = 1.609438; mean 0.916291
    assert np.isclose(value(cc_loss(LOGITS, CANDIDATES)), 0.916291, atol=1e-5)


def test_cc_gradient_is_p_minus_p_restricted_to_the_candidates():
    # q = (0.5, 0.3, 0) / 0.8 = (0.625, 0.375, 0): p - q = (-0.125, -0.075, 0.2) for row 1,
    # (0.5, 0.3, 0.2 - 1) for row 2; the batch mean halves both.
    gradient = value(grad(lambda z: cc_loss(z, CANDIDATES), LOGITS))
    expected = np.array([[-0.125, -0.075, 0.2], [0.5, 0.3, -0.8]]) / 2
    assert np.allclose(gradient, expected, atol=1e-5)


def test_cc_update_is_softmax_renormalised_on_candidates():
    rows = value(CC().update(LOGITS, None, CANDIDATES))
    assert np.allclose(rows, [[0.625, 0.375, 0.0], [0.0, 0.0, 1.0]], atol=1e-6)


# CC + RECORDS on row 1 with the prior (0.625, 0.25, 0.125): p / prior = (0.8, 1.2, 1.6), so the
# debiased target on {0, 1} is q' = (0.4, 0.6, 0): the tail candidate now carries more weight.
PRIOR = f32([0.625, 0.25, 0.125])


def test_cc_records_moves_the_target_towards_the_rarer_candidate():
    loss = value(cc_loss(LOGITS[:1], CANDIDATES[:1], np.log(PRIOR)))
    # KL(q' || p) = 0.4 log(0.4 / 0.5) + 0.6 log(0.6 / 0.3) = -0.089257 + 0.415888
    assert np.isclose(loss, 0.326631, atol=1e-5)
    gradient = value(grad(lambda z: cc_loss(z, CANDIDATES[:1], np.log(PRIOR)), LOGITS[:1]))
    # p - q' = (0.5 - 0.4, 0.3 - 0.6, 0.2): class 1 is pulled up four times as hard as under CC
    # (-0.075), class 0 is pushed down instead of up.
    assert np.allclose(gradient, [[0.1, -0.3, 0.2]], atol=1e-5)


def test_uniform_prior_is_plain_cc():
    uniform = np.log(np.full(3, 1 / 3, dtype="float32"))
    assert np.isclose(value(cc_loss(LOGITS, CANDIDATES, uniform)), 0.916291, atol=1e-5)


# --- inside PLLModel -----------------------------------------------------------------------
def _loss_and_logit_gradient(model, batch, y):
    outputs = model(batch, training=True)

    def loss_of(logits_w):
        return model.compute_loss(batch, y, {**outputs, "logits_w": logits_w}, training=False)

    return (value(loss_of(outputs["logits_w"])), value(outputs["logits_w"]),
            value(grad(loss_of, outputs["logits_w"])))


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_model_trains_cc_on_its_step_targets_debiased_by_records(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    batch, y = images[:8], targets(candidates, labels, np.arange(8))
    # The table holds rows far from CC's target: the loss must not read them.
    records = RecordsPrior(momentum=0.9, name="records")
    model = tiny_model(images, candidates, rebalancer=records, method="cc")
    model.confidence.assign(np.asarray(candidates, "float32") * [[0.97, 0.01, 0.01, 0.01]])

    # F = 0 and a zero head bias: the prior is uniform and CC + RECORDS is plain CC.
    loss, logits, gradient = _loss_and_logit_gradient(model, batch, y)
    p, mask = _softmax(logits), candidates[:8]
    assert np.allclose(model.estimated_prior(), 0.25, atol=1e-6)
    assert np.isclose(loss, np.mean(-np.log((p * mask).sum(axis=1))), atol=1e-5)
    q = p * mask / (p * mask).sum(axis=1, keepdims=True)
    assert np.allclose(gradient, (p - q) / 8, atol=1e-5)

    # A non-uniform prior: the target is softmax(logits - log prior) on the candidates.
    records.feature_mean.assign(np.linspace(-3.0, 3.0, records.feature_mean.shape[0]))
    prior = model.estimated_prior()
    assert prior.max() > 1.5 * prior.min()
    debiased_loss, logits, gradient = _loss_and_logit_gradient(model, batch, y)
    p = _softmax(logits)
    q_debiased = p / prior * mask
    q_debiased /= q_debiased.sum(axis=1, keepdims=True)
    kl = np.sum(np.where(q_debiased > 0, q_debiased * np.log(np.maximum(q_debiased, 1e-30) / p),
                         0.0), axis=1)
    assert np.isclose(debiased_loss, kl.mean(), atol=1e-5)
    assert np.allclose(gradient, (p - q_debiased) / 8, atol=1e-5)
    assert not np.isclose(debiased_loss, np.mean(-np.log((p * mask).sum(axis=1))), atol=1e-3)


def test_cc_config_round_trip():
    method = get_method("cc")
    assert isinstance(method, CC) and method.views == 1 and method.step_targets
    assert get_method(method.get_config()).get_config() == {"name": "cc"}


def test_train_cc_records_mixup_end_to_end(image_folder, tmp_path):
    run = str(tmp_path / "run")
    result = CliRunner().invoke(main, [
        "train", "--dataset", image_folder, "--method", "cc", "--records", "--mixup",
        "--imbalance-ratio", "2", "--partial-rate", "0.3", "--backbone", "tiny", "--epochs", "2",
        "--update-start", "0", "--batch-size", "8", "--lr", "0.05", "--seed", "5",
        "--output", run], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with open(os.path.join(run, "config.json")) as handle:
        config = json.load(handle)
    assert config["model"]["method"] == {"name": "cc"} and config["model"]["mixup"] is True
    with open(os.path.join(run, "metrics.json")) as handle:
        metrics = json.load(handle)
    assert 0.0 <= metrics["top1"] <= 1.0
    assert np.isclose(sum(metrics["estimated_prior"]), 1.0, atol=1e-5)


def test_cc_records_mixup_trains_on_jax():
    out = run_python("""
        import keras, numpy as np
        from ltpll.models.pll_model import UpdateStart
        from ltpll.rebalancing.records import RecordsPrior
        from tests.helpers import targets, tiny_model, tiny_pll_arrays
        images, candidates, labels = tiny_pll_arrays()
        model = tiny_model(images, candidates, rebalancer=RecordsPrior(name="records"),
                           method="cc", mixup=True, deterministic=False)
        model.compile(optimizer=keras.optimizers.SGD(0.05))
        history = model.fit(images, targets(candidates, labels), batch_size=8, epochs=1,
                            verbose=0, callbacks=[UpdateStart(0)])
        table = keras.ops.convert_to_numpy(model.confidence)
        print(np.isfinite(history.history["loss"][0]), np.allclose(table.sum(1), 1, atol=1e-5),
              bool(np.all(table[candidates == 0] == 0)), float(np.abs(table - 0.25).max()) > 0)
    """, backend="jax")
    assert out.strip().splitlines()[-1] == "True True True True", out
