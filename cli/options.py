"""Flags shared by the commands that train (``train``, ``benchmark``), and the config they make.

``ltpll train`` and ``ltpll benchmark`` accept the same data, model and optimisation flags; the
benchmark only replaces the single method/rebalancer/rho/q/seed by lists. Keeping the flags in one
place keeps their names, defaults and help identical.
"""

import click

METHOD_NAMES = ("corr", "proden", "lw", "cavl")
REBALANCE_NAMES = (
    "none", "records", "epoch-records", "oracle-la", "oracle-la-posthoc", "temp-oracle-la",
)
# The --loss-weighting choices (ltpll.rebalancing.reweighting.LOSS_WEIGHTINGS; a test keeps them equal).
LOSS_WEIGHTING_NAMES = ("none", "cb", "focal", "ldam", "ldam-drw", "meta")

# The flags that decide which images make the long-tailed training subset: shared with
# `ltpll pretrain`, which must see the same subset as the run it prepares.
_SUBSET = [
    click.option("--dataset", default="cifar10", show_default=True,
                 help="cifar10, cifar100, sample (the bundled demo), an image folder "
                      "(<split>/<class>/<image>) or a .tar.gz of one."),
    click.option("--imbalance-profile", type=click.Choice(["exp", "step"]), default="exp",
                 show_default=True),
    click.option("--max-per-class", type=int, default=None,
                 help="n_max of the long-tailed subset (default: the largest class)."),
    click.option("--hierarchical", is_flag=True,
                 help="Candidates within the true label's superclass (CIFAR-100-LT-NU)."),
    click.option("--image-size", type=int, default=None,
                 help="Resize images to this square size."),
    click.option("--strict", is_flag=True,
                 help="Fail on an image file that cannot be decoded (default: skip it, with a "
                      "count)."),
]

_SHARED = [
    *_SUBSET,
    click.option("--candidates", "candidates_file", type=str, default=None,
                 help="CSV of your own candidate sets: path,candidates (';'-separated names or "
                      "ids)."),
    click.option("--records-momentum", type=float, default=0.9, show_default=True,
                 help="Momentum of the RECORDS feature mean."),
    click.option("--la-tau", type=float, default=1.0, show_default=True,
                 help="Temperature of the oracle logit-adjustment baselines."),
    click.option("--la-ramp-epochs", type=int, default=None,
                 help="Epochs over which temp-oracle-la ramps tau up from 0 [default: half the "
                      "run]."),
    click.option("--lw-beta", type=float, default=1.0, show_default=True,
                 help="Weight of LW's non-candidate term."),
    click.option("--mixup/--no-mixup", default=False, show_default=True,
                 help="Add the Mixup term (Beta(4,4), both views and their targets)."),
    click.option("--mixup-weight", type=float, default=1.0, show_default=True,
                 help="Weight of the Mixup term."),
    click.option("--loss-weighting",
                 type=click.Choice(LOSS_WEIGHTING_NAMES),
                 default="none", show_default=True,
                 help="Per-sample loss weighting: class-balanced, focal, LDAM margins, LDAM + "
                      "deferred re-weighting, or meta-learned weights on a clean dev set."),
    click.option("--cb-beta", type=float, default=0.9999, show_default=True,
                 help="beta of the class-balanced weights (1-beta)/(1-beta^n)."),
    click.option("--focal-gamma", type=float, default=2.0, show_default=True,
                 help="gamma of the focal factor (1-p)^gamma."),
    click.option("--ldam-scale", type=float, default=30.0, show_default=True,
                 help="Logit scale s of the cosine head under ldam / ldam-drw."),
    click.option("--drw-start", type=int, default=None,
                 help="Epoch ldam-drw switches class-balanced weights on [default: 80% of the "
                      "run]."),
    click.option("--meta-start", type=int, default=None,
                 help="Epoch meta weighting starts, after plain training [default: half the "
                      "run]."),
    click.option("--dev-per-class", type=int, default=None,
                 help="Clean images per class held out of training as the meta dev set "
                      "[default: 10 with --loss-weighting meta, else 0]."),
    click.option("--dev-batch", type=int, default=100, show_default=True,
                 help="Dev images per meta step."),
    click.option("--oracle-counts", is_flag=True,
                 help="Weight by the true class counts instead of those estimated from the "
                      "confidence table."),
    click.option("--init-from", type=str, default=None, metavar="DIR",
                 help="Start from the backbone of an `ltpll pretrain` directory."),
    click.option("--pseudo-labels", type=str, default=None, metavar="FILE",
                 help="Add the images of an `ltpll pseudo-label` file as single-candidate "
                      "samples."),
    click.option("--backbone", default="resnet18", show_default=True,
                 help="resnet18, resnet-small (CPU) or tiny."),
    click.option("--epochs", type=int, default=800, show_default=True),
    click.option("--batch-size", type=int, default=256, show_default=True),
    click.option("--lr", type=float, default=0.01, show_default=True),
    click.option("--momentum", type=float, default=0.9, show_default=True),
    click.option("--weight-decay", type=float, default=1e-3, show_default=True),
    click.option("--cosine/--no-cosine", default=True, show_default=True,
                 help="Cosine learning-rate decay."),
    click.option("--update-start", type=int, default=1, show_default=True,
                 help="Epochs before the confidence table starts to update."),
    click.option("--eval-every", type=int, default=1, show_default=True,
                 help="Evaluate on the test split every N epochs."),
    click.option("--distribute", type=click.Choice(["none", "mirrored", "multi-worker"]),
                 default="none", show_default=True,
                 help="mirrored: all local GPUs; multi-worker: several machines (TF_CONFIG)."),
    click.option("--precision", type=click.Choice(["float32", "mixed_bfloat16", "mixed_float16"]),
                 default="float32", show_default=True, help="Keras dtype policy."),
    click.option("--steps-per-execution", type=int, default=1, show_default=True,
                 help="Training steps per compiled call (fewer host round trips)."),
    click.option("--jit/--no-jit", "jit_compile", default=True, show_default=True,
                 help="XLA-compile the step (TensorFlow). --no-jit is faster on CPUs."),
    click.option("--confidence-dtype", type=click.Choice(["float32", "float16"]),
                 default="float32", show_default=True,
                 help="Storage of the N x C confidence table (float16 halves it)."),
]


