"""Builds the pieces of a run from a :class:`~ltpll.config.RunConfig` and trains it.

``train(config)`` is the whole job behind ``ltpll train``:

1. load the training and test splits, make the long-tailed subset and its candidate sets
   (:func:`prepare_data`, all numpy, once);
2. build the backbone and :class:`PLLModel` (under a distribution strategy if asked);
3. fit with the callbacks that switch confidence updates on, log the RECORDS prior, evaluate on
   the test split every ``eval_every`` epochs, checkpoint, and write history and TensorBoard logs;
4. save the run directory (layout in :data:`RUN_FILES`) that ``ltpll evaluate`` reloads.
"""

import contextlib
import csv
import dataclasses
import importlib.util
import os
import shutil
import tempfile
import time

import keras
import numpy as np

from ltpll import distribution
from ltpll import metrics as metric_fns
from ltpll.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    remove_checkpoints,
    save_checkpoint,
)
from ltpll.config import RunConfig
from ltpll.data import candidates as candidate_sets
from ltpll.data import longtail
from ltpll.data.devset import hold_out_dev
from ltpll.data.pipeline import steps_per_epoch
from ltpll.data.sources import load_split
from ltpll.errors import LTPLLError
from ltpll.fileio import atomic_path, read_json, write_json
from ltpll.models.backbones import build_backbone
from ltpll.models.pll_model import PLLModel, UpdateStart
from ltpll.rebalancing import PriorLog, make_rebalancer
from ltpll.rebalancing.reweighting import (
    EstimateClassCounts,
    LossWeighting,
    WeightingStart,
    estimated_class_counts,
)

# What a finished run directory holds.
RUN_FILES = {
    "config": "config.json",          # the RunConfig
    "model": "model.keras",           # weights, confidence table, RECORDS feature mean
    "history": "history.csv",         # one row per epoch: loss, acc, prior_l2, test metrics
    "class_counts": "class_counts.json",  # per-class training counts of the LT subset
    "candidates": "candidates.csv",   # the training candidate sets (path,candidates)
    "prior": "prior.json",            # the prior the rebalancer used, per epoch
    "metrics": "metrics.json",        # final test metrics
    "tensorboard": "tensorboard",     # TensorBoard logs
    "checkpoint": "checkpoint",       # while training: the last complete epoch (ltpll.checkpoint)
}

EVAL_BATCH_SIZE = 512


def tensorflow_available():
    return importlib.util.find_spec("tensorflow") is not None


@dataclasses.dataclass
class TrainingData:
    """The LT-PLL training set and the test split, as numpy arrays."""

    images: np.ndarray          # uint8 [N, H, W, 3]
    candidates: np.ndarray      # float32 [N, C] multi-hot
    labels: np.ndarray          # int [N] hidden true labels (-1 where unknown)
    paths: list                 # source path of each training image
    class_names: list
    class_counts: np.ndarray    # [C] training images per class (true labels)
    test_images: np.ndarray
    test_labels: np.ndarray
    # Indices into the training split of the images used neither for training nor as the dev
    # set (the offline unlabeled pool of `ltpll pseudo-label`).
    unused_index: np.ndarray = None
    # The held-out balanced dev set (``--dev-per-class``), with true labels; empty without one.
    dev_images: np.ndarray = None
    dev_labels: np.ndarray = None

    @property
    def num_classes(self):
        return len(self.class_names)


