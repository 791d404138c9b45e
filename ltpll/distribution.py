"""Cross-replica helpers for the training step, and the multi-worker set-up.

Under ``tf.distribute`` every replica runs the step on its own slice of the batch. Per-sample state
(the confidence table) and running statistics (the RECORDS feature mean) must then be combined
explicitly: a mirrored variable's default aggregation would average the replicas' *different*
table rows into nonsense. These helpers are the identity on a single device and on JAX, so the
step's code reads the same everywhere.

**The confidence table under tf.distribute (MirroredStrategy and MultiWorkerMirroredStrategy).**
Every replica, on every worker, keeps a full copy of the N x C table. In each step each replica
computes the new rows of its own samples, then all replicas all-gather the ``(index, row)`` pairs
(:func:`all_gather`) and every copy applies the same scatter of the whole global batch. The table
therefore stays identical everywhere, and equals the single-device table after the same steps.
The collectives span machines under MultiWorkerMirroredStrategy, so nothing changes there. We
chose this over giving each worker ownership of the rows of its shard because

* it is simple: no row-to-worker map, no routing of the targets a replica reads (a replica reads
  the rows of whichever samples its slice of the batch holds, and every row is local);
* the table stays complete and identical on every worker, so any worker can save, checkpoint or
  evaluate it, and the saved model is the same whoever writes it;
* it is cheap: each step moves B x C floats (plus B indices) per replica, the size of the
  logits, next to the gradients' all-reduce of every weight.

The price is memory: each replica holds all N x C floats (``--confidence-dtype float16`` halves
it).

**Input under MultiWorkerMirroredStrategy.** Every worker builds the same dataset of global
batches (same seed, same order). :func:`shard_global_batches` sets tf.data's ``DATA`` auto-shard
policy: tf.distribute first splits each global batch of B into one piece per replica, then each
worker keeps its own pieces. A global step therefore consumes exactly the global batch a
single-device run would, split across the workers as MirroredStrategy splits it across local
devices (worker 0 the first B/2 samples, worker 1 the second, for two workers). ``FILE``
sharding would fail (the source is an in-memory range, not files) and ``OFF`` would hand every
worker all pieces, so each would train on every sample and an epoch would take twice the steps.
"""

import contextlib
import json
import os
import re

import keras

from ltpll.errors import LTPLLError

# The task types that train under MultiWorkerMirroredStrategy.
TRAINING_TASKS = ("chief", "worker")

# This process's MultiWorkerMirroredStrategy, once made (see multi_worker_strategy).
_multi_worker = None


def multi_worker_task():
    """This process's ``(task_type, task_index, cluster)`` from the ``TF_CONFIG`` variable.

    ``TF_CONFIG`` is the JSON that tf.distribute reads, e.g. for the first of two machines
    ``{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
    "task": {"type": "worker", "index": 0}}``.

    Raises:
        LTPLLError: if it is missing or is not a cluster this strategy can train on.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        raise LTPLLError(
            "--distribute multi-worker needs the TF_CONFIG environment variable (the cluster and "
            'this worker\'s task), e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", '
            '"host2:12345"]}, "task": {"type": "worker", "index": 0}}\''
        )
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as error:
        raise LTPLLError(f"TF_CONFIG is not valid JSON: {error}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not cluster.get("worker") and not cluster.get("chief"):
        raise LTPLLError('TF_CONFIG needs a "cluster" with a "worker" list of host:port addresses')
    for job, addresses in cluster.items():
        if job not in TRAINING_TASKS:
            raise LTPLLError(f"TF_CONFIG's cluster has a {job!r} job; --distribute multi-worker "
                             "trains with 'worker' (and at most one 'chief') tasks only")
        if not (isinstance(addresses, list) and addresses
                and all(isinstance(a, str) and ":" in a for a in addresses)):
            raise LTPLLError(f'TF_CONFIG\'s cluster "{job}" must be a list of host:port '
                             f"addresses; got {addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        raise LTPLLError('TF_CONFIG\'s cluster can have at most one "chief"')
    task_type = task.get("type") if isinstance(task, dict) else None
    index = task.get("index", 0) if isinstance(task, dict) else None
    if task_type not in cluster:
        raise LTPLLError(f'TF_CONFIG needs "task": {{"type": ..., "index": ...}} naming one of '
                         f"its cluster's jobs ({', '.join(cluster)}); got {task!r}")
    count = len(cluster[task_type])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise LTPLLError(f"TF_CONFIG's task index must be 0..{count - 1} for its {count} "
                         f"{task_type!r} address(es); got {index!r}")
    return task_type, index, cluster


def make_strategy(distribute):
    """The tf.distribute strategy for ``--distribute`` (None for a single device).

    ``mirrored``: MirroredStrategy over the local GPUs. ``multi-worker``:
    MultiWorkerMirroredStrategy over the cluster in ``TF_CONFIG``; it must be created before any
    other TensorFlow op of the process, so training and resuming call this first.

    Raises:
        LTPLLError: without the TensorFlow backend, or with a missing or invalid ``TF_CONFIG``.
    """
    if distribute == "none":
        return None
    if keras.backend.backend() != "tensorflow":
        raise LTPLLError(f"--distribute {distribute} needs the TensorFlow backend "
                         "(KERAS_BACKEND=tensorflow)")
    if distribute == "multi-worker":
        return multi_worker_strategy()
    import tensorflow as tf

    return tf.distribute.MirroredStrategy()


def strategy_scope(strategy):
    """``strategy.scope()``, or a scope that does nothing for a single device."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def multi_worker_strategy():
    """``tf.distribute.MultiWorkerMirroredStrategy`` for the cluster in ``TF_CONFIG``.

    Call it before any other TensorFlow op runs in the process: collective ops are configured at
    start-up. It returns once every worker of the cluster has started. The cluster is fixed for
    the life of the process, so later calls (``ltpll benchmark`` trains several runs in one
    process) return the same strategy.

    Raises:
        LTPLLError: if ``TF_CONFIG`` is missing or invalid, or the strategy cannot start.
    """
    global _multi_worker
    multi_worker_task()
    if _multi_worker is not None:
        return _multi_worker
    import tensorflow as tf

    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError, tf.errors.OpError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise LTPLLError(
            f"cannot start MultiWorkerMirroredStrategy from TF_CONFIG: {first}") from None
    _patch_keras_for_multi_worker()
    _multi_worker = strategy
    return strategy


