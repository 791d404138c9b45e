"""Run configuration: one dataclass per concern, validated up front, round-tripped through JSON.

The CLI only parses flags into a :class:`RunConfig`; the library validates it (so Python users get
the same one-line errors) and saves it as ``config.json`` in the run directory, from which
``ltpll evaluate`` rebuilds everything it needs.

The model part names its components (method, rebalancer, loss weighting, backbone) as the
components' own configs, ``{"name": ..., <option>: <value>}``, checked and completed against their
declarations in :mod:`ltpll.components`, as ``PLLModel.get_config()`` nests them. Keras-free.
"""

import dataclasses
from dataclasses import dataclass, field

from ltpll import components
from ltpll.data.defaults import (
    CANDIDATE_MODELS,
    DEFAULT_MEMORY_BUDGET_GB,
    DEFAULT_SUPERCLASS_RATIO,
    INPUT_MODES,
)
from ltpll.errors import LTPLLError
from ltpll.models import CONFIDENCE_DTYPES

CONFIG_VERSION = 4
DISTRIBUTE_CHOICES = ("none", "mirrored", "multi-worker")
PRECISION_CHOICES = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def _v1_to_v2(payload):
    """``records: bool`` became ``rebalance: str`` (records, oracle LA, ...)."""
    model = {k: v for k, v in payload["model"].items() if k != "records"}
    model["rebalance"] = "records" if payload["model"].get("records") else "none"
    return {**payload, "version": 2, "model": model}


def _v2_to_v3(payload):
    """Flat per-option fields (``lw_beta``, ``cb_beta``, ...) became the chosen components' own
    configs; only the options of the chosen components are kept."""
    flat = dict(payload["model"])
    weighting = flat.get("loss_weighting", "none")
    method = {"name": flat.get("method", "corr")}
    if method["name"] == "lw":
        method["beta"] = flat.get("lw_beta", 1.0)
    rebalancer = {"name": flat.get("rebalance", "none")}
    if rebalancer["name"] == "records":
        rebalancer["momentum"] = flat.get("records_momentum", 0.9)
    elif rebalancer["name"] in ("oracle-la", "oracle-la-posthoc", "temp-oracle-la"):
        rebalancer["tau"] = flat.get("la_tau", 1.0)
        if rebalancer["name"] == "temp-oracle-la":
            rebalancer["ramp_epochs"] = flat.get("la_ramp_epochs")
    options = {
        "cb": {"beta": "cb_beta", "oracle_counts": "oracle_counts"},
        "focal": {"gamma": "focal_gamma"},
        "ldam": {"scale": "ldam_scale", "oracle_counts": "oracle_counts"},
        "ldam-drw": {"scale": "ldam_scale", "beta": "cb_beta", "start": "drw_start",
                     "oracle_counts": "oracle_counts"},
        "meta": {"beta": "cb_beta", "start": "meta_start", "dev_batch": "dev_batch",
                 "oracle_counts": "oracle_counts"},
    }.get(weighting, {})
    model = {
        "backbone": {"name": flat.get("backbone", "resnet18")},
        "method": method,
        "rebalancer": rebalancer,
        "weighting": {"name": weighting,
                      **{key: flat[old] for key, old in options.items() if old in flat}},
        "mixup": flat.get("mixup", False),
        "mixup_weight": flat.get("mixup_weight", 1.0),
        "init_from": flat.get("init_from"),
    }
    return {**payload, "version": 3, "model": model}


def _v3_to_v4(payload):
    """``hierarchical: bool`` became ``candidate_model``. Runs of version 3 and before drew
    ``hierarchical`` sets from the true label's superclass only, PiCO's CIFAR-100-H, which is
    ``candidate_model: h`` now (``--hierarchical`` itself means CIFAR-100-LT-NU since). Their
    data followed the run's ``seed``, now written as ``data_seed``."""
    data = {k: v for k, v in payload["data"].items() if k != "hierarchical"}
    data["candidate_model"] = "h" if payload["data"].get("hierarchical") else "uniform"
    data.setdefault("data_seed", payload["train"].get("seed"))
    return {**payload, "version": 4, "data": data}