def prepare_data(data_config, seed, log=print):
    """Loads the splits, subsamples the long tail and makes or loads the candidate sets.

    Args:
        data_config: a validated :class:`~ltpll.config.DataConfig`.
        seed: the run's seed; subsampling uses it, candidate generation uses ``seed + 1``.
        log: where to print the class counts and candidate statistics.

    Raises:
        LTPLLError: for any problem with the data.
    """
    train = load_split(data_config.dataset, data_config.train_split, data_config.image_size,
                       strict=data_config.strict)
    test = load_split(data_config.dataset, data_config.test_split, data_config.image_size,
                      strict=data_config.strict)
    for split, image_set in ((data_config.train_split, train), (data_config.test_split, test)):
        if image_set.skipped:
            log(f"skipped {len(image_set.skipped)} unreadable image(s) of the {split} split, "
                f"e.g. {image_set.skipped[0]} (--strict makes this an error)")
    if test.images.shape[1:] != train.images.shape[1:]:
        raise LTPLLError(
            f"test images are {test.images.shape[1:3]} but training images are "
            f"{train.images.shape[1:3]}; pass --image-size to resize both"
        )
    if list(test.class_names) != list(train.class_names):
        test = _align_test_classes(train.class_names, test)
    num_classes = len(train.class_names)
    _check_every_class_tested(train.class_names, test.labels, data_config.test_split)

    user_candidates = None
    if data_config.candidates:
        user_candidates = candidate_sets.load_candidate_file(
            data_config.candidates, train.class_names, train.paths, ignore_paths=train.skipped
        )

    keep = np.arange(len(train.labels))
    if data_config.imbalance_ratio is not None:
        n_max = data_config.max_per_class or int(np.bincount(train.labels, minlength=num_classes).max())
        counts = longtail.class_counts(
            n_max, num_classes, data_config.imbalance_ratio, data_config.imbalance_profile
        )
        order = longtail.shuffled_class_order(num_classes, seed) if data_config.hierarchical else None
        keep = longtail.longtail_indices(train.labels, counts, seed, class_order=order)
    dev_index = np.zeros(0, dtype=np.int64)
    if data_config.dev_per_class:
        dev_index, keep = hold_out_dev(train.labels, keep, data_config.dev_per_class,
                                       num_classes, seed, class_names=train.class_names)
        log(f"dev set: {len(dev_index)} images ({data_config.dev_per_class} per class) held out "
            "of training")

    labels = train.labels[keep]
    if user_candidates is not None:
        candidates = user_candidates[keep]
    elif data_config.hierarchical:
        if train.superclass_of is None:
            raise LTPLLError(
                f"--hierarchical needs superclasses, which {data_config.dataset!r} does not have"
            )
        candidates = candidate_sets.hierarchical_candidates(
            labels, train.superclass_of, data_config.partial_rate, seed + 1
        )
    else:
        candidates = candidate_sets.uniform_candidates(
            labels, num_classes, data_config.partial_rate, seed + 1
        )

    class_counts = np.bincount(labels, minlength=num_classes)
    stats = candidate_sets.candidate_stats(candidates, labels)
    log(f"training set: {len(keep)} images in {num_classes} classes; per-class counts "
        f"{class_counts.tolist()}")
    log(f"candidate sets: mean size {stats['mean_size']:.3f}")
    unused = np.ones(len(train.labels), dtype=bool)
    unused[keep] = unused[dev_index] = False
    data = TrainingData(
        images=train.images[keep],
        candidates=candidates.astype(np.float32),
        labels=labels,
        paths=[train.paths[i] for i in keep],
        class_names=list(train.class_names),
        class_counts=class_counts,
        test_images=test.images,
        test_labels=test.labels,
        unused_index=np.flatnonzero(unused),
        dev_images=train.images[dev_index],
        dev_labels=train.labels[dev_index],
    )
    if data_config.pseudo_labels:
        data = _with_pseudo_labels(data, data_config.pseudo_labels, log)
    return data


def _with_pseudo_labels(data, path, log):
    """Appends the images of an ``ltpll pseudo-label`` file as single-candidate samples.

    Their hidden label is -1 (unknown): training accuracy and the class counts (which define
    Many/Medium/Few and the oracle baselines) stay those of the labelled set.
    """
    from ltpll.representation.pseudo_label import load_pseudo_labels

    images, labels, paths = load_pseudo_labels(path, data.class_names, data.images.shape[1:])
    log(f"pseudo-labels: {len(labels)} extra single-candidate images from {path}; per class "
        f"{np.bincount(labels, minlength=data.num_classes).tolist()}")
    one_hot = np.eye(data.num_classes, dtype=np.float32)[labels]
    return dataclasses.replace(
        data,
        images=np.concatenate([data.images, images]),
        candidates=np.concatenate([data.candidates, one_hot]),
        labels=np.concatenate([data.labels, np.full(len(labels), -1, dtype=data.labels.dtype)]),
        paths=data.paths + [f"pseudo:{p}" for p in paths],
    )


