"""Epoch selection: covering rates on hand-made predictions, the choice of an epoch from a
hand-made history, the held-out partial-label split, and the metrics.json blocks of a CLI run."""

import csv
import json
import math
import os

import numpy as np
import pytest
from click.testing import CliRunner

from ltpll.benchmark.report import (
    SELECTION_COLUMNS,
    results_markdown,
    selection_fields,
    table3_markdown,
    write_results_csv,
)
from ltpll.config import DataConfig
from ltpll.data.files import is_streamed
from ltpll.data.prepare import prepare_data
from ltpll.data.valsplit import hold_out_val
from ltpll.errors import LTPLLError
from ltpll.selection import (
    balanced_covering_rate,
    covering_rate,
    select_epoch,
    selections,
)

# --- covering rates ----------------------------------------------------------------------------

# Four held-out samples over three classes; an estimated prior expecting 2, 1 and 1 of them.
CANDIDATES = np.array([[1, 0, 0],    # {0}
                       [1, 0, 0],    # {0}
                       [1, 1, 0],    # {0, 1}
                       [1, 0, 1]],   # {0, 2}
                      dtype=bool)
PRIOR = [0.5, 0.25, 0.25]


def test_covering_rate_counts_predictions_inside_the_candidate_set():
    assert covering_rate([0, 1, 2], np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]])) == 2 / 3
    assert covering_rate([0, 0, 2, 1], CANDIDATES) == 0.5   # the last two miss their sets
    assert math.isnan(covering_rate([], np.zeros((0, 3))))


def test_balanced_covering_does_not_reward_collapsing_onto_the_head_class():
    head = [0, 0, 0, 0]          # every sample covered, but only class 0 ever predicted
    spread = [0, 1, 1, 2]        # sample 1 ({0}) predicted 1: not covered
    assert covering_rate(head, CANDIDATES) == 1.0
    assert covering_rate(spread, CANDIDATES) == 0.75
    # head: class 0 has 4 covered hits for 2 expected, clipped to 1; classes 1 and 2 get 0.
    assert balanced_covering_rate(head, CANDIDATES, PRIOR) == pytest.approx(1 / 3)
    # spread: hits 1, 1, 1 for 2, 1, 1 expected -> (0.5 + 1 + 1) / 3.
    assert balanced_covering_rate(spread, CANDIDATES, PRIOR) == pytest.approx(2.5 / 3)
    # Covered predictions in the expected proportions score 1.
    assert balanced_covering_rate([0, 0, 1, 2], CANDIDATES, PRIOR) == pytest.approx(1.0)


def test_balanced_covering_normalises_the_prior_and_skips_classes_expected_nowhere():
    # Counts instead of a distribution: the same as PRIOR.
    assert balanced_covering_rate([0, 1, 1, 2], CANDIDATES, [2, 1, 1]) == pytest.approx(2.5 / 3)
    # Class 2 expects nothing: the mean is over classes 0 and 1 (hits 1 of 2 and 1 of 2).
    assert balanced_covering_rate([0, 1, 1, 2], CANDIDATES, [1, 1, 0]) == pytest.approx(0.5)
    assert math.isnan(balanced_covering_rate([0], CANDIDATES[:1], [0, 0, 0]))


# --- selecting an epoch ------------------------------------------------------------------------

NAN = float("nan")
HISTORY = [
    {"epoch": 1, "test_top1": 0.50, "test_many": 0.7, "val_covering": 0.80,
     "val_covering_balanced": 0.40},
    {"epoch": 2, "test_top1": NAN, "val_covering": NAN, "val_covering_balanced": NAN},  # skipped
    {"epoch": 3, "test_top1": 0.62, "test_many": 0.8, "val_covering": 0.90,
     "val_covering_balanced": 0.55},
    {"epoch": 4, "test_top1": 0.60, "test_many": 0.9, "val_covering": 0.90,
     "val_covering_balanced": 0.50},
    {"epoch": 5, "test_top1": 0.62, "test_many": 0.6, "val_covering": 0.85,
     "val_covering_balanced": 0.55},
]


