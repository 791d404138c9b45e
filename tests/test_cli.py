"""End to end through the CLI: `ltpll train` then `ltpll evaluate` on a tiny generated folder,
and the bad inputs that must end in one line and a non-zero exit with nothing written."""

import csv
import json
import os

import numpy as np
from click.testing import CliRunner

from ltpll.cli.main import main
from tests.helpers import FOLDER_CLASSES as CLASSES
from tests.helpers import PER_CLASS


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


TRAIN_ARGS = ["--imbalance-ratio", "2", "--partial-rate", "0.3", "--backbone", "tiny",
              "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--seed", "5"]


def test_train_then_evaluate(image_folder, tmp_path):
    run = str(tmp_path / "run")
    result = invoke("train", "--dataset", image_folder, "--records", "--eval-every", "2",
                    "--output", run, *TRAIN_ARGS)
    assert result.exit_code == 0, result.output
    for name in ("config.json", "model.keras", "history.csv", "class_counts.json",
                 "candidates.csv", "prior.json", "metrics.json"):
        assert os.path.exists(os.path.join(run, name)), name
    counts = json.load(open(os.path.join(run, "class_counts.json")))
    assert counts["class_names"] == CLASSES
    assert counts["counts"] == [20, int(20 * 2 ** -0.5), 10]
    with open(os.path.join(run, "history.csv")) as handle:
        history = list(csv.DictReader(handle))
    assert [row["epoch"] for row in history] == ["1", "2"]
    assert "prior_l2" in history[0] and not any(key.startswith("val_") for key in history[0])
    # --eval-every 2: the test columns are filled on the evaluation epoch only.
    assert history[0]["test_top1"] == "" and 0.0 <= float(history[1]["test_top1"]) <= 1.0
    trained = json.load(open(os.path.join(run, "metrics.json")))
    assert len(trained["per_class"]) == 3 and 0.0 <= trained["top1"] <= 1.0
    assert np.isclose(sum(trained["estimated_prior"]), 1.0, atol=1e-5)

    # Spoil the recorded accuracy: evaluate must measure it again (and keep train_seconds).
    json.dump({**trained, "top1": -1.0}, open(os.path.join(run, "metrics.json"), "w"))
    result = invoke("evaluate", run)
    assert result.exit_code == 0, result.output
    assert "top-1" in result.output and "Per-class" in result.output
    evaluated = json.load(open(os.path.join(run, "metrics.json")))
    assert evaluated["num_samples"] == 3 * PER_CLASS["test"]
    assert evaluated["train_seconds"] == trained["train_seconds"]   # kept from training
    # evaluate reloads the same model, so it reproduces the metrics of the end of training.
    assert np.isclose(evaluated["top1"], trained["top1"])
    assert np.allclose(evaluated["estimated_prior"], trained["estimated_prior"], atol=1e-6)


def test_train_on_users_candidate_file(image_folder, tmp_path):
    path = tmp_path / "candidates.csv"
    rows = ["path,candidates"]
    for c, name in enumerate(CLASSES):
        for i in range(PER_CLASS["train"]):
            other = CLASSES[(c + 1) % 3]
            rows.append(f"{name}/{i:03d}.png,{name};{other}" if i % 2 else f"{name}/{i:03d}.png,{c}")
    path.write_text("\n".join(rows) + "\n")
    run = str(tmp_path / "run")
    # No --imbalance-ratio: the user's data is used as it is, every image with its own set.
    result = invoke("train", "--dataset", image_folder, "--candidates", str(path),
                    "--output", run, *TRAIN_ARGS[2:])
    assert result.exit_code == 0, result.output
    with open(os.path.join(run, "candidates.csv")) as handle:
        saved = {row["path"]: set(row["candidates"].split(";")) for row in csv.DictReader(handle)}
    assert len(saved) == 3 * PER_CLASS["train"]
    assert saved["bee/001.png"] == {"bee", "cow"}
    assert saved["ant/000.png"] == {"ant"}


def test_evaluate_of_a_missing_run_is_a_user_error(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "none")])
    assert result.exit_code == 2 and "does not exist" in result.output
