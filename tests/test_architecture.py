"""The shape of the code: no import cycles, the CLI inside the package, every package shipped."""

import ast
import configparser
import os
import subprocess
import sys

from tests.helpers import REPO

# Where each importable package lives in the checkout (setup.cfg maps ltpll.cli to cli/).
SOURCES = {"ltpll": os.path.join(REPO, "ltpll"), "ltpll.cli": os.path.join(REPO, "cli")}


def _modules():
    found = {}
    for package, root in SOURCES.items():
        for directory, _, files in os.walk(root):
            for name in files:
                if not name.endswith(".py"):
                    continue
                relative = os.path.relpath(os.path.join(directory, name), root)[:-3]
                parts = [p for p in relative.split(os.sep) if p != "__init__"]
                found[".".join([package, *parts])] = os.path.join(directory, name)
    return found


def import_graph():
    """``{module: {ltpll modules it imports}}``, counting imports inside functions too: an import
    moved into a function to dodge a cycle is still a cycle."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph):
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for node in graph:
        if node not in index:
            visit(node)
    return groups


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = import_graph()
    assert "ltpll.training" in graph and "ltpll.cli.train" in graph
    assert cycles(graph) == []


def test_the_model_does_not_import_the_run_configuration():
    graph = import_graph()
    assert "ltpll.config" not in graph["ltpll.models.pll_model"]
    assert "ltpll.training" not in graph["ltpll.representation.ssp"]
    assert "ltpll.training" not in graph["ltpll.representation.pseudo_label"]


def test_training_keeps_only_the_jobs():
    tree = ast.parse(open(os.path.join(REPO, "ltpll", "training.py")).read())
    public = {node.name for node in tree.body
              if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_")}
    assert public == {"train", "resume", "evaluate"}


def test_setup_cfg_ships_every_package():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(REPO, "setup.cfg"))
    listed = set(parser["options"]["packages"].split())
    packages = {name for name, path in _modules().items() if path.endswith("__init__.py")}
    assert listed == packages
    assert "ltpll.cli = cli" in parser["options"]["package_dir"]
    assert parser["options.entry_points"]["console_scripts"].strip() == \
        "ltpll = ltpll.cli.main:main"


def test_the_installed_cli_is_ltpll_cli_and_there_is_no_top_level_cli(tmp_path):
    code = ("import importlib.util, ltpll.cli.main; "
            "print(importlib.util.find_spec('cli') is None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={k: v for k, v in os.environ.items()
                                             if k != "PYTHONPATH"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
