"""What a new user meets first: which images a run uses, flags that do not apply, and a quiet
terminal."""

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from ltpll.cli.main import main
from tests.helpers import FOLDER_CLASSES, PER_CLASS, REPO

QUICK = ["--backbone", "tiny", "--epochs", "1", "--batch-size", "8", "--no-jit"]


def _train(image_folder, run, *args):
    result = CliRunner().invoke(main, ["train", "--dataset", image_folder, "--output", str(run),
                                       *QUICK, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    counts = json.load(open(os.path.join(run, "class_counts.json")))["counts"]
    return result, counts


def test_without_imbalance_ratio_the_whole_split_is_used_and_said(image_folder, tmp_path):
    result, counts = _train(image_folder, tmp_path / "run")
    first = result.output.splitlines()[0]
    assert first.startswith("ltpll train: CORR on ") and "the whole training split" in first
    assert counts == [PER_CLASS["train"]] * len(FOLDER_CLASSES)


def test_max_per_class_without_imbalance_ratio_caps_every_class(image_folder, tmp_path):
    result, counts = _train(image_folder, tmp_path / "run", "--max-per-class", "5")
    assert "at most 5 images per class" in result.output.splitlines()[0]
    assert counts == [5, 5, 5]


def test_the_long_tailed_subset_is_named_in_the_first_line(image_folder, tmp_path):
    result, counts = _train(image_folder, tmp_path / "run", "--imbalance-ratio", "4")
    assert "long-tailed subset: rho=4, exp profile" in result.output.splitlines()[0]
    assert counts == [20, 10, 5]


def test_an_option_of_a_component_not_chosen_gets_a_note(image_folder, tmp_path):
    result = CliRunner().invoke(
        main, ["train", "--dataset", image_folder, "--output", str(tmp_path / "run"), *QUICK,
               "--lw-beta", "2", "--la-tau", "0.5", "--rebalance", "oracle-la"],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "note: --lw-beta (for lw) does not apply to this run; ignored" in result.stderr
    assert "--la-tau" not in result.stderr


def _fresh_cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"
    return subprocess.run([sys.executable, "-m", "ltpll.cli.main", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)


def test_commands_are_quiet_about_tensorflow_unless_verbose(tmp_path):
    quiet = _fresh_cli("evaluate", str(tmp_path / "nothing"))
    assert quiet.returncode == 2
    assert quiet.stderr.splitlines() == [f"error: run directory {tmp_path / 'nothing'} does not "
                                         "exist"]
    verbose = CliRunner().invoke(main, ["--verbose", "evaluate", str(tmp_path / "nothing")])
    assert verbose.exit_code == 2 and "does not exist" in verbose.stderr


def test_usage_errors_are_one_line_and_no_arguments_show_the_help():
    bad = CliRunner().invoke(main, ["train", "--epochs", "abc"])
    assert bad.exit_code == 2
    assert bad.stderr.splitlines() == ["error: Invalid value for '--epochs': 'abc' is not a "
                                       "valid integer. (see `main train --help`)"]
    unknown = CliRunner().invoke(main, ["train", "--method", "nope"])
    assert unknown.exit_code == 2 and len(unknown.stderr.splitlines()) == 1
    assert "unknown --method 'nope'; choose one of corr" in unknown.stderr
    bare = CliRunner().invoke(main, [])
    assert "Commands:" in bare.output and "error" not in bare.output