def _check_every_class_tested(class_names, test_labels, split):
    """Per-class and Many/Medium/Few accuracy need test images of every class."""
    missing = [name for c, name in enumerate(class_names) if not np.any(test_labels == c)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise LTPLLError(
            f"the {split} split has no images of class(es) {shown}, which the training split has; "
            "every class needs test images"
        )


def _align_test_classes(train_classes, test):
    """Relabels a test split whose class list is a subset of the training classes."""
    index_of = {name: i for i, name in enumerate(train_classes)}
    unknown = [name for name in test.class_names if name not in index_of]
    if unknown:
        raise LTPLLError(f"test split has classes not in the training split: {', '.join(unknown)}")
    mapping = np.array([index_of[name] for name in test.class_names])
    return dataclasses.replace(test, labels=mapping[test.labels], class_names=list(train_classes))


def channel_statistics(images):
    """Per-channel mean and std of uint8 images, in [0, 1] units (for normalisation)."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return tuple(pixels.mean(axis=0).tolist()), tuple(np.maximum(pixels.std(axis=0), 1e-3).tolist())


def make_strategy(distribute):
    """The tf.distribute strategy for ``--distribute`` (None for a single device).

    ``mirrored``: MirroredStrategy over the local GPUs. ``multi-worker``:
    MultiWorkerMirroredStrategy over the cluster in ``TF_CONFIG``; it must be created before any
    other TensorFlow op of the process, so :func:`train` and :func:`resume` call this first.

    Raises:
        LTPLLError: without the TensorFlow backend, or with a missing or invalid ``TF_CONFIG``.
    """
    if distribute == "none":
        return None
    if keras.backend.backend() != "tensorflow":
        raise LTPLLError(f"--distribute {distribute} needs the TensorFlow backend "
                         "(KERAS_BACKEND=tensorflow)")
    if distribute == "multi-worker":
        return distribution.multi_worker_strategy()
    import tensorflow as tf

    return tf.distribute.MirroredStrategy()


def build_rebalancer(model_config, class_counts, epochs):
    """The rebalancer layer a run's ``--rebalance`` asks for."""
    ramp = model_config.la_ramp_epochs or max(1, epochs // 2)
    return make_rebalancer(
        model_config.rebalance, class_counts=class_counts, momentum=model_config.records_momentum,
        tau=model_config.la_tau, ramp_epochs=ramp,
    )


def build_model(config, data, mean, std):
    """The compiled PLLModel for a run, and the callbacks its rebalancer needs during fit."""
    with dtype_policy(config.train.precision):
        return _build_model(config, data, mean, std)


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


def build_weighting(config, data):
    """The LossWeighting layer a run's ``--loss-weighting`` asks for."""
    model_config = config.model
    return LossWeighting(
        model_config.loss_weighting, num_classes=data.num_classes, cb_beta=model_config.cb_beta,
        focal_gamma=model_config.focal_gamma, scale=model_config.ldam_scale,
        oracle_counts=data.class_counts.tolist() if model_config.oracle_counts else None,
        dev_size=len(data.dev_labels), image_shape=data.images.shape[1:],
        dev_batch=model_config.dev_batch, seed=config.train.seed + 3, name="loss_weighting",
    )


def initial_backbone(model_config, image_size):
    """The run's backbone: freshly initialised, or loaded from ``--init-from DIR``."""
    backbone = build_backbone(model_config.backbone, image_size=image_size)
    if model_config.init_from:
        from ltpll.representation.ssp import load_pretrained_backbone

        load_pretrained_backbone(backbone, model_config.init_from, model_config.backbone,
                                 image_size)
    return backbone


def weighting_callbacks(config):
    """What moves the loss weighting during fit: per-epoch class-count estimates, the start."""
    if config.model.loss_weighting == "none":
        return []
    return [EstimateClassCounts(),
            WeightingStart(config.model.weighting_start(config.train.epochs))]


def _build_model(config, data, mean, std):
    rebalancer = build_rebalancer(config.model, data.class_counts, config.train.epochs)
    weighting = build_weighting(config, data)
    backbone = initial_backbone(config.model, int(data.images.shape[1]))
    model = PLLModel(
        backbone,
        num_classes=data.num_classes,
        num_samples=len(data.labels),
        image_shape=data.images.shape[1:],
        method=config.model.method_config(),
        rebalancer=rebalancer,
        mean=mean,
        std=std,
        weight_decay=config.train.weight_decay,
        seed=config.train.seed,
        mixup=config.model.mixup,
        mixup_weight=config.model.mixup_weight,
        confidence_dtype=config.train.confidence_dtype,
        weighting=weighting,
        head="cosine" if weighting.uses_margins else "linear",
    )
    model.set_candidates(data.candidates)
    if weighting.is_meta:
        weighting.set_dev(data.dev_images, data.dev_labels)
    steps = steps_per_epoch(len(data.labels), config.train.batch_size)
    learning_rate = config.train.lr
    if config.train.cosine:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.train.lr, decay_steps=max(1, config.train.epochs * steps), alpha=1e-3
        )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=config.train.momentum),
        # XLA cannot place one program across mirrored replicas' devices; under
        # MirroredStrategy the step runs as a (non-XLA) TensorFlow graph instead.
        jit_compile=config.train.jit_compile and config.train.distribute == "none",
        steps_per_execution=steps_per_execution(steps, config.train.steps_per_execution),
    )
    return model, rebalancer.callbacks()


