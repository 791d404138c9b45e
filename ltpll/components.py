"""The component registry: every PLL method, rebalancer, loss weighting and backbone, declared once.

A component is declared by one :func:`register` call: its kind, its name, where its code lives, its
table label, and its options with their types, defaults, checks and help. Everything else is
derived from that declaration:

* the ``click.Choice`` of ``--method``, ``--rebalance``, ``--loss-weighting`` and ``--backbone``,
  and one flag per option, named ``--<scope>-<option>`` (the scope is the component's name unless
  the option says otherwise, e.g. the three oracle rebalancers share ``--la-tau``);
* the run configuration: the model part of ``config.json`` holds each chosen component as
  ``{"name": ..., <option>: <value>, ...}`` with every option filled in and checked;
* validation, with one-line errors (``--lw-beta must be >= 0; received -1``);
* the benchmark's row labels and order (registration order unless ``order`` says otherwise).

This module imports no Keras: the CLI builds its flags from it, so ``ltpll --help`` stays instant.
The code a declaration points to (``target``, ``"module:attribute"``) is imported only when the
component is built.

Adding a component is its module plus one registration line here (or in a plugin file, see
:func:`load_plugins`). What each kind's ``target`` must provide:

* ``method``: a :class:`~ltpll.disambiguation.base.DisambiguationMethod` subclass, constructed as
  ``Target(**options)``;
* ``rebalancer``: a :class:`~ltpll.rebalancing.base.Rebalancer` layer, built with
  ``Target.from_options(context, **options)``;
* ``weighting``: a :class:`~ltpll.weighting.base.LossWeighting` layer, built with
  ``Target.from_options(context, **options)``;
* ``backbone``: a function ``target(image_size, **options)`` returning a Keras model from
  normalised images to pooled features.

A component may take one option in its name (``argument``): ``--backbone keras-hub:<preset>``
is ``keras-hub`` with its ``preset`` option set, wherever a name is accepted.

``context`` is a :class:`BuildContext`: what the data and the run tell a component (class count,
true class counts, epochs, the dev set, the seed).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys

from ltpll.errors import LTPLLError

# --- kinds -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of component and how the command line and the run config name it."""

    name: str        # "method"
    flag: str        # "--method": selects the component
    title: str       # "PLL method", for messages
    default: str     # the component a run uses when it does not choose
    # Keyword arguments a plain-callable target receives from the BuildContext (backbones).
    context_args: tuple = ()


KINDS = {
    "method": Kind("method", "--method", "PLL method", "corr"),
    "rebalancer": Kind("rebalancer", "--rebalance", "rebalancer", "none"),
    "weighting": Kind("weighting", "--loss-weighting", "loss weighting", "none"),
    "backbone": Kind("backbone", "--backbone", "backbone", "resnet18", ("image_size",)),
}


# --- options ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Check:
    """A condition on an option's value and the words for it (``"must be >= 0"``)."""

    text: str
    test: object  # value -> bool


def at_least(bound):
    return Check(f"must be >= {bound:g}", lambda value: value >= bound)


def above(bound):
    return Check(f"must be > {bound:g}", lambda value: value > bound)


def in_interval(low, high):
    """``low <= value < high``."""
    return Check(f"must be in [{low:g}, {high:g})", lambda value: low <= value < high)