def _add(options, command):
    for option in reversed(options):
        command = option(command)
    return command


def shared_training_options(command):
    """Adds the data, model and optimisation flags to a click command."""
    return _add(_SHARED, command)


def subset_options(command):
    """Adds the flags that decide the long-tailed training subset (``--dataset``...)."""
    return _add(_SUBSET, command)


def run_config(flags, *, method, rebalance, imbalance_ratio, partial_rate, seed, output):
    """A validated RunConfig from the shared flags plus one grid point."""
    from ltpll.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    return RunConfig(
        data=DataConfig(
            dataset=flags["dataset"], imbalance_ratio=imbalance_ratio,
            imbalance_profile=flags["imbalance_profile"], max_per_class=flags["max_per_class"],
            partial_rate=partial_rate, hierarchical=flags["hierarchical"],
            candidates=flags["candidates_file"], image_size=flags["image_size"],
            strict=flags["strict"], dev_per_class=_dev_per_class(flags),
            pseudo_labels=flags["pseudo_labels"],
        ),
        model=ModelConfig(
            backbone=flags["backbone"], method=method, rebalance=rebalance,
            records_momentum=flags["records_momentum"], la_tau=flags["la_tau"],
            la_ramp_epochs=flags["la_ramp_epochs"], lw_beta=flags["lw_beta"],
            mixup=flags["mixup"], mixup_weight=flags["mixup_weight"],
            loss_weighting=flags["loss_weighting"], cb_beta=flags["cb_beta"],
            focal_gamma=flags["focal_gamma"], ldam_scale=flags["ldam_scale"],
            drw_start=flags["drw_start"],
            meta_start=flags["meta_start"], dev_batch=flags["dev_batch"],
            oracle_counts=flags["oracle_counts"], init_from=flags["init_from"],
        ),
        train=TrainConfig(
            epochs=flags["epochs"], batch_size=flags["batch_size"], lr=flags["lr"],
            momentum=flags["momentum"], weight_decay=flags["weight_decay"],
            cosine=flags["cosine"], update_start=flags["update_start"],
            eval_every=flags["eval_every"], distribute=flags["distribute"], seed=seed,
            precision=flags["precision"], steps_per_execution=flags["steps_per_execution"],
            confidence_dtype=flags["confidence_dtype"],
            jit_compile=flags["jit_compile"],
        ),
        output=output,
    ).validate()


def _dev_per_class(flags):
    """``--dev-per-class``, defaulting to 10 (the authors' setting) for the meta weighting only."""
    if flags["dev_per_class"] is not None:
        return flags["dev_per_class"]
    return 10 if flags["loss_weighting"] == "meta" else 0