def test_select_epoch_takes_the_highest_value_and_the_later_epoch_on_ties():
    assert select_epoch(HISTORY, "test_top1")["epoch"] == 5            # 0.62 at 3 and 5
    assert select_epoch(HISTORY, "val_covering")["epoch"] == 4         # 0.90 at 3 and 4
    assert select_epoch(HISTORY, "val_covering_balanced")["epoch"] == 5
    # Rows in another order choose the same epoch.
    assert select_epoch(HISTORY[::-1], "val_covering")["epoch"] == 4


def test_select_epoch_passes_over_missing_values():
    # As history.csv reads back: strings, empty where an epoch was not evaluated.
    rows = [{"epoch": "1", "test_top1": "0.4", "val_covering": ""},
            {"epoch": "2", "test_top1": "", "val_covering": "0.99"},   # no test metrics
            {"epoch": "3", "test_top1": "0.3", "val_covering": "0.7"}]
    assert select_epoch(rows, "val_covering")["epoch"] == "3"
    assert select_epoch(rows, "test_top1")["epoch"] == "1"
    assert select_epoch([{"epoch": 1, "test_top1": 0.5}], "val_covering") is None
    assert select_epoch([], "test_top1") is None


def test_selections_report_the_test_metrics_of_each_chosen_epoch():
    blocks = selections(HISTORY)
    assert list(blocks) == ["best_test_epoch", "selected_by_val_covering",
                            "selected_by_val_covering_balanced"]
    best = blocks["best_test_epoch"]
    assert (best["epoch"], best["top1"], best["many"], best["test_top1"]) == (5, 0.62, 0.6, 0.62)
    assert "optimistic" in best["note"] and best["medium"] is None   # not in the history
    covering = blocks["selected_by_val_covering"]
    assert (covering["epoch"], covering["top1"], covering["many"]) == (4, 0.60, 0.9)
    assert covering["criterion"] == "val_covering" and covering["val_covering"] == 0.90
    assert "label-free" in covering["note"]
    # Without a held-out split only the optimistic block exists.
    no_val = [{"epoch": row["epoch"], "test_top1": row["test_top1"]} for row in HISTORY]
    assert list(selections(no_val)) == ["best_test_epoch"]


# --- the held-out split ------------------------------------------------------------------------

def test_hold_out_val_is_a_seeded_partition():
    val, train = hold_out_val(10, 0.3, seed=4)
    assert len(val) == 3 and len(train) == 7
    assert sorted(np.concatenate([val, train]).tolist()) == list(range(10))
    again, _ = hold_out_val(10, 0.3, seed=4)
    assert again.tolist() == val.tolist()
    others = {tuple(hold_out_val(10, 0.3, seed=s)[0]) for s in range(5)}
    assert len(others) > 1


def test_hold_out_val_errors():
    with pytest.raises(LTPLLError, match="holds out none"):
        hold_out_val(4, 0.1, seed=0)
    with pytest.raises(LTPLLError, match="none to train on"):
        hold_out_val(3, 0.9, seed=0)
    # Class 1 has a single image; holding out 4 of 5 empties it on every seed that draws it.
    labels = np.array([0, 0, 0, 0, 1])
    emptied = [s for s in range(20) if 4 not in hold_out_val(5, 0.8, seed=s)[1]]
    with pytest.raises(LTPLLError, match="leaves bee with no training image"):
        hold_out_val(5, 0.8, seed=emptied[0], labels=labels, class_names=["ant", "bee"])


@pytest.mark.parametrize("fraction", [-0.1, 1.0, float("nan")])
def test_val_fraction_outside_0_1_is_refused(fraction):
    with pytest.raises(LTPLLError, match="--val-fraction must be in"):
        DataConfig(val_fraction=fraction).validate()