def is_chief(strategy):
    """Whether this process writes the run directory.

    True without a strategy or a cluster; in a cluster, the ``chief`` task, or worker 0 when
    there is no chief (the convention of tf.distribute and Keras).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (
        task_type == "worker" and task_id == 0 and "chief" not in cluster)


def worker_count(strategy):
    """How many processes train together (1 without a multi-worker cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return max(1, sum(len(cluster.get(job, [])) for job in TRAINING_TASKS))


@contextlib.contextmanager
def worker_failures_as_errors(strategy):
    """Turns the error a worker gets when another worker of its cluster dies into an LTPLLError.

    When a worker stops (an error, a kill, a lost machine), the others' next collective op fails
    within about half a minute with ``UnavailableError`` (the cluster's heartbeats stop); this
    says so in one line. Outside a multi-worker cluster it changes nothing.
    """
    if worker_count(strategy) <= 1:
        yield
        return
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
        lines = re.sub(r"\{\{[^}]*\}\}\s*", "", error.message).strip().splitlines()
        detail = lines[0][:300] if lines else type(error).__name__
        raise LTPLLError(
            "another worker of the cluster stopped or cannot be reached, so this one stops too "
            f"(see the other workers' output): {detail}"
        ) from None


def shard_global_batches(dataset):
    """Makes each worker of a multi-worker strategy take its slice of every global batch.

    Sets tf.data's ``DATA`` auto-shard policy (see the module docstring): every worker runs the
    whole pipeline, tf.distribute splits each batch into per-replica pieces and each worker
    keeps its own. Without a multi-worker strategy the option changes nothing.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _replica_context():
    """The TF replica context when more than one replica is running this step, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def num_replicas():
    """How many replicas share the current step (1 outside tf.distribute)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def all_gather(value):
    """Concatenates ``value`` along axis 0 across replicas, in replica order."""
    context = _replica_context()
    return value if context is None else context.all_gather(value, axis=0)


def all_reduce_mean(value):
    """Averages ``value`` across replicas."""
    context = _replica_context()
    return value if context is None else context.all_reduce("mean", value)


def scale_loss(loss):
    """Divides a per-replica mean loss by the replica count, as Keras' own losses do.

    tf.distribute sums the replicas' gradients; scaling each replica's loss by 1/R makes the sum
    the gradient of the global-batch mean.
    """
    replicas = num_replicas()
    return loss if replicas == 1 else loss / replicas


def _patch_keras_for_multi_worker():
    """Works around two bugs of Keras 3's TensorFlow trainer under MultiWorkerMirroredStrategy.

    With two or more workers, ``model.fit`` (Keras 3.15) fails before its first step and after
    it (tensorflow/tensorflow#72388):

    * ``Model._maybe_symbolic_build`` averages the first distributed batch with
      ``strategy.reduce("MEAN", batch)`` only to learn its shapes; the multi-worker ``reduce``
      takes a single value, not the ``(x, y)`` structure ("Attempt to convert a value
      (PerReplica...) to a Tensor"). The patch hands it this worker's first local batch instead
      (the same shapes and dtypes).
    * ``reduce_per_replica`` averages the step's logs (loss, accuracy: scalars) across workers
      with ``strategy.reduce("MEAN", value, axis=0)``, which fails on a scalar ("Invalid
      reduction dimension 0 for input with 0 dimensions"). The patch reduces with
      ``axis=None``: the mean across all replicas, as MirroredStrategy's logs are.

    Both patches change nothing unless the strategy is multi-worker (``predict``'s ``concat``,
    MirroredStrategy and single-device runs go to Keras' own code). Applied once, by
    :func:`multi_worker_strategy`.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_ltpll_multi_worker_patch", False):
        return
    import tensorflow as tf

    multi_worker = tf_trainer._collective_all_reduce_multi_worker
    keras_reduce = tf_trainer.reduce_per_replica
    keras_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return keras_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None and multi_worker(strategy):
            def local(value):
                if isinstance(value, tf.distribute.DistributedValues):
                    return strategy.experimental_local_results(value)[0]
                return value

            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(local, next(batches))
                break
            iterator = None
        return keras_build(self, iterator=iterator, data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer._ltpll_multi_worker_patch = True
