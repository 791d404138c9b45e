"""Crash recovery: per-epoch checkpoints, `ltpll train --resume`, exact continuation, SIGKILL,
and a NaN loss that stops training but keeps the last good checkpoint."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from ltpll.checkpoint import load_checkpoint
from ltpll.cli.main import main
from ltpll.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ltpll.errors import LTPLLError
from ltpll.run_dir import latest_checkpoint
from ltpll.training import resume, train
from tests.helpers import REPO


def _config(folder, output, epochs=4, rebalance="records", mixup=False):
    return RunConfig(
        data=DataConfig(dataset=folder, imbalance_ratio=2.0, partial_rate=0.3),
        model=ModelConfig(backbone="tiny", method="corr", rebalancer=rebalance, mixup=mixup),
        train=TrainConfig(epochs=epochs, batch_size=8, lr=0.05, eval_every=2, seed=7,
                          update_start=1),
        output=str(output),
    )


class _CrashIn(keras.callbacks.Callback):
    """Raises in the middle of a given epoch (0-based), after the previous epoch's checkpoint."""

    def __init__(self, epoch):
        super().__init__()
        self.crash_epoch, self.epoch = epoch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.crash_epoch and batch == 1:
            raise RuntimeError("simulated crash")


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as handle:
        return list(csv.DictReader(handle))


def _state(model):
    return [keras.ops.convert_to_numpy(v) for v in model.variables] + [
        keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]


@pytest.mark.parametrize("mixup", [False, True])
def test_resumed_run_matches_an_uninterrupted_one_exactly(image_folder, tmp_path, mixup):
    whole, _ = train(_config(image_folder, tmp_path / "whole", mixup=mixup), log=lambda *_: None)
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_config(image_folder, crashed, mixup=mixup), callbacks=[_CrashIn(2)],
              log=lambda *_: None)
    assert latest_checkpoint(str(crashed))[1] == 2
    keras.backend.clear_session()
    resumed, final = resume(str(crashed), log=lambda *_: None)
    for a, b in zip(_state(whole), _state(resumed), strict=True):
        assert np.array_equal(a, b)
    rows_whole, rows_resumed = _history(tmp_path / "whole"), _history(crashed)
    assert [r["epoch"] for r in rows_resumed] == ["1", "2", "3", "4"]
    assert [r["loss"] for r in rows_resumed] == [r["loss"] for r in rows_whole]
    assert final["top1"] == json.load(open(tmp_path / "whole" / "metrics.json"))["top1"]
    prior_epochs = json.load(open(crashed / "prior.json"))["epochs"]
    assert [e["epoch"] for e in prior_epochs] == [1, 2, 3, 4]
    assert not os.path.exists(crashed / "checkpoint")   # removed once the run finished


def test_checkpoint_holds_table_prior_optimizer_and_history(image_folder, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        train(_config(image_folder, run), callbacks=[_CrashIn(2)], log=lambda *_: None)
    path, epoch = latest_checkpoint(str(run))
    model, state = load_checkpoint(path)
    assert epoch == 2 and state["epoch"] == 2
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) > 0
    table = keras.ops.convert_to_numpy(model.confidence)
    assert not np.allclose(table, table[:, :1])   # updated after epoch 1, not uniform
    assert np.abs(keras.ops.convert_to_numpy(model.rebalancer.feature_mean)).sum() > 0
    assert [row["epoch"] for row in state["history"]] == [1, 2]
    assert len(state["seeds"]) >= 2   # the augmentation and Mixup generators


def test_unfinished_run_is_not_overwritten_and_points_to_resume(image_folder, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        train(_config(image_folder, run), callbacks=[_CrashIn(2)], log=lambda *_: None)
    with pytest.raises(LTPLLError, match="--resume"):
        train(_config(image_folder, run), log=lambda *_: None)
    result = CliRunner().invoke(main, ["train", "--dataset", image_folder, "--output", str(run)])
    assert result.exit_code == 2 and "ltpll train --resume" in result.output


def test_resume_refuses_finished_and_missing_runs(image_folder, tmp_path):
    run = tmp_path / "done"
    train(_config(image_folder, run, epochs=1), log=lambda *_: None)
    for target, message in ((run, "already finished"), (tmp_path / "nothing", "no ltpll run")):
        result = CliRunner().invoke(main, ["train", "--resume", str(target)])
        assert result.exit_code == 2 and message in result.output, result.output


def test_nan_loss_names_the_epoch_and_keeps_the_last_good_checkpoint(image_folder, tmp_path):
    class Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                kernel = self.model.head.kernel
                kernel.assign(keras.ops.full(kernel.shape, float("nan")))

    run = tmp_path / "nan"
    with pytest.raises(LTPLLError, match=r"loss became nan in epoch 3.*checkpoint of epoch 2"):
        train(_config(image_folder, run), callbacks=[Poison()], log=lambda *_: None)
    path, epoch = latest_checkpoint(str(run))
    model, _ = load_checkpoint(path)
    assert epoch == 2
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(model.head.kernel)))
    assert not os.path.exists(run / "metrics.json")


def test_sigkill_mid_epoch_then_resume_continues(image_folder, tmp_path):
    run = str(tmp_path / "killed")
    command = [sys.executable, "-m", "ltpll.cli.main", "train", "--dataset", image_folder,
               "--imbalance-ratio", "2", "--backbone", "tiny", "--epochs", "40",
               "--batch-size", "8", "--lr", "0.05", "--eval-every", "5", "--records",
               "--seed", "3", "--output", run]
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while latest_checkpoint(run)[1] < 3:
            assert process.poll() is None, "training ended before it could be killed"
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.2)
        time.sleep(0.3)  # into the next epoch
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    _, killed_at = latest_checkpoint(run)
    assert 3 <= killed_at < 40
    history_at_kill = _history(run)
    assert not os.path.exists(os.path.join(run, "metrics.json"))

    result = CliRunner().invoke(main, ["train", "--resume", run])
    assert result.exit_code == 0, result.output
    rows = _history(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 41))
    # The epochs before the kill are kept as they were, not retrained. (Killed before the first
    # evaluation, the file gains the test columns later, empty for those epochs.)
    for row, before in zip(rows[:killed_at], history_at_kill[:killed_at], strict=True):
        assert {key: row[key] for key in before} == before
        assert all(row[key] == "" for key in row.keys() - before.keys())
    model = keras.saving.load_model(os.path.join(run, "model.keras"))
    steps_per_epoch = len(open(os.path.join(run, "candidates.csv")).readlines()[1:]) // 8
    # Optimizer steps of 40 whole epochs: the resumed part continued the killed run's state.
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 40 * steps_per_epoch
