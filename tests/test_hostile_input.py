"""Hostile input, as a table: every case ends in one `error:` line and exit status 2, never a
traceback, and leaves no partial output behind.

Each case builds its bad input in a temporary copy of the generated image folder (the session
fixture stays intact), runs one CLI command, and names the words its message must contain.
"""

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from ltpll.cli.main import main
from tests.helpers import FOLDER_CLASSES as CLASSES
from tests.helpers import PER_CLASS

FAST = ["--backbone", "tiny", "--epochs", "1", "--batch-size", "8"]


def _copy(folder, tmp):
    target = tmp / "data"
    shutil.copytree(folder, target)
    return target


def _candidates(folder, tmp, replace_line=None, extra=None):
    lines = ["path,candidates"] + [
        f"{name}/{i:03d}.png,{name}" for name in CLASSES for i in range(PER_CLASS["train"])
    ]
    if replace_line is not None:
        lines[3] = replace_line
    if extra is not None:
        lines.append(extra)
    path = tmp / "candidates.csv"
    path.write_text("\n".join(lines) + "\n")
    return ["train", "--dataset", folder, "--candidates", str(path), *FAST]


def _corrupt(folder, tmp, strict):
    data = _copy(folder, tmp)
    (data / "train" / "bee" / "004.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return ["train", "--dataset", str(data), *FAST, *(["--strict"] if strict else [])]


def _truncated(folder, tmp):
    data = _copy(folder, tmp)
    path = data / "train" / "cow" / "007.png"
    path.write_bytes(path.read_bytes()[:60])
    return ["train", "--dataset", str(data), "--strict", *FAST]


def _empty_folder(folder, tmp):
    os.makedirs(tmp / "empty" / "train" / "ant")
    return ["train", "--dataset", str(tmp / "empty"), *FAST]


def _class_missing_from_test(folder, tmp):
    data = _copy(folder, tmp)
    shutil.rmtree(data / "test" / "cow")
    return ["train", "--dataset", str(data), *FAST]


def _run_from_another_version(folder, tmp):
    run = tmp / "old-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"version": 99, "data": {}, "model": {},
                                                 "train": {}, "output": str(run)}))
    (run / "class_counts.json").write_text(json.dumps({"class_names": CLASSES,
                                                       "counts": [1, 1, 1]}))
    (run / "model.keras").write_bytes(b"")
    return ["evaluate", str(run)]


def _export_unfinished(folder, tmp):
    run = tmp / "unfinished"
    run.mkdir()
    (run / "config.json").write_text("{}")
    return ["export", str(run), str(tmp / "out")]


# case -> (command builder(folder, tmp) -> argv, words the error line must contain)
CASES = {
    "missing dataset folder": (lambda f, t: ["train", "--dataset", str(t / "nowhere"), *FAST],
                               "no dataset"),
    "empty dataset folder": (_empty_folder, "no images"),
    "dataset is a plain file": (lambda f, t: ["train", "--dataset", __file__, *FAST],
                                "neither an image folder"),
    "corrupt image with --strict": (lambda f, t: _corrupt(f, t, strict=True),
                                    "cannot be decoded"),
    "truncated image with --strict": (_truncated, "cannot be decoded"),
    "unknown class in candidate file": (
        lambda f, t: _candidates(f, t, "ant/002.png,ant;zebra"), "zebra"),
    "duplicate path in candidate file": (
        lambda f, t: _candidates(f, t, extra="ant/002.png,ant"), "duplicate path"),
    "empty candidate set": (lambda f, t: _candidates(f, t, "ant/002.png,"), "empty"),
    "candidate path not in the dataset": (
        lambda f, t: _candidates(f, t, "ant/999.png,ant"), "not an image of the dataset"),
    "class in train but not in test": (_class_missing_from_test, "no images of class(es) cow"),
    "rho below 1": (lambda f, t: ["train", "--dataset", f, "--imbalance-ratio", "0.5", *FAST],
                    "--imbalance-ratio must be >= 1"),
    "q of 1": (lambda f, t: ["train", "--dataset", f, "--partial-rate", "1.0", *FAST],
               "--partial-rate must be in [0, 1)"),
    "negative q": (lambda f, t: ["train", "--dataset", f, "--partial-rate", "-0.1", *FAST],
                   "--partial-rate must be in [0, 1)"),
    "negative epochs": (lambda f, t: ["train", "--dataset", f, *FAST, "--epochs", "-1"],
                        "--epochs must be >= 1"),
    "batch larger than the data": (
        lambda f, t: ["train", "--dataset", f, *FAST, "--batch-size", "100000"], "batch"),
    "run from an incompatible version": (_run_from_another_version, "incompatible"),
    "evaluate a missing run": (lambda f, t: ["evaluate", str(t / "none")], "does not exist"),
    "export of an unfinished run": (_export_unfinished, "not a finished"),
    "resume a missing run": (lambda f, t: ["train", "--resume", str(t / "none")],
                             "no ltpll run"),
    "cb beta of 1": (lambda f, t: ["train", "--dataset", f, *FAST, "--loss-weighting", "cb",
                                   "--cb-beta", "1"], "--cb-beta must be in [0, 1)"),
    "meta without a dev set": (
        lambda f, t: ["train", "--dataset", f, *FAST, "--loss-weighting", "meta",
                      "--dev-per-class", "0"], "needs a clean dev set"),
    "dev set larger than a class": (
        lambda f, t: ["train", "--dataset", f, *FAST, "--loss-weighting", "meta",
                      "--dev-per-class", "20"], "too few to hold 20 out"),
    "missing pretrain directory": (
        lambda f, t: ["train", "--dataset", f, *FAST, "--init-from", str(t / "nossp")],
        "does not exist"),
    "missing pseudo-label file": (
        lambda f, t: ["train", "--dataset", f, *FAST, "--pseudo-labels", str(t / "no.npz")],
        "no.npz"),
}


def _files_under(path):
    return sorted(os.path.relpath(os.path.join(root, name), path)
                  for root, _, names in os.walk(path) for name in names)


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_gives_one_line_and_no_output(case, image_folder, tmp_path):
    build, words = CASES[case]
    argv = build(image_folder, tmp_path)
    output = tmp_path / "out"
    if argv[0] == "train" and "--resume" not in argv:
        argv += ["--output", str(output)]
    before = _files_under(tmp_path)
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert words in " ".join(result.output.split()), result.output
    assert not output.exists()
    assert _files_under(tmp_path) == before   # nothing written anywhere


def test_corrupt_image_is_skipped_with_a_count_by_default(image_folder, tmp_path):
    argv = _corrupt(image_folder, tmp_path, strict=False) + ["--output", str(tmp_path / "run")]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable image(s) of the train split, e.g. bee/004.png" in (
        " ".join(result.output.split()))
    with open(tmp_path / "run" / "candidates.csv") as handle:
        paths = [line.split(",")[0] for line in handle.read().splitlines()[1:]]
    assert "bee/004.png" not in paths and len(paths) == 3 * PER_CLASS["train"] - 1


def test_nan_loss_stops_with_the_epoch_named(image_folder, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--dataset", image_folder, *FAST,
                                       "--lr", "1e30", "--output", str(run)])
    assert result.exit_code == 2, result.output
    assert "loss became" in result.output and "in epoch 1" in result.output
    assert "Traceback" not in result.output
    assert not (run / "model.keras").exists() and not (run / "metrics.json").exists()
