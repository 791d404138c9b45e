"""Benchmark report: paper-style tables, results.csv/results.md, live table and plots."""

import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from rich.console import Console

from ltpll.benchmark import plots
from ltpll.benchmark.report import (
    RESULT_COLUMNS,
    display_name,
    live_table,
    method_name,
    read_results_csv,
    results_markdown,
    row_label,
    setting_label,
    summarise,
    table1_markdown,
    table2_markdown,
    write_results,
    write_results_csv,
)
from ltpll.errors import LTPLLError
from ltpll.fileio import write_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASS_NAMES = ["cat", "dog", "frog", "ship"]
COUNTS = [10, 100, 1, 50]   # by count: dog, ship, cat, frog


def cell(method="corr", rebalancer="none", rho=100.0, q=0.3, seed=1, top1=0.70, **extra):
    row = {
        "method": method, "rebalancer": rebalancer, "imbalance_ratio": rho, "partial_rate": q,
        "seed": seed, "run_dir": f"/runs/{method}-{rebalancer}-{rho:g}-{q:g}-{seed}",
        "top1": top1, "top5": 0.98, "many": 0.9, "medium": 0.75, "few": 0.6, "prior_l2": 0.12,
        "train_seconds": 95.2, "epochs": 20,
    }
    row.update(extra)
    return row


def make_run(root, row, per_class=(0.5, 1.0, None, 0.8), prior=(0.1, 0.6, 0.05, 0.25),
             prior_l2=(0.5, 0.3), class_names=CLASS_NAMES):
    """Writes metrics.json, class_counts.json and history.csv for ``row``; sets its run_dir."""
    run_dir = os.path.join(str(root), os.path.basename(row["run_dir"]))
    os.makedirs(run_dir, exist_ok=True)
    write_json(os.path.join(run_dir, "metrics.json"), {
        "top1": row["top1"], "per_class": list(per_class), "estimated_prior": list(prior),
        "class_names": list(class_names),
    })
    write_json(os.path.join(run_dir, "class_counts.json"),
               {"class_names": CLASS_NAMES, "counts": COUNTS})
    with open(os.path.join(run_dir, "history.csv"), "w", newline="") as handle:
        if prior_l2 is None:
            handle.write("epoch,loss\n1,2.0\n2,1.5\n")
        else:
            handle.write("epoch,loss,prior_l2,test_top1\n")
            for epoch, value in enumerate(prior_l2, start=1):
                test = "0.6" if epoch == len(prior_l2) else ""
                handle.write(f"{epoch},{2.0 / epoch},{value},{test}\n")
    row["run_dir"] = run_dir
    return row


def markdown_rows(text):
    """A markdown table as lists of stripped cells (header first, separator dropped)."""
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines() if line.startswith("|")
    ]
    return [rows[0]] + rows[2:]


def render(table):
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def cells_of(text, label):
    """The stripped cells after the label of the rendered table row labelled ``label``."""
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines()]
    matches = [row[1:] for row in rows if row and row[0] == label]
    assert len(matches) == 1, text
    return matches[0]


# --- names and summary -------------------------------------------------------------------------

def test_display_names():
    assert method_name("corr") == "CORR" and method_name("cavl") == "CAVL"
    assert method_name("corr+mixup") == "CORR (mixup)"
    assert row_label("proden", "none") == "PRODEN"
    assert row_label("corr", "records") == "+ RECORDS"
    assert row_label("corr", "temp-oracle-la") == "+ Temp Oracle-LA"
    assert display_name("lw", "oracle-la-posthoc") == "LW + Oracle-LA post-hoc"
    assert display_name("corr+mixup", "epoch-records") == "CORR (mixup) + epoch RECORDS"
    assert setting_label(100.0, 0.3) == "ρ=100, q=0.3"


