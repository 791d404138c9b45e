"""`ltpll benchmark` end to end on a tiny generated folder: the grid runs, the tables and plots
appear, a second run resumes (skips finished cells), and bad grids fail in one line."""

import csv
import json
import os

import pytest
from click.testing import CliRunner

from ltpll.cli.main import main

TINY = ["--imbalance-ratios", "2", "--partial-rates", "0.3", "--seeds", "3", "--backbone", "tiny",
        "--epochs", "1", "--batch-size", "8", "--lr", "0.05", "--eval-every", "1"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _rows(output):
    with open(os.path.join(output, "results.csv")) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def finished_grid(image_folder, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("bench") / "grid")
    result = invoke("benchmark", "--dataset", image_folder, "--methods", "corr,proden",
                    "--rebalancers", "none,records", "--output", output, *TINY)
    assert result.exit_code == 0, result.output
    return output, result


def test_grid_writes_one_run_per_cell_and_the_tables(finished_grid):
    output, _ = finished_grid
    rows = _rows(output)
    assert sorted((r["method"], r["rebalancer"]) for r in rows) == [
        ("corr", "none"), ("corr", "records"), ("proden", "none"), ("proden", "records")]
    for row in rows:
        metrics = json.load(open(os.path.join(row["run_dir"], "metrics.json")))
        assert float(row["top1"]) == pytest.approx(metrics["top1"])
        config = json.load(open(os.path.join(row["run_dir"], "config.json")))
        assert (config["model"]["method"]["name"], config["model"]["rebalancer"]["name"]) == (
            row["method"], row["rebalancer"])
        assert config["data"]["imbalance_ratio"] == 2.0 and config["train"]["seed"] == 3
    markdown = open(os.path.join(output, "results.md")).read()
    assert "PRODEN" in markdown and "gain of + RECORDS" in markdown and "Few" in markdown
    for name in ("prior_vs_true.png", "prior_l2_over_epochs.png", "per_class_accuracy.png"):
        with open(os.path.join(output, name), "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_finished_cells(finished_grid, image_folder):
    output, _ = finished_grid
    model = os.path.join(_rows(output)[0]["run_dir"], "model.keras")
    stamp = os.stat(model).st_mtime_ns
    result = invoke("benchmark", "--dataset", image_folder, "--methods", "corr,proden",
                    "--rebalancers", "none,records", "--output", output, *TINY)
    assert result.exit_code == 0, result.output
    assert result.output.count("skipped") == 4
    assert os.stat(model).st_mtime_ns == stamp and len(_rows(output)) == 4


def test_changed_settings_on_a_finished_grid_are_refused(finished_grid, image_folder):
    output, _ = finished_grid
    args = [a if a != "1" else "2" for a in TINY]  # --epochs 2, --eval-every 2
    result = invoke("benchmark", "--dataset", image_folder, "--methods", "corr",
                    "--rebalancers", "none", "--output", output, *args)
    assert result.exit_code == 2
    assert "other settings" in result.output and "train.epochs" in result.output


def test_grid_file_sets_axes_and_command_line_wins(image_folder, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("methods: [lw]\nrebalancers: oracle-la-posthoc\nepochs: 3\n"
                    "imbalance-ratios: [2]\npartial-rates: [0.3]\nseeds: [4]\nbackbone: tiny\n"
                    "batch-size: 8\n")
    output = str(tmp_path / "out")
    result = invoke("benchmark", "--dataset", image_folder, "--grid", str(grid), "--epochs", "1",
                    "--no-plots", "--output", output)
    assert result.exit_code == 0, result.output
    (row,) = _rows(output)
    assert (row["method"], row["rebalancer"], row["seed"], row["epochs"]) == (
        "lw", "oracle-la-posthoc", "4", "1")
    assert not os.path.exists(os.path.join(output, "prior_vs_true.png"))


@pytest.mark.parametrize("args, message", [
    (["--methods", "corr,nope"], "unknown method 'nope'"),
    (["--rebalancers", "records,magic"], "unknown rebalancer 'magic'"),
    (["--partial-rates", "0.3,high"], "--partial-rates must be a comma-separated list"),
    (["--partial-rates", "1.5"], "--partial-rate must be in [0, 1)"),
    (["--seeds", ""], "the grid has no seeds"),
    (["--grid", "missing.yaml"], "does not exist"),
])
def test_bad_grids_fail_in_one_line_and_write_nothing(args, message, image_folder, tmp_path):
    output = str(tmp_path / "out")
    result = CliRunner().invoke(main, ["benchmark", "--dataset", image_folder, "--output", output,
                                       *TINY, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not os.path.exists(output)


def test_grid_file_with_unknown_option_is_refused(image_folder, tmp_path):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"methods": ["corr"], "learning_rate": 0.1}))
    result = invoke("benchmark", "--dataset", image_folder, "--grid", str(grid),
                    "--output", str(tmp_path / "out"))
    assert result.exit_code == 2 and "unknown option 'learning_rate'" in result.output