def steps_per_execution(steps_per_epoch, requested):
    """The largest divisor of the epoch's steps not above ``requested``.

    Keras runs whole executions: with 10 steps per epoch and 3 steps per execution, the fourth
    execution would take two batches of the next epoch, shifting every later epoch's batches
    (and the epoch-wise switches such as ``--update-start``). A divisor keeps epochs aligned.
    """
    return max(d for d in range(1, max(1, min(requested, steps_per_epoch)) + 1)
               if steps_per_epoch % d == 0)


def train_batches(images, candidates, labels, batch_size, seed, epochs, initial_epoch=0):
    """The training input and its steps per epoch: tf.data when TensorFlow is installed, else a
    numpy PyDataset. Epoch ``e``'s order depends only on ``(seed, e)``, so a resumed run sees
    the batches an uninterrupted one would."""
    from ltpll.data.pipeline import PLLBatches, train_dataset

    labels = np.asarray(labels).astype(np.int32)
    steps = steps_per_epoch(len(labels), batch_size)
    if tensorflow_available():
        return train_dataset(images, candidates, labels, batch_size, seed,
                             epochs=epochs, initial_epoch=initial_epoch), steps
    return PLLBatches(images, candidates, labels, batch_size, seed,
                      initial_epoch=initial_epoch), steps


def predict_logits(model, images, batch_size=EVAL_BATCH_SIZE):
    """Debiased logits of a uint8 image array, batch by batch."""
    return np.asarray(model.predict(images, batch_size=batch_size, verbose=0))


class EvaluateEvery(keras.callbacks.Callback):
    """Evaluates on the test split every ``every`` epochs and after the last one.

    Adds ``test_top1``, ``test_top5``, ``test_many``, ``test_medium`` and ``test_few`` to the
    epoch logs, so the history CSV, TensorBoard and the progress display all show them.
    """

    def __init__(self, images, labels, class_counts, every, epochs):
        super().__init__()
        self.images, self.labels, self.class_counts = images, labels, class_counts
        self.every, self.epochs = every, epochs
        self.last = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every and epoch + 1 != self.epochs:
            return
        self.last = metric_fns.evaluate_logits(
            predict_logits(self.model, self.images), self.labels, self.class_counts
        )
        if logs is not None:
            for key in ("top1", "top5", "many", "medium", "few"):
                value = self.last[key]
                logs[f"test_{key}"] = float("nan") if value is None else value