def _prepared(image_folder, fraction, seed=5, input_mode="memory"):
    config = DataConfig(dataset=image_folder, imbalance_ratio=2.0, val_fraction=fraction,
                        input_mode=input_mode)
    config.validate()
    return prepare_data(config, seed, log=lambda *_: None, keep_split=True)


@pytest.mark.parametrize("input_mode", ["memory", "stream"])
def test_val_split_leaves_training_keeps_its_candidates_and_follows_the_seed(image_folder,
                                                                             input_mode):
    whole = _prepared(image_folder, 0.0)
    split = _prepared(image_folder, 0.25, input_mode=input_mode)
    assert is_streamed(split.val_images) == (input_mode == "stream")
    assert len(whole.val_paths) == 0 and len(whole.val_images) == 0
    n = len(whole.paths)
    assert len(split.val_paths) == round(0.25 * n) and len(split.paths) == n - len(split.val_paths)
    assert not set(split.val_paths) & set(split.paths)
    assert set(split.val_paths) | set(split.paths) == set(whole.paths)
    # Every image keeps the candidate set and pixels it has without a split, val or not.
    row_of = {path: i for i, path in enumerate(whole.paths)}
    for paths, candidates, images in ((split.paths, split.candidates, split.images),
                                      (split.val_paths, split.val_candidates, split.val_images)):
        rows = [row_of[p] for p in paths]
        assert np.array_equal(candidates, whole.candidates[rows])
        pixels = images.decode() if is_streamed(images) else images
        assert np.array_equal(pixels, whole.images[rows])
    # The class counts are those of what is left to train on.
    assert split.class_counts.sum() == len(split.paths)
    assert np.all(split.class_counts <= whole.class_counts)
    # Held out, not unused: the pseudo-label pool of unlabelled images does not get them.
    assert not set(split.val_paths) & {split.split.paths[i] for i in split.unused_index}
    # The same seed holds out the same images; another seed others.
    assert _prepared(image_folder, 0.25).val_paths == split.val_paths
    assert _prepared(image_folder, 0.25, seed=6).val_paths != split.val_paths


# --- metrics.json after a tiny run -------------------------------------------------------------

