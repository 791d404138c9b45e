"""Builds the pieces of a run from a :class:`~ltpll.config.RunConfig` and trains it.

``train(config)`` is the whole job behind ``ltpll train``:

1. load the training and test splits, make the long-tailed subset and its candidate sets
   (:func:`prepare_data`, all numpy, once);
2. build the backbone and :class:`PLLModel` (under a distribution strategy if asked);
3. fit with the callbacks that switch confidence updates on, log the RECORDS prior, evaluate on
   the test split every ``eval_every`` epochs, checkpoint, and write history and TensorBoard logs;
4. save the run directory (layout in :data:`RUN_FILES`) that ``ltpll evaluate`` reloads.
"""

import csv
import dataclasses
import importlib.util
import os
import time

import keras
import numpy as np

from ltpll import metrics as metric_fns
from ltpll.config import RunConfig
from ltpll.data import candidates as candidate_sets
from ltpll.data import longtail
from ltpll.data.sources import load_split
from ltpll.errors import LTPLLError
from ltpll.fileio import atomic_path, read_json, write_json
from ltpll.models.backbones import build_backbone
from ltpll.models.pll_model import PLLModel, UpdateStart
from ltpll.rebalancing import PriorLog, make_rebalancer

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
    train = load_split(data_config.dataset, data_config.train_split, data_config.image_size)
    test = load_split(data_config.dataset, data_config.test_split, data_config.image_size)
    if test.images.shape[1:] != train.images.shape[1:]:
        raise LTPLLError(
            f"test images are {test.images.shape[1:3]} but training images are "
            f"{train.images.shape[1:3]}; pass --image-size to resize both"
        )
    if list(test.class_names) != list(train.class_names):
        test = _align_test_classes(train.class_names, test)
    num_classes = len(train.class_names)

    user_candidates = None
    if data_config.candidates:
        user_candidates = candidate_sets.load_candidate_file(
            data_config.candidates, train.class_names, train.paths
        )

    keep = np.arange(len(train.labels))
    if data_config.imbalance_ratio is not None:
        n_max = data_config.max_per_class or int(np.bincount(train.labels, minlength=num_classes).max())
        counts = longtail.class_counts(
            n_max, num_classes, data_config.imbalance_ratio, data_config.imbalance_profile
        )
        order = longtail.shuffled_class_order(num_classes, seed) if data_config.hierarchical else None
        keep = longtail.longtail_indices(train.labels, counts, seed, class_order=order)

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
    return TrainingData(
        images=train.images[keep],
        candidates=candidates.astype(np.float32),
        labels=labels,
        paths=[train.paths[i] for i in keep],
        class_names=list(train.class_names),
        class_counts=class_counts,
        test_images=test.images,
        test_labels=test.labels,
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
    """The tf.distribute strategy for ``--distribute`` (None for a single device)."""
    if distribute == "none":
        return None
    if keras.backend.backend() != "tensorflow":
        raise LTPLLError("--distribute mirrored needs the TensorFlow backend (KERAS_BACKEND=tensorflow)")
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
    rebalancer = build_rebalancer(config.model, data.class_counts, config.train.epochs)
    model = PLLModel(
        build_backbone(config.model.backbone, image_size=data.images.shape[1]),
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
    )
    model.set_candidates(data.candidates)
    steps_per_epoch = len(data.labels) // min(config.train.batch_size, len(data.labels))
    learning_rate = config.train.lr
    if config.train.cosine:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.train.lr, decay_steps=max(1, config.train.epochs * steps_per_epoch), alpha=1e-3
        )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=config.train.momentum),
        # XLA cannot place one program across mirrored replicas' devices; under
        # MirroredStrategy the step runs as a (non-XLA) TensorFlow graph instead.
        jit_compile=config.train.distribute == "none",
    )
    return model, rebalancer.callbacks()