class HistoryLog(keras.callbacks.Callback):
    """Writes one CSV row per epoch, rewriting the file atomically each time.

    Unlike Keras' CSVLogger, columns are the union of every epoch's keys (test metrics appear
    only on evaluation epochs) and no empty ``val_*`` columns are invented.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns, restval="")
                writer.writeheader()
                writer.writerows(self.rows)


class Checkpoint(keras.callbacks.Callback):
    """Checkpoints the whole training state at the end of every epoch (see ltpll.checkpoint).

    Runs last among the callbacks, so the history row, prior log and test metrics of the epoch
    are part of the state it saves.
    """

    def __init__(self, run_dir, history, prior_log, evaluator, clock):
        super().__init__()
        self.run_dir = run_dir
        self.history, self.prior_log, self.evaluator, self.clock = (
            history, prior_log, evaluator, clock)

    def on_epoch_end(self, epoch, logs=None):
        save_checkpoint(self.run_dir, self.model, epoch + 1, {
            "history": self.history.rows,
            "prior": self.prior_log.history,
            "last_test": self.evaluator.last,
            "train_seconds": self.clock.seconds(),
        })


class StopOnNaN(keras.callbacks.Callback):
    """Stops when an epoch's loss is NaN or infinite, naming the epoch; the checkpoint of the
    last good epoch stays on disk for ``--resume`` (after lowering the learning rate, say).

    It checks the epoch's mean loss (a NaN batch makes it NaN) rather than every batch, so it
    adds no per-batch host round trip; it runs before the checkpoint callback, so the broken
    weights are never saved.
    """

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            _, kept = latest_checkpoint(self.run_dir)
            kept_text = (f"the checkpoint of epoch {kept} is kept in {self.run_dir}" if kept
                         else "no epoch had completed, so there is no checkpoint")
            raise LTPLLError(
                f"the loss became {float(loss)} in epoch {epoch + 1}; training stopped and "
                f"{kept_text}"
            )


class _Clock:
    """Training seconds, carried across a resume."""

    def __init__(self, before=0.0):
        self.before, self.started = before, time.time()

    def seconds(self):
        return self.before + time.time() - self.started


def save_model(model, path):
    with atomic_path(path) as tmp:
        model.save(tmp)


def run_status(path):
    """``"none"``, ``"finished"`` or ``"unfinished"`` for a directory that may hold a run."""
    if not os.path.exists(os.path.join(path, RUN_FILES["config"])):
        return "none"
    return "finished" if os.path.exists(os.path.join(path, RUN_FILES["metrics"])) else "unfinished"


def check_output_directory(path):
    """Refuses to overwrite an existing run, and says how to continue an unfinished one."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise LTPLLError(f"--output {path} exists and is not a directory")
    status = run_status(path)
    if status == "finished":
        raise LTPLLError(f"{path} already holds a finished run; choose another --output or "
                         "delete it")
    if status == "unfinished":
        _, epoch = latest_checkpoint(path)
        raise LTPLLError(
            f"{path} holds an unfinished run (last complete epoch: {epoch}); continue it with "
            f"`ltpll train --resume {path}`, or choose another --output"
        )


def train(config, callbacks=(), log=print):
    """Runs a whole training job and writes its run directory.

    Args:
        config: a :class:`RunConfig`.
        callbacks: extra Keras callbacks (the CLI adds its rich progress display here).
        log: function for one-line progress messages.

    Returns:
        ``(model, final_metrics)``.

    Raises:
        LTPLLError: for bad configuration or data (nothing is written then), or a NaN loss.
    """
    config.validate()
    # First of all: MultiWorkerMirroredStrategy needs to exist before any TensorFlow op runs.
    strategy = make_strategy(config.train.distribute)
    chief = distribution.is_chief(strategy)
    if chief:
        check_output_directory(config.output)
    else:
        _log_not_chief(config.output, log)
    keras.utils.set_random_seed(config.train.seed)
    data = prepare_data(config.data, config.train.seed, log=log)
    if len(data.labels) < config.train.batch_size:
        raise LTPLLError(
            f"--batch-size {config.train.batch_size} is larger than the training set "
            f"({len(data.labels)} images)"
        )
    mean, std = channel_statistics(data.images)
    if config.model.init_from:  # a bad --init-from fails here, before the run directory exists
        initial_backbone(config.model, int(data.images.shape[1]))
    if not chief:  # the chief writes the run directory; this worker only trains along
        return _fit(config, data, lambda: build_model(config, data, mean, std)[0], None,
                    callbacks, strategy)

    out = config.output
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, RUN_FILES["class_counts"]), {
        "class_names": data.class_names,
        "counts": data.class_counts.tolist(),
    })
    candidate_sets.save_candidate_file(
        os.path.join(out, RUN_FILES["candidates"]), data.candidates, data.class_names, data.paths
    )
    # config.json last: its presence marks the directory as a run (finished or resumable).
    write_json(os.path.join(out, RUN_FILES["config"]), config.to_dict())
    return _fit(config, data, lambda: build_model(config, data, mean, std)[0], None, callbacks,
                strategy)


