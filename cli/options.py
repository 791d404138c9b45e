"""Flags shared by the commands that train (``train``, ``benchmark``), and the config they make.

``ltpll train`` and ``ltpll benchmark`` accept the same data, model and optimisation flags; the
benchmark only replaces the single method/rebalancer/rho/q/seed by lists. The component flags
(``--method``, ``--rebalance``, ``--loss-weighting``, ``--backbone`` and every component option
such as ``--lw-beta``) are derived from the registry (:mod:`ltpll.components`), so a new
component brings its flags with it.
"""

import click

from ltpll import components
from ltpll.cli.app import OneLineUsageError
from ltpll.config import PRECISION_CHOICES
from ltpll.data.defaults import (
    CANDIDATE_MODELS,
    DEFAULT_MEMORY_BUDGET_GB,
    DEFAULT_SUPERCLASS_RATIO,
)
from ltpll.errors import LTPLLError


class ComponentChoice(click.Choice):
    """The registered names of a kind; an unknown one fails with the registry's words."""

    def __init__(self, kind):
        super().__init__(components.names(kind))
        self.kind = kind

    def convert(self, value, param, ctx):
        if value in self.choices:
            return value
        try:
            components.get(self.kind, value)
        except LTPLLError as error:
            raise OneLineUsageError(str(error)) from None
        return value


def component_choice(kind, default=None, help=None, flag=None):
    """``--method``-style option choosing a registered component of ``kind`` (its parameter is
    named after the flag: ``--loss-weighting`` -> ``loss_weighting``)."""
    info = components.KINDS[kind]
    title = info.title[0].upper() + info.title[1:]
    return click.option(
        flag or info.flag, type=ComponentChoice(kind),
        default=default or info.default, show_default=True,
        help=help or f"{title}; `ltpll components {kind}` describes each, with its options.")


def component_option_flags():
    """One click option per component option flag (``--lw-beta``, ``--la-tau``...)."""
    options = []
    for flag in components.option_flags().values():
        option = flag.option
        text = option.help
        if option.default is None and option.default_help:
            text += f" [default: {option.default_help}]"
        text += f" ({', '.join(flag.owners)})"
        names = (flag.name, *flag.aliases, flag.dest)
        if option.type is bool:
            options.append(click.option(*names, is_flag=True, default=bool(option.default),
                                        help=text))
        else:
            options.append(click.option(*names, type=option.type, default=option.default,
                                        show_default=option.default is not None, help=text))
    return options


# The flags that decide which images make the long-tailed training subset: shared with
# `ltpll pretrain`, which must see the same subset as the run it prepares.
_SUBSET = [
    click.option("--dataset", default="cifar10", show_default=True,
                 help="cifar10, cifar100, sample (the bundled demo), an image folder "
                      "(<split>/<class>/<image>) or a .tar.gz of one."),
    click.option("--imbalance-profile", type=click.Choice(["exp", "step"]), default="exp",
                 show_default=True),
    click.option("--max-per-class", type=int, default=None,
                 help="n_max of the long-tailed subset (default: the largest class); without "
                      "--imbalance-ratio, the most images any class keeps."),
    click.option("--candidate-model", type=click.Choice(CANDIDATE_MODELS), default=None,
                 help="How generated candidate sets are drawn. uniform: every false label with "
                      "q. nu (CIFAR-100-LT-NU): labels of the true label's superclass with "
                      "min(--superclass-ratio x q, 1), all others with q. h (CIFAR-100-H): only "
                      "the superclass's labels, with q. nu and h also give the long-tail counts "
                      "to classes in a seeded order [default: uniform]."),
    click.option("--hierarchical", is_flag=True,
                 help="Shorthand for --candidate-model nu (CIFAR-100-LT-NU, as in RECORDS)."),
    click.option("--data-seed", type=int, default=None,
                 help="Seed of what fixes the data: the long-tailed subset, the candidate sets, "
                      "the dev and validation sets. Hold it while varying --seed to compare "
                      "training seeds on one dataset [default: --seed]."),
    click.option("--image-size", type=int, default=None,
                 help="Resize images to this square size."),
    click.option("--strict", is_flag=True,
                 help="Fail on an image file that cannot be decoded (default: skip it, with a "
                      "count)."),
    click.option("--train-list", type=str, default=None, metavar="FILE",
                 help="List of the training images under --dataset ROOT: 'path label' lines "
                      "(ImageNet-LT, Places-LT) or a COCO-style JSON (iNaturalist)."),
    click.option("--test-list", type=str, default=None, metavar="FILE",
                 help="List of the test images, as --train-list."),
    click.option("--stream", "input_mode", flag_value="stream",
                 help="Decode the images from disk in the input pipeline, batch by batch "
                      "[default: when the decoded split exceeds --memory-budget]."),
    click.option("--in-memory", "input_mode", flag_value="memory",
                 help="Decode every image into memory once, whatever its size."),
    click.option("--memory-budget", type=float, default=DEFAULT_MEMORY_BUDGET_GB,
                 show_default=True, metavar="GB",
                 help="Decoded images a split may take in memory before it streams."),
]