@dataclasses.dataclass(frozen=True)
class Option:
    """One typed option of a component.

    Attributes:
        key: the constructor keyword and the key in the component's config.
        type: ``float``, ``int``, ``bool`` or ``str``.
        default: the value when none is given; ``None`` means "decided when the run starts", and
            ``default_help`` then says what it becomes.
        help: one line for ``--help``.
        check: a :class:`Check` the value must pass (``None`` always passes).
        scope: the flag's prefix: ``--<scope>-<key>``. ``None`` uses the declaring component's
            name; ``""`` gives a bare ``--<key>``. Components that share an option (the oracle
            rebalancers' ``tau``) share one scope and so one flag.
        default_help: what a ``None`` default means (``"80% of the run"``).
    """

    key: str
    type: type
    default: object = None
    help: str = ""
    check: Check | None = None
    scope: str | None = None
    default_help: str | None = None

    def flag(self, component_name):
        scope = component_name if self.scope is None else self.scope
        stem = self.key.replace("_", "-")
        return f"--{scope}-{stem}" if scope else f"--{stem}"

    def dest(self, component_name):
        """The click parameter name of the flag (``--lw-beta`` -> ``lw_beta``)."""
        return self.flag(component_name).lstrip("-").replace("-", "_")

    def coerce(self, value, flag):
        """``value`` converted to the option's type and checked.

        Raises:
            LTPLLError: for a value of the wrong type or one that fails the check.
        """
        if value is None:
            if self.default is None:
                return None
            raise LTPLLError(f"{flag} needs a value")
        try:
            if self.type is bool:
                if not isinstance(value, (bool, int)) or value not in (0, 1):
                    raise TypeError
                value = bool(value)
            elif self.type is int:
                if isinstance(value, bool) or float(value) != int(value):
                    raise TypeError
                value = int(value)
            elif self.type is float:
                if isinstance(value, bool):
                    raise TypeError
                value = float(value)
            else:
                value = self.type(value)
        except (TypeError, ValueError, OverflowError):
            wanted = self.check.text if self.check else f"must be a {self.type.__name__}"
            raise LTPLLError(f"{flag} {wanted}; received {value!r}") from None
        if self.check is not None and not self.check.test(value):
            raise LTPLLError(f"{flag} {self.check.text}; received {value}")
        return value


# --- components ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Component:
    """The declaration of one component (see the module docstring).

    Attributes:
        kind: ``method``, ``rebalancer``, ``weighting`` or ``backbone``.
        name: the name users type (``"lw"``).
        target: ``"package.module:Attribute"`` (imported when built) or the object itself.
        label: the name tables and messages show (``"LW"``).
        help: one line on what it is.
        options: its :class:`Option`\\ s.
        implied: constructor arguments the name itself fixes (``oracle-la-posthoc`` is the
            oracle adjustment with ``posthoc=True``); not options, not in the run config.
        order: sort key in tables and choices; default: registration order.
        dev_per_class: clean dev images per class it needs held out (0: none); the default of
            ``--dev-per-class`` when it is chosen.
        single_device: cannot run under ``--distribute``.
        argument: the option a name ``<name>:<value>`` sets (``keras-hub:resnet_50_imagenet``
            is ``keras-hub`` with ``preset="resnet_50_imagenet"``); None: the name is plain.
    """

    kind: str
    name: str
    target: object
    label: str
    help: str = ""
    options: tuple = ()
    implied: dict = dataclasses.field(default_factory=dict)
    order: float | None = None
    dev_per_class: int = 0
    single_device: bool = False
    argument: str | None = None

    def option(self, key):
        for option in self.options:
            if option.key == key:
                return option
        raise KeyError(key)

    def load(self):
        """The code the declaration points to (imports it on first use)."""
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attribute)

    def resolve(self, options=None):
        """The component's config: ``{"name": ..., **options}``, every option present and checked.

        Raises:
            LTPLLError: for an option it does not have, or a bad value.
        """
        options = dict(options or {})
        name = options.pop("name", None)
        if self.argument and isinstance(name, str) and name.startswith(f"{self.name}:"):
            value, given = name[len(self.name) + 1:], options.get(self.argument)
            if given not in (None, value):
                raise LTPLLError(f"{KINDS[self.kind].flag} {name} contradicts "
                                 f"{self.option(self.argument).flag(self.name)} {given}")
            options[self.argument] = value
        known = {option.key for option in self.options}
        unknown = sorted(set(options) - known)
        if unknown:
            takes = ", ".join(sorted(known)) or "no options"
            raise LTPLLError(f"{KINDS[self.kind].title} {self.name!r} has no option "
                             f"{', '.join(map(repr, unknown))} (it takes {takes})")
        resolved = {"name": self.name}
        for option in self.options:
            value = options.get(option.key, option.default)
            resolved[option.key] = option.coerce(value, option.flag(self.name))
        return resolved

    def build(self, context=None, **options):
        """Builds the component from (resolved) options and a :class:`BuildContext`."""
        target = self.load()
        arguments = {**self.implied, **{k: v for k, v in options.items() if k != "name"}}
        context = context or BuildContext()
        factory = getattr(target, "from_options", None)
        if factory is not None:
            return factory(context, **arguments)
        for name in KINDS[self.kind].context_args:
            arguments.setdefault(name, getattr(context, name))
        return target(**arguments)