def resume(run_dir, callbacks=(), log=print):
    """Continues an unfinished run from its last complete epoch.

    Everything comes from the run directory: the configuration, the data (rebuilt with the same
    seed and checked against the saved class counts) and the latest checkpoint. A run that died
    before its first epoch completed starts its training over.

    Returns:
        ``(model, final_metrics)``, as :func:`train`.

    Raises:
        LTPLLError: if the directory holds no run, a finished one, or an unreadable checkpoint.
    """
    status = run_status(run_dir)
    if status == "none":
        raise LTPLLError(f"{run_dir} holds no ltpll run to resume")
    if status == "finished":
        raise LTPLLError(f"{run_dir} has already finished; nothing to resume")
    config = RunConfig.from_dict(read_json(os.path.join(run_dir, RUN_FILES["config"])))
    config.output = run_dir
    config.validate()
    # Before any TensorFlow op (see train). Under multi-worker every worker reads the run
    # directory, so it must be at this path on each (a shared file system).
    strategy = make_strategy(config.train.distribute)
    if not distribution.is_chief(strategy):
        _log_not_chief(run_dir, log)
    keras.utils.set_random_seed(config.train.seed)
    data = prepare_data(config.data, config.train.seed, log=log)
    saved = read_json(os.path.join(run_dir, RUN_FILES["class_counts"]))
    if saved["counts"] != data.class_counts.tolist():
        raise LTPLLError(f"the data of {run_dir} changed since it was trained "
                         f"({config.data.dataset}); it cannot be resumed")
    path, epoch = latest_checkpoint(run_dir)
    if path is None:
        mean, std = channel_statistics(data.images)
        return _fit(config, data, lambda: build_model(config, data, mean, std)[0], None,
                    callbacks, strategy)
    log(f"resuming {run_dir} after epoch {epoch} of {config.train.epochs}")
    return _fit(config, data, None, path, callbacks, strategy)


def _log_not_chief(run_dir, log):
    log(f"this worker is not the chief: the chief writes {run_dir}; this worker's own files go "
        "to a temporary directory that is deleted at the end")


def _fit(config, data, build, checkpoint_path, callbacks, strategy=None):
    """Fits a new model (``build()``) or a checkpointed one, then writes the final files.

    Under MultiWorkerMirroredStrategy only the chief writes into the run directory. The other
    workers run exactly the same callbacks, evaluations and saves (all of them take part in the
    collective ops those contain, so skipping one would stall the cluster), into a temporary
    directory that is deleted at the end.
    """
    with distribution.worker_failures_as_errors(strategy):
        if distribution.is_chief(strategy):
            return _fit_into(config.output, config, data, build, checkpoint_path, callbacks,
                             strategy)
        scratch = tempfile.mkdtemp(prefix="ltpll-worker-")
        try:
            return _fit_into(scratch, config, data, build, checkpoint_path, callbacks, strategy)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _fit_into(out, config, data, build, checkpoint_path, callbacks, strategy):
    scope = strategy.scope() if strategy is not None else _null_scope()
    with scope:
        if checkpoint_path is None:
            model, state = build(), {"epoch": 0}
        else:
            model, state = load_checkpoint(checkpoint_path)
        initial_epoch = int(state["epoch"])
        evaluator = EvaluateEvery(
            data.test_images, data.test_labels, data.class_counts,
            config.train.eval_every, config.train.epochs,
        )
        evaluator.last = state.get("last_test")
        prior_log = PriorLog(data.class_counts, os.path.join(out, RUN_FILES["prior"]))
        prior_log.history = list(state.get("prior", []))
        history = HistoryLog(os.path.join(out, RUN_FILES["history"]))
        history.rows = list(state.get("history", []))
        clock = _Clock(state.get("train_seconds", 0.0))
        fit_callbacks = [
            StopOnNaN(out),
            UpdateStart(config.train.update_start),
            *model.rebalancer.callbacks(),
            *weighting_callbacks(config),
            prior_log,
            evaluator,
        ]
        if tensorflow_available():
            fit_callbacks.append(
                keras.callbacks.TensorBoard(os.path.join(out, RUN_FILES["tensorboard"]))
            )
        fit_callbacks += [*callbacks, history, Checkpoint(out, history, prior_log, evaluator,
                                                          clock)]
        if initial_epoch < config.train.epochs:
            batches, steps = train_batches(
                data.images, data.candidates, data.labels, config.train.batch_size,
                config.train.seed + 2, config.train.epochs, initial_epoch,
            )
            if config.train.distribute == "multi-worker":
                # Each worker takes its slice of every global batch (ltpll.distribution).
                batches = distribution.shard_global_batches(batches)
            model.fit(
                batches,
                epochs=config.train.epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps,
                callbacks=fit_callbacks,
                shuffle=False,  # the pipeline orders each epoch itself
                verbose=0,
            )
    elapsed = clock.seconds()

    save_model(model, os.path.join(out, RUN_FILES["model"]))
    final = dict(evaluator.last or metric_fns.evaluate_logits(
        predict_logits(model, data.test_images), data.test_labels, data.class_counts
    ))
    final["train_seconds"] = elapsed
    final["class_names"] = data.class_names
    final["estimated_prior"] = model.estimated_prior().tolist()
    final["prior_l2"] = metric_fns.prior_distance(final["estimated_prior"], data.class_counts)
    if model.weighting.kind != "none":
        final["class_weights"] = keras.ops.convert_to_numpy(model.weighting.class_weights).tolist()
        final["estimated_class_counts"] = estimated_class_counts(model.confidence).tolist()
    write_json(os.path.join(out, RUN_FILES["metrics"]), final)
    remove_checkpoints(out)
    return model, final


