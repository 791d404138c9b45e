"""The component registry: every registered method, rebalancer, weighting and backbone imports,
builds, round-trips its config and trains a step; flags, config and labels come from the
declarations; a toy method declared in one plugin file trains through the CLI."""

import inspect
import json
import os
import subprocess
import sys
import textwrap

import click
import keras
import numpy as np
import pytest
from keras import ops

from ltpll import components
from ltpll.cli.main import main
from ltpll.config import ModelConfig
from ltpll.disambiguation import get_method
from ltpll.errors import LTPLLError
from ltpll.models.pll_model import PLLModel
from tests.helpers import REPO, targets, tiny_pll_arrays

EVERY_COMPONENT = [(kind, name) for kind in components.KINDS for name in components.names(kind)]


def _context(images, labels, num_classes):
    return components.BuildContext(
        num_classes=num_classes, class_counts=np.bincount(labels, minlength=num_classes),
        epochs=2, image_size=images.shape[1], image_shape=images.shape[1:], seed=3,
        dev_images=images[:8], dev_labels=labels[:8])


def _model(kind, name, images, candidates, context):
    parts = {"method": "corr", "rebalancer": "none", "weighting": "none", "backbone": "tiny",
             kind: name}
    model = PLLModel(
        components.build("backbone", parts["backbone"], context),
        num_classes=candidates.shape[1], num_samples=len(candidates),
        image_shape=images.shape[1:], method=parts["method"],
        rebalancer=components.build("rebalancer", parts["rebalancer"], context),
        weighting=components.build("weighting", parts["weighting"], context), seed=1)
    model.set_candidates(candidates)
    return model