def test_train_with_val_fraction_writes_the_selection_blocks(image_folder, tmp_path):
    """Streamed from the files (the held-out split too); the split itself is checked in memory
    and streamed above."""
    from ltpll.cli.main import main
    from ltpll.data.candidates import load_candidate_file
    from ltpll.metrics import predict_logits
    from ltpll.saving import load_run
    from ltpll.weighting.base import estimated_class_counts

    run = str(tmp_path / "run")
    result = CliRunner().invoke(main, [
        "train", "--dataset", image_folder, "--imbalance-ratio", "2", "--backbone", "tiny",
        "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--seed", "5",
        "--val-fraction", "0.25", "--stream", "--output", run,
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Epoch selection" in result.output
    with open(os.path.join(run, "metrics.json")) as handle:
        metrics = json.load(handle)
    with open(os.path.join(run, "history.csv")) as handle:
        history = list(csv.DictReader(handle))
    assert [row["epoch"] for row in history] == ["1", "2"]
    # The top-level fields stay the last epoch's.
    assert metrics["top1"] == pytest.approx(float(history[-1]["test_top1"]))
    tops = [float(row["test_top1"]) for row in history]
    best_epoch = 2 if tops[1] >= tops[0] else 1
    assert metrics["best_test_epoch"]["epoch"] == best_epoch
    assert metrics["best_test_epoch"]["top1"] == pytest.approx(max(tops))
    for block, column in (("selected_by_val_covering", "val_covering"),
                          ("selected_by_val_covering_balanced", "val_covering_balanced")):
        values = [float(row[column]) for row in history]
        chosen = metrics[block]
        assert chosen["epoch"] == (2 if values[1] >= values[0] else 1)
        assert chosen[column] == pytest.approx(max(values))
        assert chosen["top1"] == pytest.approx(tops[chosen["epoch"] - 1])

    # The held-out images are in val_candidates.csv, not in the training candidates.
    with open(os.path.join(run, "candidates.csv")) as handle:
        trained = {row["path"] for row in csv.DictReader(handle)}
    with open(os.path.join(run, "val_candidates.csv")) as handle:
        held = [row["path"] for row in csv.DictReader(handle)]
    assert len(held) == metrics["val_split"]["num_samples"] == round(0.25 * (len(trained) +
                                                                                 len(held)))
    assert not trained & set(held)
    # The last epoch's covering rates, measured again from the saved model.
    _, _, model = load_run(run)
    names = metrics["class_names"]
    candidates = load_candidate_file(os.path.join(run, "val_candidates.csv"), names, held)
    from ltpll.data.sources import load_split

    split = load_split(image_folder, "train", None)
    position = {path: i for i, path in enumerate(split.paths)}
    images = np.asarray(split.images)[[position[p] for p in held]]
    predictions = np.argmax(predict_logits(model, images), axis=1)
    assert metrics["val_split"]["val_covering"] == pytest.approx(
        covering_rate(predictions, candidates))
    assert metrics["val_split"]["val_covering_balanced"] == pytest.approx(
        balanced_covering_rate(predictions, candidates, estimated_class_counts(model.confidence)))


# --- benchmark tables --------------------------------------------------------------------------

def _cell(seed, top1, best, cov=None, bcov=None):
    row = {"method": "corr", "rebalancer": "none", "imbalance_ratio": 100.0, "partial_rate": 0.3,
           "seed": seed, "run_dir": f"/runs/{seed}", "top1": top1, "many": 0.9, "medium": 0.5,
           "few": 0.1, "epochs": 20}
    metrics = {"best_test_epoch": {"epoch": 15, "top1": best, "many": 0.95, "medium": 0.6,
                                   "few": 0.2}}
    if cov is not None:
        metrics["selected_by_val_covering"] = {"epoch": 18, "top1": cov, "many": 0.92,
                                               "medium": 0.55, "few": 0.1}
        metrics["selected_by_val_covering_balanced"] = {"epoch": 12, "top1": bcov, "many": 0.8,
                                                        "medium": 0.6, "few": 0.3}
    return {**row, **selection_fields(metrics)}


def _table3(text):
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_table3_shows_last_best_test_and_label_free_selections(tmp_path):
    rows = [_cell(1, 0.70, 0.74, 0.72, 0.71), _cell(2, 0.72, 0.76, 0.70, 0.73)]
    body = _table3(table3_markdown(rows))
    assert [row[1] for row in body] == ["last epoch", "best test epoch (optimistic)",
                                        "val covering (label-free)",
                                        "val balanced covering (label-free)"]
    # Overall: mean ± sample std of (0.70, 0.72), (0.74, 0.76)...; the epoch is the mean epoch.
    assert body[0][2:] == ["90.00", "50.00", "10.00", "71.00 ± 1.41", "20"]
    assert body[1][2:] == ["95.00", "60.00", "20.00", "75.00 ± 1.41", "15"]
    assert body[3][-2:] == ["72.00 ± 1.41", "12"]
    assert "Table 3: epoch selection" in results_markdown(rows)
    # Without a held-out split: last and best-test rows only.
    body = _table3(table3_markdown([_cell(1, 0.70, 0.74)]))
    assert [row[1] for row in body] == ["last epoch", "best test epoch (optimistic)"]
    # Rows of an older ltpll (no selections at all): no Table 3.
    plain = {key: value for key, value in rows[0].items() if key not in SELECTION_COLUMNS}
    assert "Table 3" not in results_markdown([plain])
    # results.csv: the selected epochs right after the last epoch's metrics.
    path = tmp_path / "results.csv"
    write_results_csv(rows, path)
    with open(path) as handle:
        header = next(csv.reader(handle))
    assert header[header.index("epochs") + 1:header.index("run_dir")] == list(SELECTION_COLUMNS)
