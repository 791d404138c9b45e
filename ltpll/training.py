"""The jobs: :func:`train` a run, :func:`resume` an unfinished one, :func:`evaluate` a finished one.

``train(config)`` is the whole job behind ``ltpll train``:

1. prepare the data (:func:`ltpll.data.prepare.prepare_data`: load, long-tailed subset,
   candidate sets, dev set; numpy, once);
2. assemble the compiled :class:`PLLModel` (:func:`ltpll.assembly.build_model`), under a
   distribution strategy if asked;
3. fit with the run-level callbacks (:mod:`ltpll.callbacks`: prior log, test evaluation,
   history, checkpoints) and TensorBoard; the model adds its components' own;
4. write the run directory (:mod:`ltpll.run_dir`) that ``ltpll evaluate`` reloads.
"""

import os
import shutil
import tempfile

import keras

from ltpll import distribution
from ltpll.assembly import (
    backbone_reads_files,
    build_context,
    build_model,
    describe_precision,
    describe_step,
    initial_backbone,
)
from ltpll.batch_logs import lazy_callbacks
from ltpll.callbacks import (
    Checkpoint,
    CoveringEvery,
    EvaluateEvery,
    HistoryLog,
    PriorLog,
    StopOnNaN,
    TrainingClock,
)
from ltpll.checkpoint import load_checkpoint, remove_checkpoints
from ltpll.data.files import is_streamed
from ltpll.data.pipeline import (
    distributed_stream,
    train_batches,
    unreadable_files_as_errors,
)
from ltpll.data.prepare import align_classes, channel_statistics, prepare_data
from ltpll.data.sources import load_split
from ltpll.environment import tensorflow_available
from ltpll.errors import LTPLLError
from ltpll.fileio import read_json, write_json
from ltpll.metrics import (
    EVAL_BATCH_SIZE,
    evaluate_logits,
    predict_logits,
    prior_distance,
)
from ltpll.models.pll_model import UpdateStart
from ltpll.run_dir import (
    RUN_FILES,
    check_output_directory,
    latest_checkpoint,
    read_config,
    run_status,
    start_run_directory,
)
from ltpll.saving import load_run, save_model
from ltpll.selection import selections
from ltpll.weighting.base import estimated_class_counts


def train(config, callbacks=(), log=print):
    """Runs a whole training job and writes its run directory.

    Args:
        config: a :class:`~ltpll.config.RunConfig`.
        callbacks: extra Keras callbacks (the CLI adds its rich progress display here).
        log: function for one-line progress messages.

    Returns:
        ``(model, final_metrics)``.

    Raises:
        LTPLLError: for bad configuration or data (nothing is written then), or a NaN loss.
    """
    config.validate()
    # First of all: MultiWorkerMirroredStrategy needs to exist before any TensorFlow op runs.
    strategy = distribution.make_strategy(config.train.distribute)
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
    if backbone_reads_files(config.model):
        # A bad --init-from, a missing weights file or a failed download fails here, before
        # the run directory exists (a retry with the same --output then just works).
        initial_backbone(config.model, build_context(config, data))
    if chief:
        start_run_directory(config, data)
    log(describe_step(config.train))
    log(describe_precision(config.train))
    return _fit(config, data, None, callbacks, strategy)


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
    config = read_config(run_dir)
    config.output = run_dir
    config.validate()
    # Before any TensorFlow op (see train). Under multi-worker every worker reads the run
    # directory, so it must be at this path on each (a shared file system).
    strategy = distribution.make_strategy(config.train.distribute)
    if not distribution.is_chief(strategy):
        _log_not_chief(run_dir, log)
    keras.utils.set_random_seed(config.train.seed)
    data = prepare_data(config.data, config.train.seed, log=log)
    saved = read_json(os.path.join(run_dir, RUN_FILES["class_counts"]))
    if saved["counts"] != data.class_counts.tolist():
        raise LTPLLError(f"the data of {run_dir} changed since it was trained "
                         f"({config.data.dataset}); it cannot be resumed")
    path, epoch = latest_checkpoint(run_dir)
    if path is not None:
        log(f"resuming {run_dir} after epoch {epoch} of {config.train.epochs}")
    return _fit(config, data, path, callbacks, strategy)


def _log_not_chief(run_dir, log):
    log(f"this worker is not the chief: the chief writes {run_dir}; this worker's own files go "
        "to a temporary directory that is deleted at the end")


