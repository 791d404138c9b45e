"""``--data-seed`` holds the data still across training seeds; ``--hierarchical`` is
CIFAR-100-LT-NU; saved configs of older runs keep the data they trained on."""

import numpy as np
import pytest

from ltpll.cli.app import OneLineUsageError
from ltpll.cli.options import run_config
from ltpll.cli.train import train as train_command
from ltpll.config import DataConfig, RunConfig, TrainConfig
from ltpll.data.prepare import prepare_data
from ltpll.errors import LTPLLError


def _quiet(*_args, **_kwargs):
    pass


def _prepared(folder, seed, data_seed):
    config = DataConfig(dataset=folder, imbalance_ratio=4, max_per_class=16, partial_rate=0.3,
                        dev_per_class=2, data_seed=data_seed)
    return prepare_data(config, seed, log=_quiet)


def _same_data(a, b):
    return (a.paths == b.paths and np.array_equal(a.candidates, b.candidates)
            and np.array_equal(a.dev_images, b.dev_images))


def test_one_data_seed_one_dataset_whatever_the_seed(image_folder):
    base = _prepared(image_folder, seed=1, data_seed=7)
    assert _same_data(base, _prepared(image_folder, seed=2, data_seed=7))
    # Another data seed draws other images (16 of 20 for the head class) and other sets.
    other = _prepared(image_folder, seed=1, data_seed=8)
    assert base.paths != other.paths
    # Without a data seed the run's seed decides, as before --data-seed existed.
    assert _same_data(_prepared(image_folder, seed=7, data_seed=None), base)
    assert not _same_data(_prepared(image_folder, seed=1, data_seed=None), base)


def _flags(*args):
    """The parsed flags of an ``ltpll train`` command line (not run)."""
    return train_command.make_context("train", list(args)).params


def _config(*args):
    flags = _flags(*args)
    return run_config(flags, method="corr", rebalance="none", imbalance_ratio=None,
                      partial_rate=0.05, seed=flags["seed"], output="x")


def test_flags_choose_the_candidate_model_and_record_the_data_seed():
    nu = _config("--hierarchical", "--seed", "5")
    assert nu.data.candidate_model == "nu" and nu.data.superclass_ratio == 8.0
    assert nu.data.data_seed == 5  # recorded: the data followed --seed
    h = _config("--candidate-model", "h", "--data-seed", "9", "--seed", "5")
    assert h.data.candidate_model == "h" and h.data.data_seed == 9 and h.train.seed == 5
    assert _config().data.candidate_model == "uniform"
    saved = RunConfig.from_dict(h.to_dict())
    assert saved.data.data_seed == 9 and saved.data.candidate_model == "h"


def test_hierarchical_contradicting_candidate_model_is_a_usage_error():
    with pytest.raises(OneLineUsageError, match="--hierarchical.*contradicts.*uniform"):
        _config("--hierarchical", "--candidate-model", "uniform")


def test_superclass_ratio_below_1_is_refused():
    with pytest.raises(LTPLLError, match="--superclass-ratio must be >= 1"):
        _config("--hierarchical", "--superclass-ratio", "0.5")


def test_version_3_hierarchical_config_loads_as_cifar100_h():
    # Before version 4, `hierarchical: true` drew sets inside the superclass only (CIFAR-100-H),
    # and the run's seed fixed the data.
    payload = RunConfig(train=TrainConfig(seed=42)).to_dict()
    data = payload["data"]
    for key in ("candidate_model", "superclass_ratio", "superclasses", "data_seed"):
        del data[key]
    old = {**payload, "version": 3, "data": {**data, "hierarchical": True}}
    config = RunConfig.from_dict(old)
    assert config.data.candidate_model == "h" and config.data.data_seed == 42
    plain = RunConfig.from_dict({**old, "data": {**data, "hierarchical": False}})
    assert plain.data.candidate_model == "uniform"