class _null_scope:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def load_run(run_dir):
    """Reads a run directory's config, class counts and model.

    Raises:
        LTPLLError: if the directory is missing, unfinished or from another ltpll version.
    """
    if not os.path.isdir(run_dir):
        raise LTPLLError(f"run directory {run_dir} does not exist")
    paths = {key: os.path.join(run_dir, name) for key, name in RUN_FILES.items()}
    for key in ("config", "class_counts", "model"):
        if not os.path.exists(paths[key]):
            raise LTPLLError(f"{run_dir} is not a finished ltpll run (no {RUN_FILES[key]})")
    config = RunConfig.from_dict(read_json(paths["config"]))
    counts = read_json(paths["class_counts"])
    model = keras.saving.load_model(paths["model"])
    return config, counts, model


def evaluate(run_dir, dataset=None, split=None, batch_size=EVAL_BATCH_SIZE, output=None):
    """Evaluates a finished run on its test split (or another dataset with the same classes).

    Args:
        run_dir: the run directory written by :func:`train`.
        dataset: another dataset spec to evaluate on (default: the run's own).
        split: the split to evaluate (default: the run's test split).
        output: where to write the metrics JSON (default ``RUN/metrics.json`` for the run's own
            test split, nothing otherwise unless given).

    Returns:
        The metrics dict (see :func:`ltpll.metrics.evaluate_logits`) plus ``class_names``.
    """
    config, counts, model = load_run(run_dir)
    image_size = int(model.image_shape[0])
    test = load_split(
        dataset or config.data.dataset, split or config.data.test_split,
        image_size if (config.data.image_size or dataset) else None,
        strict=config.data.strict,
    )
    if test.images.shape[1:] != tuple(model.image_shape):
        raise LTPLLError(
            f"images are {test.images.shape[1:3]}, the model expects {tuple(model.image_shape[:2])}"
        )
    if list(test.class_names) != list(counts["class_names"]):
        test = _align_test_classes(counts["class_names"], test)
    result = metric_fns.evaluate_logits(
        predict_logits(model, test.images, batch_size), test.labels, counts["counts"]
    )
    result["class_names"] = counts["class_names"]
    result["estimated_prior"] = model.estimated_prior().tolist()
    if output is None and dataset is None and split is None:
        output = os.path.join(run_dir, RUN_FILES["metrics"])
        if os.path.exists(output):
            # Keep what only training knows (train_seconds); replace every measured value.
            result = {**read_json(output), **result}
    if output:
        write_json(output, result)
    return result