# Versions from_dict can still read, each with the function that upgrades it by one version.
_MIGRATIONS = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


@dataclass
class DataConfig:
    """Where the images come from and how the LT-PLL training set is made from them.

    Attributes:
        dataset: ``cifar10``/``cifar100`` (tensorflow-datasets), ``sample`` (the demo sample
            shipped in the package), an image-folder directory or a ``.tar.gz`` of one.
        imbalance_ratio: rho = n_max / n_min of the long-tailed subset; None (the default) keeps
            the training split's own class sizes (a user's own data is usually long-tailed
            already), capped at ``max_per_class`` if that is given.
        imbalance_profile: ``exp`` or ``step``.
        max_per_class: n_max of the long-tailed subset (None: the largest class of the training
            split); without ``imbalance_ratio``, the most images any class keeps.
        partial_rate: q, the probability of each false label joining a generated candidate set.
        candidate_model: how generated candidate sets are drawn: ``uniform`` (every false label
            with q), ``nu`` (CIFAR-100-LT-NU: the true label's superclass mates with
            ``min(superclass_ratio * q, 1)``, every other label with q) or ``h`` (CIFAR-100-H:
            superclass mates only, with q). Under ``nu`` and ``h`` the per-class counts of the
            long-tailed subset go to classes in a seeded random order, as the RECORDS authors'.
        superclass_ratio: under ``nu``, how many times likelier a superclass mate joins than any
            other label (the RECORDS paper's 8).
        superclasses: a ``class,superclass`` CSV (:mod:`ltpll.data.superclasses`); without it
            ``nu``/``h`` use tfds cifar100's coarse labels or, for classes named as CIFAR-100's,
            its built-in table.
        data_seed: seeds what fixes the dataset (the long-tailed subset, the candidate sets, the
            dev set, the validation split), so runs of several ``--seed`` train on the same
            data; None follows the run's seed (:meth:`RunConfig.validate` records which).
        candidates: a CSV of the user's own candidate sets (``path,candidates``); overrides q.
        image_size: resize images to this square size; None keeps their size.
        strict: fail on an image file that cannot be decoded instead of skipping it.
        dev_per_class: images per class held out of training, with their true labels, as the
            balanced clean dev set of ``--loss-weighting meta`` (0: none; None: what the run's
            loss weighting needs, 10 for ``meta``).
        pseudo_labels: an ``ltpll pseudo-label`` file whose images join the training set as
            extra single-candidate samples.
        val_fraction: share of the training set held out, with its candidate sets (no true
            labels), to select an epoch without test labels (:mod:`ltpll.selection`); 0: none.
        train_split, test_split: split folders (``train``/``test``) or list files
            (``ImageNet_LT_train.txt``, ``train2018.json``: :mod:`ltpll.data.lists`).
        input_mode: ``auto`` (in memory when the decoded split fits ``memory_budget``, else
            streamed from disk), ``stream`` or ``memory``.
        memory_budget: GiB of decoded images a split may take in memory under ``auto``.
    """

    dataset: str = "cifar10"
    imbalance_ratio: float | None = None
    imbalance_profile: str = "exp"
    max_per_class: int | None = None
    partial_rate: float = 0.3
    candidate_model: str = "uniform"
    superclass_ratio: float = DEFAULT_SUPERCLASS_RATIO
    superclasses: str | None = None
    data_seed: int | None = None
    candidates: str | None = None
    image_size: int | None = None
    train_split: str = "train"
    test_split: str = "test"
    strict: bool = False
    dev_per_class: int | None = None
    pseudo_labels: str | None = None
    val_fraction: float = 0.0
    input_mode: str = "auto"
    memory_budget: float = DEFAULT_MEMORY_BUDGET_GB

    def validate(self):
        if self.imbalance_ratio is not None and self.imbalance_ratio < 1:
            raise LTPLLError(f"--imbalance-ratio must be >= 1; received {self.imbalance_ratio}")
        if self.imbalance_profile not in ("exp", "step"):
            raise LTPLLError(
                f"--imbalance-profile must be exp or step; received {self.imbalance_profile!r}"
            )
        if not 0.0 <= self.partial_rate < 1.0:
            raise LTPLLError(f"--partial-rate must be in [0, 1); received {self.partial_rate}")
        if self.candidate_model not in CANDIDATE_MODELS:
            raise LTPLLError(f"--candidate-model must be one of {', '.join(CANDIDATE_MODELS)}; "
                             f"received {self.candidate_model!r}")
        if not self.superclass_ratio >= 1:  # NaN fails too
            raise LTPLLError(
                f"--superclass-ratio must be >= 1; received {self.superclass_ratio}"
            )
        if self.max_per_class is not None and self.max_per_class < 1:
            raise LTPLLError(f"--max-per-class must be >= 1; received {self.max_per_class}")
        if self.image_size is not None and self.image_size < 8:
            raise LTPLLError(f"--image-size must be >= 8; received {self.image_size}")
        if self.dev_per_class is not None and self.dev_per_class < 0:
            raise LTPLLError(f"--dev-per-class must be >= 0; received {self.dev_per_class}")
        if not 0.0 <= self.val_fraction < 1.0:  # NaN fails too
            raise LTPLLError(f"--val-fraction must be in [0, 1); received {self.val_fraction}")
        if self.input_mode not in INPUT_MODES:
            raise LTPLLError(f"input mode must be one of {', '.join(INPUT_MODES)}; "
                             f"received {self.input_mode!r}")
        if self.memory_budget < 0:
            raise LTPLLError(f"--memory-budget must be >= 0 GB; received {self.memory_budget}")

    def describe(self):
        """Which images the run trains on, in words (the first line of ``ltpll train``)."""
        if self.imbalance_ratio is not None:
            n_max = self.max_per_class or "the largest class"
            return (f"long-tailed subset: rho={self.imbalance_ratio:g}, "
                    f"{self.imbalance_profile} profile, n_max={n_max}")
        if self.max_per_class is not None:
            return f"at most {self.max_per_class} images per class, no --imbalance-ratio"
        return "the whole training split, no --imbalance-ratio"


