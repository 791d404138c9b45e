"""Every PLL method inside PLLModel, with and without Mixup: views, table invariants, the mixed
term, and the same training on the JAX backend."""

import keras
import numpy as np
import pytest
from keras import ops

from ltpll import components
from ltpll.disambiguation import get_method
from ltpll.models.pll_model import UpdateStart
from tests.helpers import run_python, targets, tiny_model


def _np(x):
    return ops.convert_to_numpy(x)


@pytest.mark.parametrize("mixup", [False, True])
@pytest.mark.parametrize("method", components.names("method"))
def test_method_trains_and_keeps_rows_inside_candidates(method, mixup, tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    model = tiny_model(images, candidates, method=method, mixup=mixup, deterministic=False)
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=True)
    before = _np(model.confidence).copy()
    history = model.fit(images, targets(candidates, labels), batch_size=8, epochs=2, verbose=0,
                        callbacks=[UpdateStart(0)])
    assert np.all(np.isfinite(history.history["loss"]))
    table = _np(model.confidence)
    assert not np.allclose(table, before)
    assert np.all(table[candidates == 0] == 0)
    assert np.allclose(table.sum(axis=1), 1.0, atol=1e-5)
    if method == "cavl":  # CAVL's rows are one-hot
        assert np.all(np.isclose(table.max(axis=1), 1.0))


@pytest.mark.parametrize("method", components.names("method"))
def test_views_follow_the_method(method, tiny_pll_data):
    images, candidates, _ = tiny_pll_data
    outputs = tiny_model(images, candidates, method=method, mixup=True)(images[:8], training=True)
    views = get_method(method).views
    expected = {"views", "logits_w", "features_w", "logits_w_mix", "mix_lambda", "mix_perm"}
    if views == 2:
        expected |= {"logits_s", "features_s", "logits_s_mix"}
    if get_method(method).owns_mixup:  # SoLar mixes its selected samples itself
        expected = {key for key in expected if "mix" not in key}
    assert set(outputs) == expected


def test_mixed_term_mixes_images_and_targets_and_waits_for_updates(tiny_pll_data):
    images, candidates, labels = tiny_pll_data
    batch = images[:8]
    y = targets(candidates, labels, np.arange(8))
    mixed = tiny_model(images, candidates, mixup=True, mixup_weight=0.7)
    plain = tiny_model(images, candidates)
    plain.set_weights(mixed.get_weights())

    outputs = mixed(batch, training=True)
    lam, perm = float(_np(outputs["mix_lambda"])), _np(outputs["mix_perm"])
    assert 0.5 <= lam <= 1.0 and sorted(perm.tolist()) == list(range(8))
    # The mixed view is the network on lam * x + (1 - lam) * x[perm] (identity augmentation).
    x = batch.astype("float32") / 255.0
    expected_logits = mixed.head(mixed.backbone(mixed.normalise(lam * x + (1 - lam) * x[perm])))
    assert np.allclose(_np(outputs["logits_w_mix"]), _np(expected_logits), atol=1e-4)

    plain_loss = float(_np(plain.compute_loss(batch, y, plain(batch, training=True),
                                              training=False)))
    mixed.update_enabled.assign(0.0)
    assert np.isclose(float(_np(mixed.compute_loss(batch, y, outputs, training=False))),
                      plain_loss, atol=1e-5)
    mixed.update_enabled.assign(1.0)
    table = _np(mixed.confidence)[:8]
    mixed_targets = lam * table + (1 - lam) * table[perm]
    union = np.maximum(candidates[:8], candidates[:8][perm])
    mixed_term = float(_np(mixed.method.loss(outputs["logits_w_mix"], outputs["logits_s_mix"],
                                             mixed_targets, union)))
    assert np.isclose(float(_np(mixed.compute_loss(batch, y, outputs, training=False))),
                      plain_loss + 0.7 * mixed_term, atol=1e-4)


def test_lw_beta_survives_saving(tiny_pll_data, tmp_path):
    images, candidates, _ = tiny_pll_data
    model = tiny_model(images, candidates, method={"name": "lw", "beta": 2.5})
    path = str(tmp_path / "lw.keras")
    model.save(path)
    assert keras.saving.load_model(path).method.get_config() == {"name": "lw", "beta": 2.5}


def test_methods_mixup_and_oracle_ramp_train_on_jax():
    out = run_python("""
        import keras, numpy as np
        from ltpll.models.pll_model import UpdateStart
        from ltpll import components
        from tests.helpers import targets, tiny_model, tiny_pll_arrays
        images, candidates, labels = tiny_pll_arrays()
        for method in ("proden", "lw", "cavl", "corr"):
            layer = components.build(
                "rebalancer", {"name": "temp-oracle-la", "ramp_epochs": 2},
                components.BuildContext(class_counts=[8, 8, 8, 8]))
            model = tiny_model(images, candidates, rebalancer=layer, method=method, mixup=True,
                               deterministic=False)
            model.compile(optimizer=keras.optimizers.SGD(0.05))
            model.fit(images, targets(candidates, labels), batch_size=8, epochs=2, verbose=0,
                      callbacks=[UpdateStart(0)])  # the model adds the ramp itself
            table = keras.ops.convert_to_numpy(model.confidence)
            ok = np.allclose(table.sum(1), 1, atol=1e-5) and np.all(table[candidates == 0] == 0)
            print(method, ok, float(keras.ops.convert_to_numpy(layer.temperature)))
    """, backend="jax")
    lines = out.strip().splitlines()[-4:]
    assert lines == [f"{m} True 1.0" for m in ("proden", "lw", "cavl", "corr")], out


def test_mixup_lambda_source_is_beta_4_4():
    from ltpll.models.pll_model import _beta_4_4

    draws = _np(_beta_4_4(keras.random.SeedGenerator(0), shape=(40000,)))
    # Beta(4, 4): mean 1/2, variance ab / ((a + b)^2 (a + b + 1)) = 16 / 576 = 0.027778
    assert abs(draws.mean() - 0.5) < 0.005
    assert abs(draws.var() - 0.027778) < 0.0015
    assert draws.min() > 0 and draws.max() < 1