def test_summarise_mean_and_sample_std_over_seeds():
    rows = [
        cell(seed=2, top1=0.74, many=None),
        cell(rebalancer="records", top1=0.80),
        cell(seed=1, top1=0.70),
    ]
    plain, records = summarise(rows)
    assert (plain["method"], plain["rebalancer"]) == ("corr", "none")
    assert plain["seeds"] == [1, 2] and plain["n_seeds"] == 2
    assert plain["top1_mean"] == pytest.approx(0.72)
    assert plain["top1_std"] == pytest.approx(math.sqrt(0.0008))   # ddof=1: 0.02828
    assert (plain["many_mean"], plain["many_std"], plain["many_n"]) == (0.9, 0.0, 1)
    assert records["rebalancer"] == "records" and records["n_seeds"] == 1
    assert records["top1_mean"] == pytest.approx(0.80) and records["top1_std"] == 0.0


def test_summarise_later_row_of_a_seed_wins():
    rows = [cell(seed=1, top1=0.50), cell(seed=2, top1=0.74), cell(seed=1, top1=0.70)]
    (entry,) = summarise(rows)
    assert entry["n_seeds"] == 2 and entry["top1_mean"] == pytest.approx(0.72)


# --- Table 1 -----------------------------------------------------------------------------------

def test_table1_mean_std_gain_and_missing_cells():
    rows = [
        cell(top1=0.70), cell(seed=2, top1=0.74),
        cell(rebalancer="records", top1=0.80), cell(rebalancer="records", seed=2, top1=0.866),
        cell(rho=50.0, q=0.5, top1=0.7766),
        cell("proden", top1=0.60), cell("proden", "records", top1=0.585),
    ]
    assert markdown_rows(table1_markdown(rows)) == [
        ["Method", "ρ=50, q=0.5", "ρ=100, q=0.3"],
        ["CORR", "77.66", "72.00 ± 2.83"],
        ["+ RECORDS", "–", "83.30 ± 4.67"],
        ["gain of + RECORDS", "–", "+11.30"],
        ["PRODEN", "–", "60.00"],
        ["+ RECORDS", "–", "58.50"],
        ["gain of + RECORDS", "–", "-1.50"],
    ]


def test_table1_row_order_and_plain_row_always_first():
    runs = [("cavl", "none"), ("zeta", "none"), ("lw", "records"), ("corr+mixup", "none"),
            ("proden", "none"), ("alpha", "none")]
    runs += [("corr", r) for r in ("records", "epoch-records", "none", "temp-oracle-la",
                                   "oracle-la", "oracle-la-posthoc")]
    table = markdown_rows(table1_markdown([cell(m, r, top1=0.5) for m, r in runs]))
    assert [row[0] for row in table[1:]] == [
        "CORR", "+ Oracle-LA post-hoc", "+ Oracle-LA", "+ Temp Oracle-LA", "+ epoch RECORDS",
        "+ RECORDS", "gain of + RECORDS",
        "CORR (mixup)", "PRODEN", "LW", "+ RECORDS", "CAVL", "ALPHA", "ZETA",
    ]
    lw_plain = table[1:][9]
    assert lw_plain == ["LW", "–"]          # not run: the block still starts with the method
    assert table[1:][6] == ["gain of + RECORDS", "+0.00"]


def test_table2_many_medium_few_overall():
    rows = [
        cell(many=0.9, medium=0.75, few=0.6, top1=0.70),
        cell(seed=2, many=0.8, medium=0.65, few=None, top1=0.74),
        cell(rebalancer="records", many=0.91, medium=None, few=0.5, top1=0.80),
    ]
    setting = "(ρ=100, q=0.3)"
    assert markdown_rows(table2_markdown(rows)) == [
        ["Method", f"Many {setting}", f"Medium {setting}", f"Few {setting}",
         f"Overall {setting}"],
        ["CORR", "85.00", "70.00", "60.00", "72.00"],
        ["CORR + RECORDS", "91.00", "–", "50.00", "80.00"],
    ]


# --- files -------------------------------------------------------------------------------------