@pytest.mark.parametrize("kind,name", EVERY_COMPONENT, ids=lambda v: str(v))
def test_every_component_builds_round_trips_and_trains_a_step(kind, name):
    images, candidates, labels = tiny_pll_arrays()
    context = _context(images, labels, candidates.shape[1])
    declaration = components.get(kind, name)
    if declaration.argument:  # keras-hub:<preset>: tests/test_pretrained_backbones.py
        pytest.skip(f"{name} is built from the {declaration.argument} its name gives")
    built = components.build(kind, name, context)
    defaults = declaration.resolve({})

    if kind == "method":
        assert built.get_config() == defaults          # get_config = name + declared options
        assert get_method(built.get_config()).get_config() == defaults
    elif kind == "backbone":
        rebuilt = keras.Model.from_config(built.get_config())
        assert rebuilt.count_params() == built.count_params()
        assert built.output_shape[-1] > 0
    else:
        config = built.get_config()
        for option in declaration.options:
            if option.default is not None and option.type is not bool:
                assert config[option.key] == defaults[option.key], option.key
        assert type(built).from_config(config).get_config() == config

    model = _model(kind, name, images, candidates, context)
    # Eagerly: one step is cheaper than tracing it (the compiled step of every built-in
    # component is tested by its own module's tests).
    model.compile(optimizer=keras.optimizers.SGD(0.05), run_eagerly=True)
    before = ops.convert_to_numpy(model.confidence).copy()
    history = model.fit(images[:8], targets(candidates, labels, np.arange(8)), batch_size=8,
                        epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    table = ops.convert_to_numpy(model.confidence)
    # No UpdateStart passed: the table updates from the first step.
    assert not np.allclose(table[:8], before[:8])
    assert np.all(table[candidates == 0] == 0)
    np.testing.assert_array_equal(table[8:], before[8:])


@pytest.mark.parametrize("kind,name", EVERY_COMPONENT, ids=lambda v: str(v))
def test_declared_defaults_are_the_code_defaults(kind, name):
    """The declaration and the constructor (or from_options) must not drift apart."""
    declaration = components.get(kind, name)
    target = declaration.load()
    defaults = {}
    functions = [target] if inspect.isfunction(target) else [
        *(klass.__init__ for klass in reversed(target.__mro__) if "__init__" in vars(klass)),
        *([target.from_options.__func__] if hasattr(target, "from_options") else [])]
    for function in functions:
        for parameter in inspect.signature(function).parameters.values():
            if parameter.default is not inspect.Parameter.empty:
                defaults[parameter.name] = parameter.default
    for option in declaration.options:
        assert option.key in defaults, f"{name} does not take {option.key}"
        assert defaults[option.key] == option.default, (name, option.key)


def test_cli_choices_and_flags_come_from_the_registry():
    train = main.commands["train"]
    params = {param.name: param for param in train.params}
    assert list(params["method"].type.choices) == list(components.names("method"))
    assert list(params["rebalance"].type.choices) == list(components.names("rebalancer"))
    assert list(params["loss_weighting"].type.choices) == list(components.names("weighting"))
    assert list(params["backbone"].type.choices) == list(components.names("backbone"))
    for flag in components.option_flags().values():
        assert flag.name in params[flag.dest].opts
        assert set(flag.aliases) <= set(params[flag.dest].opts)
    benchmark = {param.name for param in main.commands["benchmark"].params}
    assert {flag.dest for flag in components.option_flags().values()} <= benchmark


def test_flags_users_had_before_the_registry_still_work(image_folder, tmp_path):
    """--drw-start and --dev-batch are aliases of --ldam-drw-start and --meta-dev-batch."""
    from ltpll.cli.options import component_config

    command = main.commands["train"]
    context = command.make_context("train", ["--drw-start", "7", "--dev-batch", "20",
                                             "--la-tau", "0.5", "--records-momentum", "0.8"])
    flags = context.params
    assert component_config("weighting", "ldam-drw", flags)["start"] == 7
    assert component_config("weighting", "meta", flags)["dev_batch"] == 20
    assert component_config("rebalancer", "oracle-la", flags)["tau"] == 0.5
    assert component_config("rebalancer", "temp-oracle-la", flags)["tau"] == 0.5
    assert component_config("rebalancer", "records", flags)["momentum"] == 0.8


def test_model_config_completes_and_checks_each_component():
    config = ModelConfig(method="lw", rebalancer={"name": "records", "momentum": 0.5},
                         weighting="ldam-drw")
    config.validate()
    assert config.method == {"name": "lw", "beta": 1.0}
    assert config.rebalancer == {"name": "records", "momentum": 0.5}
    assert config.weighting == {"name": "ldam-drw", "scale": 30.0, "max_margin": 0.5,
                                "beta": 0.9999, "start": None, "oracle_counts": False}
    with pytest.raises(LTPLLError, match="--records-momentum must be in \\[0, 1\\); received 1"):
        ModelConfig(rebalancer={"name": "records", "momentum": 1.0}).validate()
    with pytest.raises(LTPLLError, match="has no option 'beta'"):
        ModelConfig(method={"name": "corr", "beta": 1.0}).validate()
    with pytest.raises(LTPLLError, match="unknown --backbone 'resnet9000'"):
        ModelConfig(backbone="resnet9000").validate()


def test_two_options_cannot_claim_one_flag():
    clash = components.Option("momentum", float, 0.5, "another momentum", scope="records")
    with pytest.raises(LTPLLError, match="--records-momentum"):
        components.register(components.Component("rebalancer", "clash", "x:y", "clash",
                                                 options=(clash,)))
    assert "clash" not in components.names("rebalancer")


def test_benchmark_labels_and_order_come_from_the_registry():
    from ltpll.benchmark.report import display_name, method_key, rebalancer_key

    assert display_name("lw+mixup", "oracle-la") == "LW (mixup) + Oracle-LA"
    assert sorted(sorted(components.names("method")), key=method_key) == list(
        components.names("method"))
    assert sorted(components.names("rebalancer")[::-1], key=rebalancer_key) == list(
        components.names("rebalancer"))
    assert display_name("newmethod", "none") == "NEWMETHOD"   # not registered: kept readable


def test_the_declarations_import_without_keras():
    done = subprocess.run(
        [sys.executable, "-c", "import sys, ltpll.components, ltpll.config, ltpll.run_dir, "
         "ltpll.cli.main; ltpll.components.names('method'); "
         "print([m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules])"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


TOY_METHOD = '''
"""A toy PLL method in one file: PRODEN whose update sharpens the softmax by a temperature."""
from keras import ops

from ltpll.components import Component, Option, above, register
from ltpll.disambiguation.base import (DisambiguationMethod, cross_entropy_to_targets,
                                       normalise_over_candidates)


class Toy(DisambiguationMethod):
    name = "toy"
    views = 1

    def __init__(self, temperature=1.0):
        self.set_options(temperature=temperature)

    def example_losses(self, logits_w, logits_s, targets, candidates):
        return cross_entropy_to_targets(logits_w, targets)

    def update(self, logits_w, logits_s, candidates):
        return normalise_over_candidates(ops.log_softmax(logits_w / self.temperature), candidates)


register(Component("method", "toy", Toy, "TOY", "PRODEN with a temperature.",
                   options=(Option("temperature", float, 1.0, "Update temperature.", above(0)),)))
'''


def _ltpll(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "ltpll.cli.main", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=timeout)


# The CLI in one fresh process (one TensorFlow start): --help, train, evaluate.
THROUGH_THE_CLI = """
import json, sys
from click.testing import CliRunner
from ltpll.cli.main import main
folder, run = sys.argv[1:]
helped = CliRunner().invoke(main, ["train", "--help"])
trained = CliRunner().invoke(main, [
    "train", "--dataset", folder, "--method", "toy", "--toy-temperature", "0.5",
    "--imbalance-ratio", "2", "--backbone", "tiny", "--epochs", "2", "--batch-size", "8",
    "--no-jit", "--output", run])
evaluated = CliRunner().invoke(main, ["evaluate", run])
print(json.dumps({"help": helped.output, "train": [trained.exit_code, trained.output],
                  "evaluate": [evaluated.exit_code, evaluated.output]}))
"""


def test_a_toy_method_in_one_plugin_file_trains_through_the_cli(image_folder, tmp_path):
    plugin = tmp_path / "toy_method.py"
    plugin.write_text(textwrap.dedent(TOY_METHOD))
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "LTPLL_PLUGINS": str(plugin)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    run = str(tmp_path / "run")
    done = subprocess.run([sys.executable, "-c", THROUGH_THE_CLI, image_folder, run],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    # Quiet: the plugin imports Keras while the CLI loads, yet no TensorFlow start-up line.
    assert done.stderr == "", done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "--toy-temperature" in out["help"]
    assert out["train"][0] == 0, out["train"][1]
    assert out["train"][1].startswith("ltpll train: TOY on ")
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["model"]["method"] == {"name": "toy", "temperature": 0.5}
    assert out["evaluate"][0] == 0, out["evaluate"][1]   # the saved model reloads the plugin
    assert 0.0 <= json.load(open(os.path.join(run, "metrics.json")))["top1"] <= 1.0


def test_a_broken_plugin_is_one_warning_not_a_crash(tmp_path):
    plugin = tmp_path / "broken.py"
    plugin.write_text("raise RuntimeError('half written')\n")
    env = {**os.environ, "LTPLL_PLUGINS": str(plugin)}
    done = _ltpll(["train", "--help"], env, timeout=120)
    assert done.returncode == 0
    assert done.stderr.strip() == ("ltpll: warning: plugin " + str(plugin) +
                                   " could not be loaded (RuntimeError: half written)")


def test_every_kind_flag_is_a_click_choice():
    params = {param.name: param for param in main.commands["train"].params}
    for kind, info in components.KINDS.items():
        param = params[info.flag.lstrip("-").replace("-", "_")]
        assert isinstance(param.type, click.Choice) and info.flag in param.opts


def test_grid_files_may_use_the_older_flag_names():
    from ltpll.cli.options import flag_dest

    assert flag_dest("drw-start") == "ldam_drw_start"
    assert flag_dest("dev_batch") == "meta_dev_batch"
    assert flag_dest("loss-weighting") == "loss_weighting"
