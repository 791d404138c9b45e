"""Run configuration: one dataclass per concern, validated up front, round-tripped through JSON.

The CLI only parses flags into a :class:`RunConfig`; the library validates it (so Python users get
the same one-line errors) and saves it as ``config.json`` in the run directory, from which
``ltpll evaluate`` rebuilds everything it needs.
"""

import dataclasses
from dataclasses import dataclass, field

from ltpll.errors import LTPLLError

CONFIG_VERSION = 2
DISTRIBUTE_CHOICES = ("none", "mirrored", "multi-worker")
PRECISION_CHOICES = ("float32", "mixed_bfloat16", "mixed_float16")
CONFIDENCE_DTYPES = ("float32", "float16")
# Versions from_dict can still read, each with the function that upgrades it by one version.
_MIGRATIONS = {
    # 1 -> 2: ``records: bool`` became ``rebalance: str`` (records, oracle LA, ...).
    1: lambda p: {**p, "version": 2, "model": {
        **{k: v for k, v in p["model"].items() if k != "records"},
        "rebalance": "records" if p["model"].get("records") else "none"}},
}


@dataclass
class DataConfig:
    """Where the images come from and how the LT-PLL training set is made from them.

    Attributes:
        dataset: ``cifar10``/``cifar100`` (tensorflow-datasets), ``sample`` (the demo sample
            shipped in the package), an image-folder directory or a ``.tar.gz`` of one.
        imbalance_ratio: rho = n_max / n_min of the long-tailed subset; None keeps the training
            split as it is (a user's own data is usually long-tailed already).
        imbalance_profile: ``exp`` or ``step``.
        max_per_class: n_max; None uses the largest class of the training split.
        partial_rate: q, the probability of each false label joining a generated candidate set.
        hierarchical: generate candidates inside the true label's superclass (CIFAR-100-LT-NU);
            per-class counts then go to classes in a seeded random order.
        candidates: a CSV of the user's own candidate sets (``path,candidates``); overrides q.
        image_size: resize images to this square size; None keeps their size.
        strict: fail on an image file that cannot be decoded instead of skipping it.
        dev_per_class: images per class held out of training, with their true labels, as the
            balanced clean dev set of ``--loss-weighting meta`` (0: none).
        pseudo_labels: an ``ltpll pseudo-label`` file whose images join the training set as
            extra single-candidate samples.
    """

    dataset: str = "cifar10"
    imbalance_ratio: float | None = 100.0
    imbalance_profile: str = "exp"
    max_per_class: int | None = None
    partial_rate: float = 0.3
    hierarchical: bool = False
    candidates: str | None = None
    image_size: int | None = None
    train_split: str = "train"
    test_split: str = "test"
    strict: bool = False
    dev_per_class: int = 0
    pseudo_labels: str | None = None

    def validate(self):
        if self.imbalance_ratio is not None and self.imbalance_ratio < 1:
            raise LTPLLError(f"--imbalance-ratio must be >= 1; received {self.imbalance_ratio}")
        if self.imbalance_profile not in ("exp", "step"):
            raise LTPLLError(
                f"--imbalance-profile must be exp or step; received {self.imbalance_profile!r}"
            )
        if not 0.0 <= self.partial_rate < 1.0:
            raise LTPLLError(f"--partial-rate must be in [0, 1); received {self.partial_rate}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise LTPLLError(f"--max-per-class must be >= 1; received {self.max_per_class}")
        if self.image_size is not None and self.image_size < 8:
            raise LTPLLError(f"--image-size must be >= 8; received {self.image_size}")
        if self.dev_per_class < 0:
            raise LTPLLError(f"--dev-per-class must be >= 0; received {self.dev_per_class}")


@dataclass
class ModelConfig:
    """The network and the PLL method.

    Attributes:
        backbone: ``resnet18``, ``resnet-small`` or ``tiny``.
        method: PLL disambiguation method (``corr``, ``proden``, ``lw``, ``cavl``).
        rebalance: long-tail rebalancing (``none``, ``records``, ``epoch-records``,
            ``oracle-la``, ``oracle-la-posthoc``, ``temp-oracle-la``).
        records_momentum: momentum of the RECORDS feature mean.
        la_tau: temperature of the oracle logit adjustment baselines.
        la_ramp_epochs: epochs over which ``temp-oracle-la`` ramps its temperature up from 0
            (None: half the run).
        lw_beta: weight of LW's non-candidate term.
        mixup: add the Mixup term to the method's loss.
        mixup_weight: weight of the Mixup term.
        loss_weighting: per-sample loss weighting (``none``, ``cb``, ``focal``, ``ldam``,
            ``ldam-drw``, ``meta``; :mod:`ltpll.rebalancing.reweighting`).
        cb_beta: beta of the class-balanced weights.
        focal_gamma: gamma of the focal factor.
        ldam_scale: logit scale of the cosine head under ``ldam``/``ldam-drw`` (the authors' 30).
        drw_start: epoch from which ``ldam-drw`` applies class-balanced weights (None: after 80%
            of the epochs).
        meta_start: epoch from which ``meta`` learns example weights; plain training before
            (None: half the run).
        dev_batch: dev images per meta step.
        oracle_counts: weight by the true class counts instead of the ones estimated from the
            confidence table.
        init_from: an ``ltpll pretrain`` directory whose backbone weights the run starts from.
    """

    backbone: str = "resnet18"
    method: str = "corr"
    rebalance: str = "none"
    records_momentum: float = 0.9
    la_tau: float = 1.0
    la_ramp_epochs: int | None = None
    lw_beta: float = 1.0
    mixup: bool = False
    mixup_weight: float = 1.0
    loss_weighting: str = "none"
    cb_beta: float = 0.9999
    focal_gamma: float = 2.0
    ldam_scale: float = 30.0
    drw_start: int | None = None
    meta_start: int | None = None
    dev_batch: int = 100
    oracle_counts: bool = False
    init_from: str | None = None

    @property
    def records(self):
        """True when RECORDS (momentum or per-epoch) estimates the prior."""
        return self.rebalance in ("records", "epoch-records")

    def method_config(self):
        """The disambiguation method's config dict (name and options)."""
        from ltpll.disambiguation import get_method

        return get_method(self.method, beta=self.lw_beta).get_config()

    def validate(self):
        from ltpll.disambiguation import METHODS
        from ltpll.models.backbones import BACKBONES
        from ltpll.rebalancing import REBALANCERS

        if self.backbone not in BACKBONES:
            raise LTPLLError(
                f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}"
            )
        if self.method not in METHODS:
            raise LTPLLError(
                f"unknown PLL method {self.method!r}; choose one of {', '.join(sorted(METHODS))}"
            )
        if self.rebalance not in REBALANCERS:
            raise LTPLLError(
                f"unknown --rebalance {self.rebalance!r}; choose one of {', '.join(REBALANCERS)}"
            )
        if not 0.0 <= self.records_momentum < 1.0:
            raise LTPLLError(
                f"--records-momentum must be in [0, 1); received {self.records_momentum}"
            )
        if self.la_tau < 0:
            raise LTPLLError(f"--la-tau must be >= 0; received {self.la_tau}")
        if self.la_ramp_epochs is not None and self.la_ramp_epochs < 1:
            raise LTPLLError(f"--la-ramp-epochs must be >= 1; received {self.la_ramp_epochs}")
        if self.lw_beta < 0:
            raise LTPLLError(f"--lw-beta must be >= 0; received {self.lw_beta}")
        if self.mixup_weight < 0:
            raise LTPLLError(f"--mixup-weight must be >= 0; received {self.mixup_weight}")
        from ltpll.rebalancing.reweighting import validate_weighting

        validate_weighting(self.loss_weighting, self.cb_beta, self.focal_gamma,
                           scale=self.ldam_scale)
        for flag, value in (("--drw-start", self.drw_start), ("--meta-start", self.meta_start)):
            if value is not None and value < 0:
                raise LTPLLError(f"{flag} must be >= 0; received {value}")
        if self.dev_batch < 1:
            raise LTPLLError(f"--dev-batch must be >= 1; received {self.dev_batch}")

    def weighting_start(self, epochs):
        """The epoch a deferred weighting starts (``ldam-drw``, ``meta``); 0 for the others."""
        if self.loss_weighting == "ldam-drw":
            return self.drw_start if self.drw_start is not None else int(0.8 * epochs)
        if self.loss_weighting == "meta":
            return self.meta_start if self.meta_start is not None else epochs // 2
        return 0


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping.

    Attributes:
        epochs, batch_size, lr, momentum: SGD settings (defaults from the RECORDS paper).
        weight_decay: coupled L2, as PyTorch SGD's weight_decay.
        cosine: cosine learning-rate decay over all steps (else constant).
        update_start: epochs trained before the confidence table starts to move.
        eval_every: evaluate on the test split every this many epochs (and after the last).
        distribute: ``none``, ``mirrored`` (tf.distribute.MirroredStrategy over local GPUs) or
            ``multi-worker`` (tf.distribute.MultiWorkerMirroredStrategy, cluster from TF_CONFIG).
        seed: drives subsampling, candidates, shuffling, augmentation and initialisation.
        precision: Keras dtype policy: ``float32``, ``mixed_bfloat16`` or ``mixed_float16``.
        steps_per_execution: training steps run per compiled call (fewer host round trips).
        confidence_dtype: storage of the N x C confidence table: ``float32`` or the compact
            ``float16`` (half the memory; see the README's Scaling section).
        jit_compile: compile the step with XLA (TensorFlow, single device). A plain TensorFlow
            graph is faster on CPUs (measured 2.4x for resnet-small); XLA is meant for GPUs.
    """

    epochs: int = 800
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-3
    cosine: bool = True
    update_start: int = 1
    eval_every: int = 1
    distribute: str = "none"
    seed: int = 123
    precision: str = "float32"
    steps_per_execution: int = 1
    confidence_dtype: str = "float32"
    jit_compile: bool = True

    def validate(self):
        if self.epochs < 1:
            raise LTPLLError(f"--epochs must be >= 1; received {self.epochs}")
        if self.batch_size < 1:
            raise LTPLLError(f"--batch-size must be >= 1; received {self.batch_size}")
        if self.lr <= 0:
            raise LTPLLError(f"--lr must be > 0; received {self.lr}")
        if self.weight_decay < 0:
            raise LTPLLError(f"--weight-decay must be >= 0; received {self.weight_decay}")
        if self.update_start < 0:
            raise LTPLLError(f"--update-start must be >= 0; received {self.update_start}")
        if self.eval_every < 1:
            raise LTPLLError(f"--eval-every must be >= 1; received {self.eval_every}")
        if self.distribute not in DISTRIBUTE_CHOICES:
            raise LTPLLError(
                f"--distribute must be one of {', '.join(DISTRIBUTE_CHOICES)}; "
                f"received {self.distribute!r}"
            )
        if self.precision not in PRECISION_CHOICES:
            raise LTPLLError(
                f"--precision must be one of {', '.join(PRECISION_CHOICES)}; "
                f"received {self.precision!r}"
            )
        if self.steps_per_execution < 1:
            raise LTPLLError(
                f"--steps-per-execution must be >= 1; received {self.steps_per_execution}"
            )
        if self.confidence_dtype not in CONFIDENCE_DTYPES:
            raise LTPLLError(
                f"--confidence-dtype must be one of {', '.join(CONFIDENCE_DTYPES)}; "
                f"received {self.confidence_dtype!r}"
            )


@dataclass
class RunConfig:
    """Everything that defines a run; saved as ``config.json``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: str = "runs/latest"
    version: int = CONFIG_VERSION

    def validate(self):
        self.data.validate()
        self.model.validate()
        self.train.validate()
        if self.model.loss_weighting == "meta":
            if self.data.dev_per_class < 1:
                raise LTPLLError("--loss-weighting meta needs a clean dev set: --dev-per-class "
                                 "must be >= 1")
            if self.train.distribute != "none":
                raise LTPLLError("--loss-weighting meta runs on one device; it does not support "
                                 f"--distribute {self.train.distribute}")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload):
        """Rebuilds a config from ``to_dict`` output.

        Raises:
            LTPLLError: if the payload comes from another config version or has unknown keys.
        """
        version = payload.get("version")
        while version in _MIGRATIONS and version != CONFIG_VERSION:
            payload = _MIGRATIONS[version](payload)
            version = payload.get("version")
        if version != CONFIG_VERSION:
            raise LTPLLError(
                f"run was written by an incompatible ltpll (config version {version}, "
                f"this ltpll reads {CONFIG_VERSION})"
            )
        try:
            return cls(
                data=DataConfig(**payload["data"]),
                model=ModelConfig(**payload["model"]),
                train=TrainConfig(**payload["train"]),
                output=payload["output"],
                version=version,
            )
        except (KeyError, TypeError) as error:
            raise LTPLLError(f"config.json is malformed: {error}") from None
