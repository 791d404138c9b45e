"""Model assembly: a compiled :class:`PLLModel` from a run config and its prepared data.

Each component comes from its declaration in :mod:`ltpll.components`, built for the run's
:class:`~ltpll.components.BuildContext`; this module only wires them together, sets the dtype
policy and compiles.
"""

import contextlib

import keras

from ltpll import components, environment
from ltpll.data.pipeline import steps_per_epoch
from ltpll.environment import fastest_precision, xla_is_faster
from ltpll.models.pll_model import PLLModel
from ltpll.optimizers import freeze_backbone, sgd
from ltpll.representation.ssp import load_pretrained_backbone


def build_context(config, data):
    """What the data and the run tell the components (:class:`BuildContext`)."""
    return components.BuildContext(
        num_classes=data.num_classes,
        class_counts=data.class_counts,
        epochs=config.train.epochs,
        image_size=int(data.images.shape[1]),
        image_shape=tuple(data.images.shape[1:]),
        seed=config.train.seed,
        dev_images=data.dev_images,
        dev_labels=data.dev_labels,
    )


@contextlib.contextmanager
def dtype_policy(name):
    """Keras' global dtype policy set to ``name`` for the block, then restored.

    Layers take the policy current when they are created, so the model keeps it afterwards; the
    confidence table, RECORDS state, augmentation and logits stay float32 whatever the policy.
    Under ``mixed_float16`` ``compile`` wraps the optimizer in a LossScaleOptimizer.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def initial_backbone(model_config, context):
    """The run's backbone: freshly initialised, or loaded from ``--init-from DIR``.

    Raises:
        LTPLLError: for a pretrain directory that does not fit the backbone or the images.
    """
    backbone = components.build("backbone", model_config.backbone, context)
    if model_config.init_from:
        load_pretrained_backbone(backbone, model_config.init_from,
                                 model_config.name("backbone"), context.image_size)
    return backbone


def backbone_reads_files(model_config):
    """Whether building the run's backbone reads files or the network: ``--init-from``, or a
    backbone option away from its default (``--pretrained imagenet`` or a weights file, a
    keras-hub preset). ``train`` then builds it once before the run directory exists, so a
    missing file or a failed download leaves no half-started run behind."""
    backbone = model_config.declaration("backbone")
    return bool(model_config.init_from) or model_config.backbone != backbone.resolve({})


def build_model(config, data, mean, std):
    """The compiled PLLModel of a run, under its dtype policy (:func:`use_precision`)."""
    with dtype_policy(use_precision(config.train)):
        context = build_context(config, data)
        model = PLLModel(
            initial_backbone(config.model, context),
            num_classes=data.num_classes,
            num_samples=len(data.labels),
            image_shape=data.images.shape[1:],
            method=config.model.method,
            rebalancer=components.build("rebalancer", config.model.rebalancer, context),
            mean=mean,
            std=std,
            weight_decay=config.train.weight_decay,
            seed=config.train.seed,
            mixup=config.model.mixup,
            mixup_weight=config.model.mixup_weight,
            confidence_dtype=config.train.confidence_dtype,
            weighting=components.build("weighting", config.model.weighting, context),
        )
        model.set_candidates(data.candidates)
        compile_model(model, config, len(data.labels))
    return model


def compile_model(model, config, num_samples):
    """SGD with momentum (cosine decay if asked) over the run's steps, as the config says; the
    backbone at ``--backbone-lr-scale`` times the learning rate (0: frozen, see
    :mod:`ltpll.optimizers`)."""
    train = config.train
    steps = steps_per_epoch(num_samples, train.batch_size)
    learning_rate = train.lr
    if train.cosine:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            train.lr, decay_steps=max(1, train.epochs * steps), alpha=1e-3
        )
    if train.backbone_lr_scale == 0:
        freeze_backbone(model)
    model.compile(
        optimizer=sgd(learning_rate, train.momentum, train.backbone_lr_scale),
        jit_compile=use_jit(train),
        steps_per_execution=steps_per_execution(steps, train.steps_per_execution),
    )


def use_jit(train):
    """Whether the run's step is XLA-compiled (``jit`` on JAX): ``--jit``/``--no-jit`` if given,
    else the machine's fast path (:func:`ltpll.environment.xla_is_faster`). XLA cannot place one
    program across mirrored replicas' devices, so under a distribution strategy the step runs as
    a (non-XLA) TensorFlow graph."""
    if train.distribute != "none":
        return False
    return xla_is_faster() if train.jit_compile is None else bool(train.jit_compile)


def use_precision(train):
    """The run's dtype policy: ``--precision`` if given, else (``auto``) the machine's fastest
    (:func:`ltpll.environment.fastest_precision`)."""
    return fastest_precision() if train.precision == "auto" else train.precision


def describe_precision(train):
    """The run's dtype policy, in words, for the first lines of ``ltpll train``."""
    chosen = use_precision(train)
    if train.precision == "auto" and chosen == "mixed_bfloat16":
        return "precision: mixed_bfloat16 (native bf16 here; --precision float32 for float32)"
    return f"precision: {chosen}"


def describe_step(train):
    """How the step is compiled, in words, for the first lines of ``ltpll train``."""
    chosen = use_jit(train)
    if keras.backend.backend() == "jax":
        if not chosen:
            return "training step: JAX without jit (--no-jit)"
        if environment.jax_runs_on_cpu() and environment.tensorflow_available():
            # XLA:CPU's convolutions: the JAX step measured 2-2.4x slower (README, Backends)
            return "training step: jax.jit (on a CPU KERAS_BACKEND=tensorflow runs ~2x faster)"
        return "training step: jax.jit"
    name = "XLA" if chosen else "TensorFlow graph, no XLA"
    if train.jit_compile is not None or train.distribute != "none":
        return f"training step: {name}"
    why = "the fast path on a GPU" if chosen else "faster on a CPU; --jit for XLA"
    return f"training step: {name} ({why})"


def steps_per_execution(steps_per_epoch, requested):
    """The largest divisor of the epoch's steps not above ``requested``.

    Keras runs whole executions: with 10 steps per epoch and 3 steps per execution, the fourth
    execution would take two batches of the next epoch, shifting every later epoch's batches
    (and the epoch-wise switches such as ``--update-start``). A divisor keeps epochs aligned.
    """
    return max(d for d in range(1, max(1, min(requested, steps_per_epoch)) + 1)
               if steps_per_epoch % d == 0)