def _shared():
    return [
        *_SUBSET,
        click.option("--candidates", "candidates_file", type=str, default=None,
                     help="CSV of your own candidate sets: path,candidates (';'-separated names "
                          "or ids)."),
        click.option("--superclasses", type=str, default=None, metavar="FILE",
                     help="CSV of class,superclass rows for --candidate-model nu/h on any "
                          "dataset [default: tfds cifar100's, or CIFAR-100's for classes named "
                          "as its]."),
        click.option("--superclass-ratio", type=float, default=DEFAULT_SUPERCLASS_RATIO,
                     show_default=True,
                     help="nu: how many times likelier a superclass label joins than another."),
        component_choice("weighting"),
        component_choice("backbone"),
        *component_option_flags(),
        click.option("--mixup/--no-mixup", default=False, show_default=True,
                     help="Add the Mixup term (Beta(4,4), both views and their targets)."),
        click.option("--mixup-weight", type=float, default=1.0, show_default=True,
                     help="Weight of the Mixup term."),
        click.option("--dev-per-class", type=int, default=None,
                     help="Clean images per class held out of training as a dev set "
                          "[default: what the loss weighting needs: 10 for meta, else 0]."),
        click.option("--val-fraction", type=float, default=0.0, show_default=True,
                     metavar="F",
                     help="Share of the training set held out with its candidate sets (no true "
                          "labels) to select an epoch by covering rate, reported next to the "
                          "last and best-test epochs (0: none)."),
        click.option("--init-from", type=str, default=None, metavar="DIR",
                     help="Start from the backbone of an `ltpll pretrain` directory."),
        click.option("--pseudo-labels", type=str, default=None, metavar="FILE",
                     help="Add the images of an `ltpll pseudo-label` file as single-candidate "
                          "samples."),
        click.option("--epochs", type=int, default=800, show_default=True),
        click.option("--batch-size", type=int, default=256, show_default=True),
        click.option("--lr", type=float, default=0.01, show_default=True),
        click.option("--momentum", type=float, default=0.9, show_default=True),
        click.option("--weight-decay", type=float, default=1e-3, show_default=True),
        click.option("--backbone-lr-scale", type=float, default=1.0, show_default=True,
                     help="The backbone's learning rate relative to the head's: 0.1 fine-tunes "
                          "a pretrained backbone gently, 0 freezes it (BatchNorm included)."),
        click.option("--cosine/--no-cosine", default=True, show_default=True,
                     help="Cosine learning-rate decay."),
        click.option("--update-start", type=int, default=1, show_default=True,
                     help="Epochs before the confidence table starts to update."),
        click.option("--eval-every", type=int, default=1, show_default=True,
                     help="Evaluate on the test split every N epochs."),
        click.option("--distribute", type=click.Choice(["none", "mirrored", "multi-worker"]),
                     default="none", show_default=True,
                     help="mirrored: all local GPUs; multi-worker: several machines "
                          "(TF_CONFIG)."),
        click.option("--precision", type=click.Choice(PRECISION_CHOICES),
                     default="auto", show_default=True,
                     help="Keras dtype policy; auto: mixed_bfloat16 on a CPU with native bf16 "
                          "(AVX512-BF16, AMX), where it is faster, else float32."),
        click.option("--steps-per-execution", type=int, default=1, show_default=True,
                     help="Training steps per compiled call (fewer host round trips)."),
        click.option("--jit/--no-jit", "jit_compile", default=None,
                     help="XLA-compile the step (TensorFlow) or not [default: XLA on a GPU, a "
                          "plain TensorFlow graph on a CPU, where it is faster]."),
        click.option("--confidence-dtype", type=click.Choice(["float32", "float16"]),
                     default="float32", show_default=True,
                     help="Storage of the N x C confidence table (float16 halves it)."),
    ]


