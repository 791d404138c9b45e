"""`ltpll benchmark --pairs`: only the named method + rebalancer combinations run (the peer
comparison of `make bench-peers-cpu`), in the order given, with the other axes multiplied."""

import csv
import os

import pytest
from click.testing import CliRunner

from ltpll.benchmark.grid import Grid, parse_pairs
from ltpll.cli.main import main
from ltpll.errors import LTPLLError


def test_pairs_replace_the_method_rebalancer_product():
    grid = Grid.from_pairs(parse_pairs("corr:none, corr:records,cc+mixup:records"),
                           imbalance_ratios=[100], partial_rates=[0.3, 0.5], seeds=[1]).validate()
    assert grid.methods == ["corr", "cc+mixup"] and grid.rebalancers == ["none", "records"]
    cells = [(c.partial_rate, c.method, c.rebalancer) for c in grid.cells()]
    # cc+mixup:none is not asked for, so it does not run; q is the outer axis.
    assert cells == [(0.3, "corr", "none"), (0.3, "corr", "records"), (0.3, "cc+mixup", "records"),
                     (0.5, "corr", "none"), (0.5, "corr", "records"), (0.5, "cc+mixup", "records")]
    assert grid.cells()[2].mixup and grid.cells()[2].base_method == "cc"


def test_without_pairs_the_grid_is_the_full_product():
    grid = Grid(["corr", "cc"], ["none", "records"], [100], [0.3], [1])
    assert [(c.method, c.rebalancer) for c in grid.cells()] == [
        ("corr", "none"), ("corr", "records"), ("cc", "none"), ("cc", "records")]


@pytest.mark.parametrize("text", ["corr", "corr:", ":records", "corr:none,cc"])
def test_a_pair_without_its_rebalancer_is_a_user_error(text):
    with pytest.raises(LTPLLError, match="method:rebalancer"):
        parse_pairs(text)


def test_an_unregistered_method_in_a_pair_is_refused_before_training():
    grid = Grid.from_pairs([("corr", "none"), ("not-yet", "none")], imbalance_ratios=[100],
                           partial_rates=[0.3], seeds=[1])
    with pytest.raises(LTPLLError, match="unknown method 'not-yet'"):
        grid.validate()


def test_benchmark_runs_only_the_given_pairs(image_folder, tmp_path):
    output = str(tmp_path / "peers")
    result = CliRunner().invoke(main, [
        "benchmark", "--dataset", image_folder, "--pairs", "cc:none,cc:records",
        "--imbalance-ratios", "2", "--partial-rates", "0.3", "--seeds", "3", "--backbone", "tiny",
        "--epochs", "1", "--batch-size", "8", "--lr", "0.05", "--eval-every", "1", "--no-plots",
        "--output", output], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 cells (2 method:rebalancer pairs" in result.output
    with open(os.path.join(output, "results.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["method"], r["rebalancer"]) for r in rows] == [("cc", "none"), ("cc", "records")]
    with open(os.path.join(output, "results.md")) as handle:
        assert "CC + RECORDS" in handle.read()