def test_results_csv_round_trip(tmp_path):
    rows = [
        cell(rebalancer="records", top1=0.80, dataset="cifar10"),
        cell(seed=2, top1=0.74, many=None, dataset="cifar10"),
        cell(seed=1, top1=0.70, dataset="cifar10"),
    ]
    path = tmp_path / "results.csv"
    write_results_csv(rows, str(path))
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        lines = list(reader)
    assert reader.fieldnames == [*RESULT_COLUMNS[:-1], "dataset", "run_dir"]
    assert [(r["rebalancer"], r["seed"]) for r in lines] == [
        ("none", "1"), ("none", "2"), ("records", "1")]
    assert float(lines[1]["top1"]) == 0.74 and lines[1]["many"] == ""
    assert float(lines[2]["imbalance_ratio"]) == 100.0 and float(lines[2]["partial_rate"]) == 0.3
    assert lines[0]["run_dir"] == "/runs/corr-none-100-0.3-1"
    assert read_results_csv(str(path)) == [rows[2], rows[1], rows[0]]
    assert os.listdir(tmp_path) == ["results.csv"]   # no temporary file left behind


def test_write_results_writes_markdown_and_csv(tmp_path):
    rows = [cell(top1=0.70), cell(seed=2, top1=0.74), cell(rebalancer="records", top1=0.8)]
    out = tmp_path / "bench"
    text = write_results(rows, str(out), plots=[str(out / "prior_vs_true.png")])
    assert (out / "results.md").read_text() == text
    assert sorted(os.listdir(out)) == ["results.csv", "results.md"]
    assert text.startswith("# LT-PLL benchmark results\n")
    assert "3 finished cells: 2 configurations × seeds 1, 2; 20 epochs each;" in text
    assert table1_markdown(rows) in text and table2_markdown(rows) in text
    assert "- [prior_vs_true.png](prior_vs_true.png)" in text
    assert len(read_results_csv(str(out / "results.csv"))) == 3
    assert "## Plots" not in results_markdown(rows)


# --- live table --------------------------------------------------------------------------------

def test_live_table_shows_done_pending_and_unplanned_cells():
    planned = [cell(rho=50.0), cell(), cell(seed=2), cell(rebalancer="records"),
               cell(rebalancer="records", seed=2)]
    done = [cell(top1=0.70), cell(rho=50.0, top1=0.66)]
    text = render(live_table(done, 5, expected=planned))
    assert "2/5 runs done" in text
    assert "ρ=50, q=0.3" in text and text.index("ρ=50, q=0.3") < text.index("ρ=100, q=0.3")
    assert cells_of(text, "CORR") == ["66.00", "70.00 (1/2)"]
    assert cells_of(text, "+ RECORDS") == ["–", "…"]
    assert "gain of" not in text

    done.append(cell(rebalancer="records", top1=0.75))
    text = render(live_table(done, 5, expected=planned))
    assert cells_of(text, "+ RECORDS") == ["–", "75.00 (1/2)"]
    assert cells_of(text, "gain of + RECORDS") == ["–", "+5.00"]
    # Without the plan, a missing cell may still come: it shows as pending.
    text = render(live_table(done, 5))
    assert cells_of(text, "+ RECORDS") == ["…", "75.00"]
    assert cells_of(text, "gain of + RECORDS") == ["…", "+5.00"]


def test_live_table_without_plan_uses_finished_rows():
    text = render(live_table([cell("proden", top1=0.61), cell("proden", seed=2, top1=0.63)], 8))
    assert "2/8 runs done" in text
    assert cells_of(text, "PRODEN") == ["62.00 ± 1.41"]
    assert "0/8 runs done" in render(live_table([], 8))


# --- plots -------------------------------------------------------------------------------------

def plot_rows(tmp_path, with_prior_l2=True):
    """corr and corr+RECORDS, two seeds each at ρ=100 q=0.3, plus one run at ρ=50."""
    rows = []
    for rebalancer in ("none", "records"):
        for seed, l2, acc in ((1, (0.5, 0.3), (0.5, 1.0, None, 0.8)),
                              (2, (0.7, 0.1), (0.7, 0.8, None, 0.6))):
            rows.append(make_run(tmp_path, cell(rebalancer=rebalancer, seed=seed), per_class=acc,
                                 prior_l2=l2 if with_prior_l2 else None,
                                 prior=(0.1, 0.6, 0.05, 0.25) if seed == 1 else (0.25,) * 4))
    rows.append(make_run(tmp_path, cell(rho=50.0), prior_l2=(0.9,) if with_prior_l2 else None))
    return rows


