"""Run directories written by the ltpll of config version 2 (before the component registry)
still evaluate and resume.

``tests/data/v2_runs.tar.gz`` holds four tiny runs made with that version on the generated image
folder of the ``image_folder`` fixture: two finished (CORR + RECORDS + CB with Mixup; LW with
beta 0.5 + epoch-RECORDS + meta weights) and two stopped after epoch 1 of 4 (PRODEN +
temp-oracle-LA + LDAM-DRW from epoch 2; CAVL + post-hoc oracle-LA + focal).
"""

import csv
import json
import os
import tarfile

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import ltpll
from ltpll.cli.main import main
from ltpll.config import CONFIG_VERSION, RunConfig
from tests.helpers import REPO

ARCHIVE = os.path.join(REPO, "tests", "data", "v2_runs.tar.gz")


@pytest.fixture
def v2_runs(image_folder, tmp_path):
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    for name in os.listdir(tmp_path):
        path = tmp_path / name / "config.json"
        payload = json.loads(path.read_text())
        assert payload["version"] == 2
        payload["data"]["dataset"] = image_folder
        payload["output"] = str(tmp_path / name)
        path.write_text(json.dumps(payload))
    return tmp_path


def _config(run):
    return json.loads((run / "config.json").read_text())


def test_a_version_2_config_becomes_the_components_own_configs(v2_runs):
    config = RunConfig.from_dict(_config(v2_runs / "unfinished_proden_templa_ldamdrw")).validate()
    assert config.version == CONFIG_VERSION
    assert config.model.method == {"name": "proden"}
    assert config.model.rebalancer == {"name": "temp-oracle-la", "tau": 0.8, "ramp_epochs": None}
    assert config.model.weighting == {"name": "ldam-drw", "scale": 10.0, "max_margin": 0.5,
                                      "beta": 0.9999, "start": 2, "oracle_counts": False}
    assert config.model.backbone == {"name": "tiny"}
    lw = RunConfig.from_dict(_config(v2_runs / "finished_lw_meta")).validate()
    assert lw.model.method == {"name": "lw", "beta": 0.5}
    assert lw.model.weighting["name"] == "meta" and lw.model.weighting["dev_batch"] == 4
    assert lw.data.dev_per_class == 2


@pytest.mark.parametrize("name,weighting", [("finished_corr_records_cb", "ClassBalanced"),
                                            ("finished_lw_meta", "MetaWeighting")])
def test_finished_version_2_runs_load_and_evaluate(v2_runs, name, weighting):
    run = v2_runs / name
    trained = json.loads((run / "metrics.json").read_text())
    model = ltpll.load_model(str(run))
    assert type(model.weighting).__name__ == weighting
    # Every variable landed where it belongs: the weights and prior the old version reported.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.weighting.class_weights),
                               trained["class_weights"], rtol=1e-6)
    np.testing.assert_allclose(model.estimated_prior(), trained["estimated_prior"], atol=1e-6)
    result = CliRunner().invoke(main, ["evaluate", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    evaluated = json.loads((run / "metrics.json").read_text())
    assert evaluated["top1"] == pytest.approx(trained["top1"])
    assert evaluated["per_class"] == pytest.approx(trained["per_class"])


@pytest.mark.parametrize("name", ["unfinished_proden_templa_ldamdrw", "unfinished_cavl_focal"])
def test_unfinished_version_2_runs_resume(v2_runs, name):
    run = v2_runs / name
    result = CliRunner().invoke(main, ["train", "--resume", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "after epoch 1 of 4" in result.output
    with open(run / "history.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2", "3", "4"]
    assert (run / "metrics.json").exists() and not (run / "checkpoint").exists()
    model = ltpll.load_model(str(run))
    if name.startswith("unfinished_proden"):
        # The start epoch of version 2 lived in config.json only; the resumed run kept it.
        assert model.weighting.start == 2
        assert float(keras.ops.convert_to_numpy(model.weighting.active)) == 1.0
        assert float(keras.ops.convert_to_numpy(model.rebalancer.temperature)) == \
            pytest.approx(0.8)