@dataclass
class ModelConfig:
    """The network and the PLL method: the chosen components, each as its own config.

    Each of ``backbone``, ``method``, ``rebalancer`` and ``weighting`` is a component's name or
    its config dict (``{"name": "lw", "beta": 0.5}``); :meth:`validate` completes it with the
    defaults of the component's declared options and checks every value.

    Attributes:
        backbone: ``resnet18``, ``resnet-small``, ``tiny``, ``resnet50`` (``{"name": "resnet50",
            "weights": "imagenet"}``), ``keras-hub:<preset>`` (``ltpll.components.names
            ("backbone")``).
        method: the PLL disambiguation method (``corr``, ``proden``, ``lw``, ``cavl``).
        rebalancer: long-tail rebalancing (``none``, ``records``, ``epoch-records``,
            ``oracle-la``, ``oracle-la-posthoc``, ``temp-oracle-la``).
        weighting: per-sample loss weighting (``none``, ``cb``, ``focal``, ``ldam``,
            ``ldam-drw``, ``meta``).
        mixup: add the Mixup term to the method's loss.
        mixup_weight: weight of the Mixup term.
        init_from: an ``ltpll pretrain`` directory whose backbone weights the run starts from.
    """

    backbone: dict | str = "resnet18"
    method: dict | str = "corr"
    rebalancer: dict | str = "none"
    weighting: dict | str = "none"
    mixup: bool = False
    mixup_weight: float = 1.0
    init_from: str | None = None

    def __post_init__(self):
        for kind in components.KINDS:
            value = getattr(self, kind)
            setattr(self, kind, {"name": value} if isinstance(value, str) else dict(value))

    def name(self, kind):
        """The chosen component of ``kind`` (``"records"``)."""
        return getattr(self, kind)["name"]

    def declaration(self, kind):
        """The :class:`ltpll.components.Component` chosen for ``kind``."""
        return components.get(kind, self.name(kind))

    @property
    def records(self):
        """True when RECORDS (momentum or per-epoch) estimates the prior."""
        return self.name("rebalancer") in ("records", "epoch-records")

    def validate(self):
        for kind in components.KINDS:
            setattr(self, kind, components.resolve(kind, getattr(self, kind)))
        if self.mixup_weight < 0:
            raise LTPLLError(f"--mixup-weight must be >= 0; received {self.mixup_weight}")


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
        seed: drives shuffling, augmentation and initialisation, and the data too (subset,
            candidates, dev set) unless the data config has its own ``data_seed``.
        precision: Keras dtype policy: ``float32``, ``mixed_bfloat16`` or ``mixed_float16``;
            ``auto`` (the default) is the fastest of them on the machine the run trains on:
            ``mixed_bfloat16`` on a CPU with native bf16, else ``float32``
            (:func:`ltpll.environment.fastest_precision`).
        steps_per_execution: training steps run per compiled call (fewer host round trips).
        confidence_dtype: storage of the N x C confidence table: ``float32`` or the compact
            ``float16`` (half the memory; see the README's Scaling section).
        jit_compile: compile the step with XLA (TensorFlow, single device); None (the default)
            chooses the fast path of the machine the run trains on: XLA on a GPU, a plain
            TensorFlow graph on a CPU (measured 1.45x to 2.7x faster there), ``jit`` on JAX
            (:func:`ltpll.environment.xla_is_faster`).
        backbone_lr_scale: the backbone's learning rate relative to the rest of the model
            (:mod:`ltpll.optimizers`): 1 trains it as the head, 0.1 fine-tunes a pretrained one
            gently, 0 freezes it (BatchNorm in inference mode, no weight decay).
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
    precision: str = "auto"
    steps_per_execution: int = 1
    confidence_dtype: str = "float32"
    jit_compile: bool | None = None
    backbone_lr_scale: float = 1.0

    def validate(self):
        if self.epochs < 1:
            raise LTPLLError(f"--epochs must be >= 1; received {self.epochs}")
        if self.batch_size < 1:
            raise LTPLLError(f"--batch-size must be >= 1; received {self.batch_size}")
        if self.lr <= 0:
            raise LTPLLError(f"--lr must be > 0; received {self.lr}")
        if self.weight_decay < 0:
            raise LTPLLError(f"--weight-decay must be >= 0; received {self.weight_decay}")
        if not self.backbone_lr_scale >= 0:  # NaN fails too
            raise LTPLLError(
                f"--backbone-lr-scale must be >= 0; received {self.backbone_lr_scale}"
            )
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
        """Checks every part, completes the components' configs and ``dev_per_class``.

        Returns:
            ``self``, so ``RunConfig(...).validate()`` can be passed on.
        """
        self.data.validate()
        self.model.validate()
        self.train.validate()
        if self.data.data_seed is None:  # saved explicitly: the data a run trained on
            self.data.data_seed = self.train.seed
        chosen = [self.model.declaration(kind) for kind in components.KINDS]
        if self.data.dev_per_class is None:
            self.data.dev_per_class = max(component.dev_per_class for component in chosen)
        for component in chosen:
            flag = f"{components.KINDS[component.kind].flag} {component.name}"
            if component.dev_per_class and self.data.dev_per_class < 1:
                raise LTPLLError(f"{flag} needs a clean dev set: --dev-per-class must be >= 1")
            if component.single_device and self.train.distribute != "none":
                raise LTPLLError(f"{flag} runs on one device; it does not support "
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
