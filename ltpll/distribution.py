"""Cross-replica helpers for the training step.

Under ``tf.distribute`` every replica runs the step on its own slice of the batch. Per-sample state
(the confidence table) and running statistics (the RECORDS feature mean) must then be combined
explicitly: a mirrored variable's default aggregation would average the replicas' *different*
table rows into nonsense. These helpers are the identity on a single device and on JAX, so the
step's code reads the same everywhere.
"""

import keras


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