@dataclasses.dataclass
class BuildContext:
    """What the data and the run tell a component when it is built.

    Attributes:
        num_classes: C.
        class_counts: the true training images per class (benchmark data; None when unknown).
        epochs: epochs the run trains (for defaults such as "half the run").
        image_size: height (= width) of the training images.
        image_shape: ``(H, W, 3)`` of the training images.
        seed: the run's seed.
        dev_images, dev_labels: the clean dev set held out of training (uint8 images and true
            labels; empty without ``--dev-per-class``).
    """

    num_classes: int = 10
    class_counts: object = None
    epochs: int = 1
    image_size: int = 32
    image_shape: tuple = (32, 32, 3)
    seed: int | None = None
    dev_images: object = None
    dev_labels: object = None


# --- the registry ----------------------------------------------------------------------------

_REGISTRY = {kind: {} for kind in KINDS}
_PLUGINS = {"loaded": False, "errors": []}
PLUGIN_ENV = "LTPLL_PLUGINS"

# Flags users typed before the registry existed whose names do not follow --<scope>-<option>;
# each stays accepted as a second name of the derived flag.
FLAG_ALIASES = {
    "--ldam-drw-start": ("--drw-start",),
    "--meta-dev-batch": ("--dev-batch",),
    # Not older, but the name the pretrained-backbone workflow reads best with.
    "--backbone-weights": ("--pretrained",),
}


def register(component):
    """Adds a component to the registry; returns it.

    Raises:
        LTPLLError: for an unknown kind, a name taken by another component of the kind, or an
            option whose flag another, different option already has.
    """
    if component.kind not in KINDS:
        raise LTPLLError(f"unknown component kind {component.kind!r}; one of {', '.join(KINDS)}")
    registry = _REGISTRY[component.kind]
    previous = registry.get(component.name)
    if previous is not None and previous.target != component.target:
        raise LTPLLError(f"{KINDS[component.kind].title} {component.name!r} is registered twice "
                         f"({previous.target} and {component.target})")
    for option in component.options:
        flag = option.flag(component.name)
        for other in _registered_except(component):
            if any(o.flag(other.name) == flag and o != option for o in other.options):
                raise LTPLLError(f"option flag {flag} of {component.name!r} is already the flag "
                                 f"of another option of {other.name!r}")
    if component.order is None:  # registration order; a module imported again keeps its place
        order = previous.order if previous is not None else float(len(registry))
        component = dataclasses.replace(component, order=order)
    registry[component.name] = component
    return component


def _registered_except(component):
    """Every registered component but the one ``component`` re-registers."""
    return [other for kind, registry in _REGISTRY.items() for other in registry.values()
            if (kind, other.name) != (component.kind, component.name)]


def components(kind):
    """Every registered component of ``kind``, in table order."""
    load_plugins()
    return sorted(_REGISTRY[kind].values(), key=lambda c: c.order)


def names(kind):
    """The names of the components of ``kind``, in table order."""
    return tuple(component.name for component in components(kind))


def get(kind, name):
    """The declaration of ``name``.

    Raises:
        LTPLLError: for an unknown name (naming the choices, and any plugin that failed).
    """
    load_plugins()
    try:
        return _REGISTRY[kind][name]
    except (KeyError, TypeError):
        pass
    if isinstance(name, str) and ":" in name:  # <name>:<value> of a component with an argument
        prefix, _, value = name.partition(":")
        component = _REGISTRY[kind].get(prefix)
        if component is not None and component.argument and value:
            return component
    hint = ""
    if _PLUGINS["errors"]:
        hint = f" (plugin {_PLUGINS['errors'][0][0]} failed to load)"
    raise LTPLLError(f"unknown {KINDS[kind].flag} {name!r}; choose one of "
                     f"{', '.join(names(kind))}{hint}")