def _fit(config, data, checkpoint_path, callbacks, strategy=None):
    """Fits a new model (or a checkpointed one), then writes the final files.

    Under MultiWorkerMirroredStrategy only the chief writes into the run directory. The other
    workers run exactly the same callbacks, evaluations and saves (all of them take part in the
    collective ops those contain, so skipping one would stall the cluster), into a temporary
    directory that is deleted at the end.
    """
    with distribution.worker_failures_as_errors(strategy):
        if distribution.is_chief(strategy):
            return _fit_into(config.output, config, data, checkpoint_path, callbacks, strategy)
        scratch = tempfile.mkdtemp(prefix="ltpll-worker-")
        try:
            return _fit_into(scratch, config, data, checkpoint_path, callbacks, strategy)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _fit_into(out, config, data, checkpoint_path, callbacks, strategy):
    with distribution.strategy_scope(strategy):
        if checkpoint_path is None:
            mean, std = channel_statistics(data.images)
            model, state = build_model(config, data, mean, std), None
        else:
            model, state = load_checkpoint(checkpoint_path)
            _carry_v2_schedule(model, config)
        initial_epoch = int(state["epoch"]) if state else 0
        evaluator = EvaluateEvery(data.test_images, data.test_labels, data.class_counts,
                                  config.train.eval_every, config.train.epochs)
        prior_log = PriorLog(data.class_counts, os.path.join(out, RUN_FILES["prior"]))
        history = HistoryLog(os.path.join(out, RUN_FILES["history"]))
        clock = TrainingClock()
        checkpoint = Checkpoint(out, [history, prior_log, evaluator, clock], restore=state)
        fit_callbacks = [StopOnNaN(out), UpdateStart(config.train.update_start), prior_log,
                         evaluator]
        if data.val_images is not None and len(data.val_images):
            fit_callbacks.append(CoveringEvery(data.val_images, data.val_candidates,
                                               config.train.eval_every, config.train.epochs))
        if tensorflow_available():
            fit_callbacks.append(
                keras.callbacks.TensorBoard(os.path.join(out, RUN_FILES["tensorboard"]))
            )
        fit_callbacks += [*callbacks, history, clock, checkpoint]
        if initial_epoch < config.train.epochs:
            batches, steps = train_batches(
                data.images, data.candidates, data.labels, config.train.batch_size,
                config.train.seed + 2, config.train.epochs, initial_epoch,
                strict=config.data.strict,
            )
            if config.train.distribute == "multi-worker" and is_streamed(data.images):
                # Each worker reads and decodes only its slice of every global batch.
                batches = distributed_stream(
                    strategy, data.images, data.candidates, data.labels,
                    config.train.batch_size, config.train.seed + 2, config.train.epochs,
                    initial_epoch, strict=config.data.strict,
                )
            elif config.train.distribute == "multi-worker":
                # Each worker takes its slice of every global batch (ltpll.distribution).
                batches = distribution.shard_global_batches(batches)
            with unreadable_files_as_errors(data.images, "the training set"):
                model.fit(
                    batches,
                    epochs=config.train.epochs,
                    initial_epoch=initial_epoch,
                    steps_per_epoch=steps,
                    # batch logs stay on the device until a callback reads one
                    callbacks=lazy_callbacks(model, fit_callbacks, config.train.epochs, steps),
                    shuffle=False,  # the pipeline orders each epoch itself
                    verbose=0,
                )
    elapsed = clock.seconds()

    save_model(model, os.path.join(out, RUN_FILES["model"]))
    final = dict(evaluator.last or evaluate_logits(
        predict_logits(model, data.test_images), data.test_labels, data.class_counts
    ))
    final["train_seconds"] = elapsed
    # The epoch-selection blocks (ltpll.selection); the fields above stay the last epoch's.
    final.update(selections(history.rows))
    if data.val_images is not None and len(data.val_images):
        last = history.rows[-1] if history.rows else {}
        final["val_split"] = {"num_samples": len(data.val_images),
                              "fraction": config.data.val_fraction,
                              "val_covering": last.get("val_covering"),
                              "val_covering_balanced": last.get("val_covering_balanced")}
    final["class_names"] = data.class_names
    final["estimated_prior"] = model.estimated_prior().tolist()
    final["prior_l2"] = prior_distance(final["estimated_prior"], data.class_counts)
    if model.weighting.kind != "none":
        final["class_weights"] = keras.ops.convert_to_numpy(model.weighting.class_weights).tolist()
        final["estimated_class_counts"] = estimated_class_counts(model.confidence).tolist()
    write_json(os.path.join(out, RUN_FILES["metrics"]), final)
    remove_checkpoints(out)
    return model, final


def _carry_v2_schedule(model, config):
    """A checkpoint of config version 2 kept a deferred weighting's start epoch in the run
    config only; its model's weighting then has none and would take the default."""
    weighting = model.weighting
    start = config.model.weighting.get("start")
    if weighting.deferred and getattr(weighting, "start", None) is None and start is not None:
        weighting.start = int(start)


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
        strict=config.data.strict, input_mode=config.data.input_mode,
        memory_budget=config.data.memory_budget,
    )
    if test.images.shape[1:] != tuple(model.image_shape):
        raise LTPLLError(
            f"images are {test.images.shape[1:3]}, the model expects {tuple(model.image_shape[:2])}"
        )
    if list(test.class_names) != list(counts["class_names"]):
        test = align_classes(counts["class_names"], test)
    result = evaluate_logits(
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