def test_prior_data_sorts_classes_and_aligns_names(tmp_path):
    rows = plot_rows(tmp_path)
    # The RECORDS run lists its classes in another order: values must follow their names.
    make_run(tmp_path, rows[2], class_names=["ship", "frog", "dog", "cat"],
             prior=(0.25, 0.05, 0.6, 0.1))
    data = plots.prior_data(rows)
    assert data["setting"] == (100.0, 0.3) and data["seed"] == 1
    corr = data["methods"]["corr"]
    assert corr["class_names"] == ["dog", "ship", "cat", "frog"]
    np.testing.assert_allclose(corr["true_prior"], np.array([100, 50, 10, 1]) / 161)
    assert list(corr["estimated"]) == ["none", "records"]
    np.testing.assert_allclose(corr["estimated"]["none"], [0.6, 0.25, 0.1, 0.05])
    np.testing.assert_allclose(corr["estimated"]["records"], [0.6, 0.25, 0.1, 0.05])
    np.testing.assert_allclose(
        plots.prior_data(rows, seed=2)["methods"]["corr"]["estimated"]["none"], [0.25] * 4)
    assert plots.prior_data(rows, imbalance_ratio=50)["setting"] == (50.0, 0.3)


def test_prior_distance_and_per_class_data(tmp_path):
    rows = plot_rows(tmp_path)
    series = plots.prior_distance_data(rows)["series"]
    assert list(series) == [("corr", "none"), ("corr", "records")]
    assert series[("corr", "none")]["epochs"] == [1, 2]
    assert series[("corr", "none")]["prior_l2"] == pytest.approx([0.6, 0.2])
    assert series[("corr", "none")]["seeds"] == 2

    data = plots.per_class_data(rows)
    assert data["class_names"] == ["dog", "ship", "cat", "frog"]
    np.testing.assert_allclose(data["counts"], [100, 50, 10, 1])
    np.testing.assert_allclose(data["accuracy"][("corr", "records")], [0.9, 0.7, 0.6, np.nan])
    assert data["seeds"][("corr", "records")] == 2


def test_write_plots_writes_three_pngs(tmp_path):
    out = tmp_path / "out"
    written = plots.write_plots(plot_rows(tmp_path / "runs"), str(out))
    assert written == [str(out / name) for name in
                       ("prior_vs_true.png", "prior_l2_over_epochs.png", "per_class_accuracy.png")]
    for path in written:
        with open(path, "rb") as handle:
            content = handle.read()
        assert content.startswith(PNG_MAGIC) and len(content) > 5000
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in written)


def test_write_plots_skips_a_plot_without_data(tmp_path):
    rows = plot_rows(tmp_path / "runs", with_prior_l2=False)
    make_run(tmp_path / "runs", rows[0], prior_l2=("", ""))   # the column, but empty
    out = tmp_path / "out"
    written = plots.write_plots(rows, str(out))
    assert [os.path.basename(p) for p in written] == ["prior_vs_true.png",
                                                      "per_class_accuracy.png"]
    assert plots.plot_prior_distance(rows, str(out / "l2.png")) is None
    assert sorted(os.listdir(out)) == ["per_class_accuracy.png", "prior_vs_true.png"]
    assert plots.write_plots([], str(out / "empty")) == []


def test_plots_without_matplotlib_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(LTPLLError, match=r"pip install 'ltpll\[plots\]'"):
        plots.write_plots([], str(tmp_path))


def test_importing_plots_does_not_import_matplotlib():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys, ltpll.benchmark.plots; print('matplotlib' in sys.modules)"],
        check=False, capture_output=True, text=True, cwd=repo, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