def resolve(kind, spec):
    """A component's full config from its name or a (partial) config dict."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise LTPLLError(f"a {KINDS[kind].title} is a name or a config dict; received {spec!r}")
    return get(kind, spec.get("name")).resolve(spec)


def check_options(kind, name, **values):
    """``values`` converted and checked against the declared options of component ``name``;
    what a component's constructor calls, so Python users get the CLI's one-line errors.

    Raises:
        LTPLLError: for a bad value.
    """
    component = get(kind, name)
    return {key: component.option(key).coerce(value, component.option(key).flag(name))
            for key, value in values.items()}


def build(kind, spec, context=None):
    """Builds a component from its name or config (options checked, defaults filled)."""
    config = resolve(kind, spec)
    return get(kind, config["name"]).build(context, **config)


@dataclasses.dataclass
class Flag:
    """A command-line flag derived from an option, and the components that take it."""

    name: str            # "--la-tau"
    option: Option
    kind: str
    owners: list         # component names, in table order
    aliases: tuple = ()  # older names still accepted (FLAG_ALIASES)

    @property
    def dest(self):
        return self.option.dest(self.owners[0])


def option_flags():
    """Every option flag, ``{flag: Flag}``, by kind in table order."""
    flags = {}
    for kind in KINDS:
        for component in components(kind):
            for option in component.options:
                name = option.flag(component.name)
                if name not in flags:
                    flags[name] = Flag(name, option, kind, [], FLAG_ALIASES.get(name, ()))
                flags[name].owners.append(component.name)
    return flags


def label(kind, name):
    """The table label of a component; an unregistered name is shown as it is."""
    load_plugins()
    component = _REGISTRY[kind].get(name)
    return component.label if component is not None else str(name)


def order_key(kind, name):
    """Sort key: registered components in table order, then unknown names alphabetically."""
    load_plugins()
    component = _REGISTRY[kind].get(name)
    return (0, component.order, "") if component is not None else (1, 0.0, str(name))


# --- plugins ---------------------------------------------------------------------------------


def load_plugins():
    """Imports the plugins that register components of their own, once (on first use of the
    registry).

    ``LTPLL_PLUGINS`` names them: module names or ``.py`` file paths, separated by ``,`` or the
    path separator; a file is imported under its file name (``toy_method.py`` -> ``toy_method``).
    A plugin that fails to import does not stop ltpll: a one-line warning goes to stderr, and
    looking up a name it would have registered says so.
    """
    if _PLUGINS["loaded"]:
        return
    _PLUGINS["loaded"] = True
    specs = [s for part in os.environ.get(PLUGIN_ENV, "").split(",")
             for s in part.split(os.pathsep) if s.strip()]
    for spec in specs:
        try:
            _import_plugin(spec.strip())
        except Exception as error:
            _plugin_failed(spec.strip(), error)


def _import_plugin(spec):
    if spec.endswith(".py") or os.sep in spec:
        path = os.path.abspath(os.path.expanduser(spec))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file {path}")
        name = os.path.splitext(os.path.basename(path))[0]
        if name in sys.modules:
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    return importlib.import_module(spec)


def _plugin_failed(name, error):
    _PLUGINS["errors"].append((name, error))
    detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
    print(f"ltpll: warning: plugin {name} could not be loaded ({type(error).__name__}"
          f"{': ' + detail if detail else ''})", file=sys.stderr)


# --- the built-in components -----------------------------------------------------------------
# One registration each. Options shared by several components are defined once, above them.

register(Component("method", "corr", "ltpll.disambiguation.corr:CORR", "CORR",
                   "Consistency-regularised PLL, two views (Wu et al., ICML 2022)."))
register(Component("method", "proden", "ltpll.disambiguation.proden:PRODEN", "PRODEN",
                   "Progressive identification of true labels (Lv et al., ICML 2020)."))
register(Component("method", "lw", "ltpll.disambiguation.lw:LW", "LW",
                   "Leveraged weighted loss (Wen et al., ICML 2021).",
                   options=(Option("beta", float, 1.0, "Weight of LW's non-candidate term.",
                                   at_least(0)),)))
register(Component("method", "cavl", "ltpll.disambiguation.cavl:CAVL", "CAVL",
                   "Class activation value labels (Zhang et al., ICLR 2022)."))
register(Component("method", "cc", "ltpll.disambiguation.cc:CC", "CC",
                   "Classifier-consistent loss -log sum_{j in S} p_j (Feng et al., NeurIPS 2020)."))

# SoLar and SoLar-LA share their options (one --solar-<option> flag each); SoLar-LA adds zeta.
_SOLAR = "ltpll.disambiguation.solar:SoLar"
_UNIT = Check("must be in [0, 1]", lambda value: 0 <= value <= 1)
SOLAR_OPTIONS = tuple(Option(*spec, scope="solar") for spec in (
    ("queue_size", int, 16384, ("Samples in SoLar's Sinkhorn queue (the authors' 64 batches of "
                                "256); 0: the batch alone."), at_least(0)),
    ("lamd", float, 3.0, "Exponent lambda of SoLar's Sinkhorn cost.", above(0)),
    ("iterations", int, 50, "Sinkhorn-Knopp iterations per step.", at_least(1)),
    ("eta", float, 0.9, "Final weight of SoLar's reliable-sample terms.", _UNIT),
    ("tau", float, 0.99, "Prediction-refined label agreement that makes a sample reliable.",
     _UNIT),
    ("rho_start", float, 0.2, ("Share of each class's expected batch count selected as "
                               "reliable at the start (rho_range)."), _UNIT),
    ("rho_end", float, 0.8, "That share after the warm-up (rho_range).", _UNIT),
    ("warmup_epochs", int, 50, "Epochs over which eta and rho ramp up.", at_least(0)),
    ("est_epochs", int, 20, "Epochs of the class-marginal estimation phase.", at_least(0)),
    ("gamma_est", float, 0.1, ("Moving-average weight of the marginal estimate during "
                               "est_epochs."), _UNIT),
    ("gamma", float, 0.01, "Its weight after est_epochs.", _UNIT),
))
register(Component("method", "solar", _SOLAR, "SoLar",
                   "Sinkhorn label refinery for imbalanced PLL (Wang et al., NeurIPS 2022).",
                   options=SOLAR_OPTIONS, single_device=True))
register(Component("method", "solar-la", _SOLAR, "SoLar-LA",
                   "SoLar trained with the logit-adjusted loss on its estimated marginal.",
                   options=(*SOLAR_OPTIONS, Option(
                       "la_tau", float, 1.0, "Logit-adjustment weight zeta of SoLar-LA.",
                       at_least(0), scope="solar")),
                   implied={"logit_adjusted": True}, single_device=True))

# HTC: the authors' defaults (train.py; mu is fixed at 0.6 there).
register(Component("method", "htc", "ltpll.disambiguation.htc:HTC", "HTC",
                   "Head and tail classifiers fused by attention (Jia et al., AAAI 2024).",
                   options=tuple(Option(*spec, scope="htc") for spec in (
                       ("t", float, 2.0, ("Logit adjustment tau of the tail classifier's "
                                          "targets (the authors' --t)."), at_least(0)),
                       ("eta", float, 0.9, "Final weight of HTC's reliable-sample terms.", _UNIT),
                       ("alpha_start", float, 0.2, ("Share of each class's expected batch count "
                                                    "selected as reliable at the start "
                                                    "(alpha_range)."), _UNIT),
                       ("alpha_end", float, 0.6, "That share after the warm-up (alpha_range).",
                        _UNIT),
                       ("warmup_epochs", int, 50, ("Epochs over which eta and alpha ramp up "
                                                   "(the authors' --e)."), at_least(0)),
                       ("mu", float, 0.6, ("Weight of the tail classifier's prediction in the "
                                           "confidence table's moving average."), _UNIT),
                   )), single_device=True))

LA_TAU = Option("tau", float, 1.0, "Temperature of the oracle logit-adjustment baselines.",
                at_least(0), scope="la")
_ORACLE = "ltpll.rebalancing.logit_adjust:OracleLogitAdjustment"
register(Component("rebalancer", "none", "ltpll.rebalancing.base:NoRebalancing", "none",
                   "Plain PLL: nothing subtracted."))
register(Component("rebalancer", "oracle-la-posthoc", _ORACLE, "Oracle-LA post-hoc",
                   "The true prior subtracted at prediction only.", options=(LA_TAU,),
                   implied={"posthoc": True}))
register(Component("rebalancer", "oracle-la", _ORACLE, "Oracle-LA",
                   "The true prior subtracted in the update and at prediction.",
                   options=(LA_TAU,)))
register(Component("rebalancer", "temp-oracle-la", _ORACLE, "Temp Oracle-LA",
                   "Oracle-LA with its temperature ramped up from 0.",
                   options=(LA_TAU, Option("ramp_epochs", int, None,
                                           "Epochs over which temp-oracle-la ramps tau up from 0.",
                                           at_least(1), scope="la",
                                           default_help="half the run")),
                   implied={"ramp": True}))
register(Component("rebalancer", "epoch-records", "ltpll.rebalancing.records:EpochRecordsPrior",
                   "epoch RECORDS", "RECORDS with the feature mean of the previous epoch."))
register(Component("rebalancer", "records", "ltpll.rebalancing.records:RecordsPrior", "RECORDS",
                   "Dynamic rebalancing by a momentum feature mean (Hong et al., ICLR 2023).",
                   options=(Option("momentum", float, 0.9, "Momentum of the RECORDS feature mean.",
                                   in_interval(0, 1)),)))

ORACLE_COUNTS = Option("oracle_counts", bool, False,
                       "Weight by the true class counts instead of those estimated from the "
                       "confidence table.", scope="")
CB_BETA = Option("beta", float, 0.9999, "beta of the class-balanced weights (1-beta)/(1-beta^n).",
                 in_interval(0, 1), scope="cb")
LDAM_SCALE = Option("scale", float, 30.0, "Logit scale s of the cosine head under ldam / ldam-drw.",
                    above(0), scope="ldam")
LDAM_MAX_MARGIN = Option("max_margin", float, 0.5, "The largest LDAM margin (of the rarest class).",
                         above(0), scope="ldam")
register(Component("weighting", "none", "ltpll.weighting.base:LossWeighting", "none",
                   "Every sample weighs 1."))
register(Component("weighting", "cb", "ltpll.weighting.class_balanced:ClassBalanced", "CB",
                   "Class-balanced weights (Cui et al., CVPR 2019).",
                   options=(CB_BETA, ORACLE_COUNTS)))
register(Component("weighting", "focal", "ltpll.weighting.focal:Focal", "focal",
                   "The focal factor (Lin et al., ICCV 2017).",
                   options=(Option("gamma", float, 2.0, "gamma of the focal factor (1-p)^gamma.",
                                   at_least(0)),)))
register(Component("weighting", "ldam", "ltpll.weighting.ldam:LDAM", "LDAM",
                   "Label-distribution-aware margins (Cao et al., NeurIPS 2019).",
                   options=(LDAM_SCALE, LDAM_MAX_MARGIN, ORACLE_COUNTS)))
register(Component("weighting", "ldam-drw", "ltpll.weighting.ldam:LDAMDRW", "LDAM-DRW",
                   "LDAM plus deferred class-balanced re-weighting.",
                   options=(LDAM_SCALE, LDAM_MAX_MARGIN, CB_BETA,
                            Option("start", int, None, "Epoch ldam-drw switches class-balanced "
                                   "weights on.", at_least(0), default_help="80% of the run"),
                            ORACLE_COUNTS)))
register(Component("weighting", "meta", "ltpll.weighting.meta:MetaWeighting", "meta",
                   "Meta-learned per-example weights on a clean dev set (Jamal et al., CVPR 2020).",
                   options=(CB_BETA,
                            Option("start", int, None, "Epoch meta weighting starts, after plain "
                                   "training.", at_least(0), default_help="half the run"),
                            Option("dev_batch", int, 100, "Dev images per meta step.",
                                   at_least(1)),
                            ORACLE_COUNTS),
                   dev_per_class=10, single_device=True))

register(Component("backbone", "resnet18", "ltpll.models.backbones:resnet18", "ResNet-18",
                   "The CIFAR ResNet-18 of the RECORDS paper (512-d features)."))
register(Component("backbone", "resnet-small", "ltpll.models.backbones:resnet_small",
                   "ResNet-small", "16/32/64 channels, one block per stage: for CPUs."))
register(Component("backbone", "tiny", "ltpll.models.backbones:tiny_convnet", "tiny",
                   "One conv layer, no batch norm: for unit tests."))
register(Component("backbone", "resnet50", "ltpll.models.backbones:resnet50", "ResNet-50",
                   "ImageNet ResNet-50 of keras.applications (7x7/2 stem + max-pool, 2048-d "
                   "features), from scratch or --pretrained.",
                   options=(Option("weights", str, None,
                                   "Pretrained weights: imagenet (downloaded once into "
                                   "~/.keras/models) or the path of a .h5 / .weights.h5 file.",
                                   Check("must be imagenet, none or the path of a .h5 / "
                                         ".weights.h5 weights file",
                                         lambda value: value in ("imagenet", "none", "")
                                         or value.endswith(".h5")),
                                   scope="backbone", default_help="none (from scratch)"),)))
register(Component("backbone", "keras-hub", "ltpll.models.hub:keras_hub_backbone", "keras-hub",
                   "A keras-hub preset's backbone, pooled: --backbone keras-hub:<preset> "
                   "(needs pip install keras-hub).",
                   options=(Option("preset", str, None,
                                   "keras-hub preset (resnet_50_imagenet, a kaggle:// or hf:// "
                                   "handle, a local directory).", scope="backbone",
                                   default_help="keras-hub:<preset>"),),
                   argument="preset"))
