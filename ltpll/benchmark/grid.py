"""The comparison grid behind ``ltpll benchmark``: which cells, where they live, resuming.

A grid is methods x rebalancers x imbalance ratios x partial rates x seeds; each cell is one
ordinary training run in ``OUTPUT/cells/<cell name>``, so any cell can be inspected, evaluated or
exported like a run of ``ltpll train``. A cell whose ``metrics.json`` exists is finished and is
skipped when the grid runs again; an unfinished one (a crash, Ctrl-C) is started over.

A method name may carry ``+mixup`` (``corr+mixup``) to train that method with the Mixup term.

Where only some method + rebalancer combinations are wanted (a comparison of published methods:
CORR with and without RECORDS, SoLar alone), ``pairs`` lists them (``--pairs
corr:none,corr:records,solar:none``) and replaces the methods x rebalancers product; the other
axes still multiply.
"""

import dataclasses
import itertools
import json
import os
import shutil

from ltpll import components
from ltpll.benchmark.report import selection_fields
from ltpll.errors import LTPLLError
from ltpll.fileio import read_json
from ltpll.run_dir import RUN_FILES, read_config

CELLS_DIR = "cells"
GRID_KEYS = ("methods", "rebalancers", "imbalance_ratios", "partial_rates", "seeds")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of the grid."""

    method: str            # "corr", or "corr+mixup"
    rebalancer: str
    imbalance_ratio: float
    partial_rate: float
    seed: int

    @property
    def base_method(self):
        return self.method.split("+")[0]

    @property
    def mixup(self):
        return self.method.endswith("+mixup")

    @property
    def name(self):
        return (f"{self.method}_{self.rebalancer}_rho{self.imbalance_ratio:g}"
                f"_q{self.partial_rate:g}_seed{self.seed}")


@dataclasses.dataclass
class Grid:
    """The axes of a benchmark grid (each a list)."""

    methods: list
    rebalancers: list
    imbalance_ratios: list
    partial_rates: list
    seeds: list
    # (method, rebalancer) tuples run instead of methods x rebalancers; None: the product.
    pairs: list = None

    @classmethod
    def from_pairs(cls, pairs, **axes):
        """A grid of the given (method, rebalancer) pairs; its methods and rebalancers axes are
        the names the pairs use, in order of appearance."""
        pairs = list(dict.fromkeys(tuple(pair) for pair in pairs))
        return cls(methods=list(dict.fromkeys(m for m, _ in pairs)),
                   rebalancers=list(dict.fromkeys(r for _, r in pairs)), pairs=pairs, **axes)

    def method_rebalancer_pairs(self):
        """The (method, rebalancer) combinations the grid runs, in running order."""
        if self.pairs is not None:
            return list(self.pairs)
        return list(itertools.product(self.methods, self.rebalancers))

    def cells(self):
        """Every cell; seeds outermost so a first full table appears before repeats."""
        return [
            Cell(method, rebalancer, float(rho), float(q), int(seed))
            for seed, rho, q, (method, rebalancer) in itertools.product(
                self.seeds, self.imbalance_ratios, self.partial_rates,
                self.method_rebalancer_pairs(),
            )
        ]

    def validate(self, known_methods=None, known_rebalancers=None):
        """Checks the axes against the registered methods and rebalancers (or the given names)."""
        known_methods = known_methods or components.names("method")
        known_rebalancers = known_rebalancers or components.names("rebalancer")
        for key in GRID_KEYS:
            if not getattr(self, key):
                raise LTPLLError(f"the grid has no {key.replace('_', ' ')}")
        for method in self.methods:
            base, *suffix = method.split("+")
            if base not in known_methods or suffix not in ([], ["mixup"]):
                raise LTPLLError(
                    f"unknown method {method!r} in the grid; choose from "
                    f"{', '.join(known_methods)} (optionally with +mixup)"
                )
        for rebalancer in self.rebalancers:
            if rebalancer not in known_rebalancers:
                raise LTPLLError(
                    f"unknown rebalancer {rebalancer!r} in the grid; choose from "
                    f"{', '.join(known_rebalancers)}"
                )
        return self


def parse_pairs(text, flag="pairs"):
    """``"corr:none,cc:records"`` -> ``[("corr", "none"), ("cc", "records")]``; a list (from a
    grid file) holds ``"method:rebalancer"`` strings.

    Raises:
        LTPLLError: for an entry that is not ``method:rebalancer``.
    """
    pairs = []
    for item in parse_list(text, str, flag):
        method, colon, rebalancer = item.partition(":")
        if not (colon and method.strip() and rebalancer.strip()):
            raise LTPLLError(f"--{flag} takes comma-separated method:rebalancer pairs "
                             f"(corr:records); received {item!r}")
        pairs.append((method.strip(), rebalancer.strip()))
    return pairs


def parse_list(text, kind=str, flag="list"):
    """``"0.3,0.5"`` -> ``[0.3, 0.5]``; a list (from a grid file) is converted item by item."""
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    try:
        values = [kind(str(item).strip()) for item in items if str(item).strip()]
    except ValueError:
        raise LTPLLError(f"--{flag} must be a comma-separated list of {kind.__name__}s; "
                         f"received {text!r}") from None
    return list(dict.fromkeys(values))


def load_grid_file(path):
    """Reads a YAML or JSON grid file into a flat dict of option names (``-`` -> ``_``).

    The file may set the five grid axes (lists or comma-separated strings) and any flag of
    ``ltpll benchmark`` (``epochs: 20``, ``backbone: resnet-small``...).

    Raises:
        LTPLLError: if the file is missing, unreadable or not a mapping.
    """
    if not os.path.isfile(path):
        raise LTPLLError(f"grid file {path} does not exist")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    import yaml

    try:
        payload = yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise LTPLLError(f"cannot parse grid file {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(payload, dict):
        raise LTPLLError(f"grid file {path} must hold a mapping of option names to values")
    return {str(key).replace("-", "_"): value for key, value in payload.items()}


def cell_dir(output, cell):
    return os.path.join(output, CELLS_DIR, cell.name)


def same_settings(config_a, config_b):
    """True when two ``RunConfig.to_dict()`` payloads differ at most in their output path."""
    return ({k: v for k, v in config_a.items() if k != "output"}
            == {k: v for k, v in config_b.items() if k != "output"})


def finished_row(cell, run_dir, expected_config=None):
    """The result row of a finished cell, or None if it has not finished.

    Raises:
        LTPLLError: if the finished cell was run with other settings than ``expected_config``
            (resuming would silently mix two experiments).
    """
    metrics_path = os.path.join(run_dir, RUN_FILES["metrics"])
    config_path = os.path.join(run_dir, RUN_FILES["config"])
    if not (os.path.exists(metrics_path) and os.path.exists(config_path)):
        return None
    # Migrated to this version, so a cell finished by an older ltpll compares like with like.
    config = read_config(run_dir).to_dict()
    if expected_config is not None and not same_settings(config, expected_config):
        differences = [
            f"{section}.{key}"
            for section in ("data", "model", "train")
            for key in expected_config[section]
            if config.get(section, {}).get(key) != expected_config[section][key]
        ]
        raise LTPLLError(
            f"cell {cell.name} in {run_dir} was run with other settings "
            f"({', '.join(differences) or 'config version'}); use another --output or delete it"
        )
    metrics = read_json(metrics_path)
    return {
        "method": cell.method, "rebalancer": cell.rebalancer,
        "imbalance_ratio": cell.imbalance_ratio, "partial_rate": cell.partial_rate,
        "seed": cell.seed,
        **{key: metrics.get(key) for key in ("top1", "top5", "many", "medium", "few",
                                             "prior_l2", "train_seconds")},
        **selection_fields(metrics),
        "epochs": config["train"]["epochs"],
        "run_dir": run_dir,
    }


def prepare_cell_dir(run_dir):
    """Clears an unfinished cell so it can start over; refuses to touch anything else."""
    if not os.path.exists(run_dir):
        return
    if not os.path.exists(os.path.join(run_dir, RUN_FILES["config"])) and os.listdir(run_dir):
        raise LTPLLError(f"{run_dir} holds files that are not an ltpll run; move them away")
    shutil.rmtree(run_dir)