def train_batches(data, batch_size, seed):
    """The training input: tf.data when TensorFlow is installed, else a numpy PyDataset."""
    labels = data.labels.astype(np.int32)
    if tensorflow_available():
        from ltpll.data.pipeline import train_dataset

        return train_dataset(data.images, data.candidates, labels, batch_size, seed)
    from ltpll.data.pipeline import PLLBatches

    return PLLBatches(data.images, data.candidates, labels, batch_size, seed)


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


class SaveModel(keras.callbacks.Callback):
    """Saves the model (atomically) every ``every`` epochs, so a crash loses little."""

    def __init__(self, path, every):
        super().__init__()
        self.path, self.every = path, every

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            save_model(self.model, self.path)


def save_model(model, path):
    with atomic_path(path) as tmp:
        model.save(tmp)


def check_output_directory(path):
    """Refuses to overwrite an existing run."""
    if os.path.exists(os.path.join(path, RUN_FILES["config"])):
        raise LTPLLError(f"{path} already holds a run; choose another --output or delete it")
    if os.path.exists(path) and not os.path.isdir(path):
        raise LTPLLError(f"--output {path} exists and is not a directory")


def train(config, callbacks=(), log=print):
    """Runs a whole training job and writes its run directory.

    Args:
        config: a :class:`RunConfig`.
        callbacks: extra Keras callbacks (the CLI adds its rich progress display here).
        log: function for one-line progress messages.

    Returns:
        ``(model, final_metrics)``.

    Raises:
        LTPLLError: for bad configuration or data; nothing is written in that case.
    """
    config.validate()
    check_output_directory(config.output)
    keras.utils.set_random_seed(config.train.seed)
    data = prepare_data(config.data, config.train.seed, log=log)
    if len(data.labels) < config.train.batch_size:
        raise LTPLLError(
            f"--batch-size {config.train.batch_size} is larger than the training set "
            f"({len(data.labels)} images)"
        )
    mean, std = channel_statistics(data.images)

    out = config.output
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, RUN_FILES["config"]), config.to_dict())
    write_json(os.path.join(out, RUN_FILES["class_counts"]), {
        "class_names": data.class_names,
        "counts": data.class_counts.tolist(),
    })
    candidate_sets.save_candidate_file(
        os.path.join(out, RUN_FILES["candidates"]), data.candidates, data.class_names, data.paths
    )

    strategy = make_strategy(config.train.distribute)
    scope = strategy.scope() if strategy is not None else _null_scope()
    with scope:
        model, rebalancer_callbacks = build_model(config, data, mean, std)
        evaluator = EvaluateEvery(
            data.test_images, data.test_labels, data.class_counts,
            config.train.eval_every, config.train.epochs,
        )
        fit_callbacks = [UpdateStart(config.train.update_start), *rebalancer_callbacks]
        fit_callbacks += [
            PriorLog(data.class_counts, os.path.join(out, RUN_FILES["prior"])),
            evaluator,
            SaveModel(os.path.join(out, RUN_FILES["model"]), config.train.eval_every),
            HistoryLog(os.path.join(out, RUN_FILES["history"])),
            keras.callbacks.TerminateOnNaN(),
        ]
        if tensorflow_available():
            fit_callbacks.append(
                keras.callbacks.TensorBoard(os.path.join(out, RUN_FILES["tensorboard"]))
            )
        fit_callbacks += list(callbacks)
        started = time.time()
        model.fit(
            train_batches(data, config.train.batch_size, config.train.seed + 2),
            epochs=config.train.epochs,
            callbacks=fit_callbacks,
            shuffle=False,  # the pipeline reshuffles each epoch itself
            verbose=0,
        )
    elapsed = time.time() - started

    save_model(model, os.path.join(out, RUN_FILES["model"]))
    final = dict(evaluator.last or metric_fns.evaluate_logits(
        predict_logits(model, data.test_images), data.test_labels, data.class_counts
    ))
    final["train_seconds"] = elapsed
    final["class_names"] = data.class_names
    final["estimated_prior"] = model.estimated_prior().tolist()
    final["prior_l2"] = metric_fns.prior_distance(final["estimated_prior"], data.class_counts)
    write_json(os.path.join(out, RUN_FILES["metrics"]), final)
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
