"""The long-tail rebalancers: oracle logit adjustment (train-time, post-hoc, temperature ramp),
the per-epoch RECORDS ablation, and each one inside a model that is trained, saved and reloaded."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from ltpll import components
from ltpll.callbacks import PriorLog
from ltpll.config import RunConfig
from ltpll.errors import LTPLLError
from ltpll.models.pll_model import UpdateStart
from ltpll.rebalancing import EpochRecordsPrior, OracleLogitAdjustment
from tests.helpers import targets, tiny_model

COUNTS = [30, 10]            # true prior (0.75, 0.25)
LOG_PRIOR = np.log([0.75, 0.25])
LOGITS = np.array([[1.0, 0.5]], dtype="float32")


def _np(x):
    return ops.convert_to_numpy(x)


def make_rebalancer(name, class_counts=None, epochs=4, **options):
    context = components.BuildContext(class_counts=class_counts, epochs=epochs)
    return components.build("rebalancer", {"name": name, **options}, context)


def test_oracle_la_subtracts_tau_log_prior_when_disambiguating_and_predicting():
    layer = OracleLogitAdjustment(COUNTS, tau=2.0)
    layer.build()
    # 1 - 2 log 0.75 = 1.575364, 0.5 - 2 log 0.25 = 3.272589
    expected = [[1.575364, 3.272589]]
    assert np.allclose(_np(layer.update_logits(LOGITS, None)), expected, atol=1e-5)
    assert np.allclose(_np(layer.prediction_logits(LOGITS, None)), expected, atol=1e-5)
    assert np.allclose(np.exp(_np(layer.log_prior(None))), [0.75, 0.25])


def test_posthoc_la_leaves_disambiguation_alone():
    layer = OracleLogitAdjustment(COUNTS, tau=1.0, posthoc=True)
    layer.build()
    assert np.allclose(_np(layer.update_logits(LOGITS, None)), LOGITS)
    assert np.allclose(_np(layer.prediction_logits(LOGITS, None)), LOGITS - LOG_PRIOR, atol=1e-5)


def test_temperature_ramps_linearly_then_holds():
    layer = OracleLogitAdjustment(COUNTS, tau=2.0, ramp_epochs=4)
    layer.build()
    assert float(_np(layer.temperature)) == 0.0
    (ramp,) = layer.callbacks()
    seen = []
    for epoch in range(6):
        ramp.on_epoch_begin(epoch)
        seen.append(float(_np(layer.temperature)))
    assert np.allclose(seen, [0.0, 0.5, 1.0, 1.5, 2.0, 2.0])
    ramp.on_epoch_begin(1)
    ramp.on_train_end()   # a run shorter than the ramp still predicts with the final tau
    assert float(_np(layer.temperature)) == 2.0


def test_epoch_records_fixes_the_feature_mean_once_per_epoch():
    layer = EpochRecordsPrior()
    layer.build((2,))
    layer.update(np.array([[2.0, 0.0], [4.0, 2.0]], "float32"),
                 np.array([[2.0, 0.0], [4.0, 2.0]], "float32"))      # batch mean (3, 1)
    layer.update(np.array([[1.0, 3.0]], "float32"), np.array([[1.0, 3.0]], "float32"))  # (1, 3)
    assert np.allclose(_np(layer.feature_mean), [0.0, 0.0])    # unchanged during the epoch
    (finish,) = layer.callbacks()
    finish.on_epoch_end(0)
    assert np.allclose(_np(layer.feature_mean), [2.0, 2.0])
    assert float(_np(layer.batches)) == 0.0 and np.allclose(_np(layer.feature_sum), 0.0)
    finish.on_epoch_end(1)                                     # an epoch with no batch keeps F
    assert np.allclose(_np(layer.feature_mean), [2.0, 2.0])


def test_bad_rebalancer_settings_are_user_errors():
    with pytest.raises(LTPLLError, match="choose one of"):
        make_rebalancer("balanced-softmax")
    with pytest.raises(LTPLLError, match="true class counts"):
        make_rebalancer("oracle-la")
    with pytest.raises(LTPLLError, match="positive"):
        OracleLogitAdjustment([10, 0])
    with pytest.raises(LTPLLError, match="la-tau"):
        OracleLogitAdjustment(COUNTS, tau=-1)


def test_temp_oracle_la_ramps_over_half_the_run_by_default():
    assert make_rebalancer("temp-oracle-la", COUNTS, epochs=10).ramp_epochs == 5
    assert make_rebalancer("temp-oracle-la", COUNTS, ramp_epochs=3).ramp_epochs == 3
    assert make_rebalancer("oracle-la-posthoc", COUNTS).posthoc
    assert make_rebalancer("oracle-la", COUNTS, tau=0.5).tau == 0.5


@pytest.mark.parametrize("name", components.names("rebalancer"))
def test_each_rebalancer_trains_saves_and_reloads(name, tiny_pll_data, tmp_path):
    images, candidates, labels = tiny_pll_data
    counts = np.bincount(labels, minlength=candidates.shape[1])
    layer = make_rebalancer(name, class_counts=counts, epochs=4)
    model = tiny_model(images, candidates, rebalancer=layer)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
    log = PriorLog(counts)
    history = model.fit(images, targets(candidates, labels), batch_size=8, epochs=2, verbose=0,
                        callbacks=[UpdateStart(1), *layer.callbacks(), log])
    prior = model.estimated_prior()
    assert np.isclose(prior.sum(), 1.0, atol=1e-5)
    if name.startswith(("oracle", "temp")):
        assert np.allclose(prior, counts / counts.sum(), atol=1e-6)
        assert history.history["prior_l2"][-1] < 1e-6
    elif name == "none":
        assert np.allclose(prior, 0.25)
    else:  # RECORDS moved F away from zero: the prior is no longer exactly uniform
        assert not np.allclose(prior, 0.25, atol=1e-6)
    raw = _np(model.head(model.features(images)))
    predicted = model.predict(images, verbose=0)
    if name == "none":
        assert np.allclose(predicted, raw, atol=1e-5)
    else:
        assert np.allclose(predicted, raw - np.log(prior), atol=1e-4)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.rebalancer) is type(model.rebalancer)
    assert np.allclose(loaded.predict(images, verbose=0), predicted, atol=1e-5)


def test_oracle_la_moves_confidence_towards_rare_classes_compared_with_plain(tiny_pll_data):
    """Same weights, same batch: subtracting log prior in the update favours the rare class."""
    images, candidates, labels = tiny_pll_data
    counts = np.array([100, 10, 10, 10])
    tables = {}
    for name in ("none", "oracle-la"):
        keras.utils.set_random_seed(0)
        model = tiny_model(images, candidates, rebalancer=make_rebalancer(name, counts))
        model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
        model.fit(images, targets(candidates, labels), batch_size=32, epochs=1, verbose=0,
                  callbacks=[UpdateStart(0)])
        tables[name] = _np(model.confidence)
    has_head = candidates[:, 0] > 0
    assert np.all(tables["oracle-la"][has_head, 0] < tables["none"][has_head, 0])


def test_config_version_1_runs_still_load():
    payload = RunConfig().to_dict()
    payload["version"] = 1
    payload["model"] = {"backbone": "resnet18", "method": "corr", "records": True,
                        "records_momentum": 0.8}
    config = RunConfig.from_dict(json.loads(json.dumps(payload))).validate()
    assert config.model.rebalancer == {"name": "records", "momentum": 0.8}
    assert config.model.records
    payload["version"] = 0
    with pytest.raises(LTPLLError, match="incompatible"):
        RunConfig.from_dict(payload)