def flag_dest(name):
    """The parameter a flag name sets (``drw-start`` or ``drw_start`` -> ``ldam_drw_start``): a
    grid file may use the older names of the alias table too."""
    name = name.replace("-", "_")
    for flag in components.option_flags().values():
        if name in (alias.lstrip("-").replace("-", "_") for alias in flag.aliases):
            return flag.dest
    return name


def _add(options, command):
    for option in reversed(options):
        command = option(command)
    return command


def shared_training_options(command):
    """Adds the data, model and optimisation flags to a click command."""
    return _add(_shared(), command)


def subset_options(command):
    """Adds the flags that decide the long-tailed training subset (``--dataset``...)."""
    return _add(_SUBSET, command)


def component_config(kind, name, flags):
    """The config of component ``name`` from the flags of its options."""
    component = components.get(kind, name)
    return {"name": name, **{option.key: flags[option.dest(component.name)]
                             for option in component.options}}


def unused_option_flags(chosen, given):
    """The component option flags the user typed (``given``: click parameter names) that none
    of the ``chosen`` components (``{kind: [names]}``) takes: ``--lw-beta`` with ``--method
    corr``, say."""
    return [f"{flag.name} (for {', '.join(flag.owners)})"
            for flag in components.option_flags().values()
            if flag.dest in given and not set(flag.owners) & set(chosen.get(flag.kind, ()))]


def subset_config(flags):
    """The DataConfig fields the :func:`subset_options` flags set.

    Raises:
        OneLineUsageError: only one of ``--train-list`` / ``--test-list``, or ``--hierarchical``
            with another ``--candidate-model``.
    """
    train, test = flags["train_list"], flags["test_list"]
    if (train is None) != (test is None):
        raise OneLineUsageError("--train-list and --test-list go together")
    candidate_model = flags["candidate_model"]
    if flags["hierarchical"]:
        if candidate_model not in (None, "nu"):
            raise OneLineUsageError(f"--hierarchical (--candidate-model nu) contradicts "
                                    f"--candidate-model {candidate_model}")
        candidate_model = "nu"
    splits = {} if train is None else {"train_split": train, "test_split": test}
    return dict(
        dataset=flags["dataset"], imbalance_profile=flags["imbalance_profile"],
        max_per_class=flags["max_per_class"], candidate_model=candidate_model or "uniform",
        data_seed=flags["data_seed"],
        image_size=flags["image_size"], strict=flags["strict"],
        input_mode=flags["input_mode"] or "auto", memory_budget=flags["memory_budget"], **splits,
    )


def run_config(flags, *, method, rebalance, imbalance_ratio, partial_rate, seed, output):
    """A validated RunConfig from the shared flags plus one grid point."""
    from ltpll.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    return RunConfig(
        data=DataConfig(
            **subset_config(flags), imbalance_ratio=imbalance_ratio, partial_rate=partial_rate,
            candidates=flags["candidates_file"], dev_per_class=flags["dev_per_class"],
            superclasses=flags["superclasses"], superclass_ratio=flags["superclass_ratio"],
            pseudo_labels=flags["pseudo_labels"], val_fraction=flags["val_fraction"],
        ),
        model=ModelConfig(
            backbone=component_config("backbone", flags["backbone"], flags),
            method=component_config("method", method, flags),
            rebalancer=component_config("rebalancer", rebalance, flags),
            weighting=component_config("weighting", flags["loss_weighting"], flags),
            mixup=flags["mixup"], mixup_weight=flags["mixup_weight"],
            init_from=flags["init_from"],
        ),
        train=TrainConfig(
            epochs=flags["epochs"], batch_size=flags["batch_size"], lr=flags["lr"],
            momentum=flags["momentum"], weight_decay=flags["weight_decay"],
            cosine=flags["cosine"], update_start=flags["update_start"],
            eval_every=flags["eval_every"], distribute=flags["distribute"], seed=seed,
            precision=flags["precision"], steps_per_execution=flags["steps_per_execution"],
            confidence_dtype=flags["confidence_dtype"],
            jit_compile=flags["jit_compile"], backbone_lr_scale=flags["backbone_lr_scale"],
        ),
        output=output,
    ).validate()
