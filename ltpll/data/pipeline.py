"""Batches for training and evaluation, from in-memory arrays.

A training batch is ``(x, y)`` with ``x`` uint8 images [B, H, W, 3] (augmentation happens in the
model, on device) and
``y = {"candidates": float32 [B, C], "index": int32 [B], "label": int32 [B]}``.
``index`` is the row of each sample in the training arrays: the model keeps per-sample state (the
confidence table) and reads/writes row ``index``, so the one invariant that matters here is that
``candidates[b]`` and ``label[b]`` are the rows ``index[b]`` of the arrays given. ``label`` is the
hidden true label, used only for monitoring, or -1 where unknown.

:func:`train_dataset` and :func:`eval_dataset` build ``tf.data`` pipelines (TensorFlow imported
lazily); :class:`PLLBatches` gives the same batches as pure numpy for backends on machines without
TensorFlow (JAX on the GPU machine).

Both shuffle *indices* and gather whole batches from the arrays, rather than slicing samples one by
one: per-sample work in tf.data costs far more than a single gather of B rows, and the images are
never copied into a shuffle buffer.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from ltpll.environment import tensorflow_available
from ltpll.errors import LTPLLError


def train_dataset(
    images: np.ndarray,
    candidates: np.ndarray,
    labels: np.ndarray | None,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
    epochs: int | None = None,
    initial_epoch: int = 0,
):
    """A ``tf.data.Dataset`` of training batches, reshuffled every epoch.

    Args:
        images: uint8 [N, H, W, 3].
        candidates: multi-hot [N, C] candidate sets.
        labels: true labels [N] (-1 where unknown), or None when none are known.
        batch_size: samples per batch.
        seed: shuffling seed; the same seed gives the same sequence of epoch orders.
        shuffle: shuffle the samples (a new order each time the dataset is iterated, i.e. each
            epoch of ``model.fit``).
        drop_remainder: drop the last partial batch, so every batch has a static size.
        epochs, initial_epoch: if ``epochs`` is given, the dataset holds the batches of epochs
            ``initial_epoch .. epochs - 1`` back to back, epoch ``e`` in an order that depends
            only on ``(seed, e)``; fit it with ``steps_per_epoch`` (:func:`steps_per_epoch`).
            A run resumed at epoch ``e`` then sees exactly the batches the uninterrupted run
            would have. Without ``epochs``, tf.data reshuffles at each iteration (each epoch
            of ``fit``), in an order that depends on how many iterations came before.

    Returns:
        A dataset of ``(x, {"candidates", "index", "label"})`` batches, prefetched.

    Raises:
        LTPLLError: arrays of mismatched lengths or dtypes, an empty candidate set, or a batch
            size larger than the training set with ``drop_remainder``.
    """
    import tensorflow as tf

    arrays = _TrainingArrays(images, candidates, labels, batch_size, drop_remainder)
    images_t = tf.constant(arrays.images)
    candidates_t = tf.constant(arrays.candidates)
    labels_t = tf.constant(arrays.labels)

    def gather(rows):
        rows = tf.cast(rows, tf.int32)
        targets = {
            "candidates": tf.gather(candidates_t, rows),
            "index": rows,
            "label": tf.gather(labels_t, rows),
        }
        return tf.gather(images_t, rows), targets

    if epochs is not None:
        num_samples = arrays.num_samples

        def epoch_batches(epoch):
            rows = tf.range(num_samples, dtype=tf.int64)
            if shuffle:
                rows = tf.random.experimental.stateless_shuffle(
                    rows, seed=tf.stack([tf.constant(seed, tf.int64), epoch])
                )
            return tf.data.Dataset.from_tensor_slices(rows).batch(
                batch_size, drop_remainder=drop_remainder
            )

        batches = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches)
    else:
        rows = tf.data.Dataset.range(arrays.num_samples)
        if shuffle:
            rows = rows.shuffle(arrays.num_samples, seed=seed, reshuffle_each_iteration=True)
        batches = rows.batch(batch_size, drop_remainder=drop_remainder)
    return batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(num_samples: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Batches in one epoch of :func:`train_dataset` / :class:`PLLBatches`."""
    count = num_samples / batch_size
    return math.floor(count) if drop_remainder else math.ceil(count)


def train_batches(images, candidates, labels, batch_size, seed, epochs, initial_epoch=0):
    """The training input of a run and its steps per epoch: tf.data when TensorFlow is
    installed, else a numpy :class:`PLLBatches`. Epoch ``e``'s order depends only on
    ``(seed, e)``, so a resumed run sees the batches an uninterrupted one would."""
    labels = np.asarray(labels).astype(np.int32)
    steps = steps_per_epoch(len(labels), batch_size)
    if tensorflow_available():
        return train_dataset(images, candidates, labels, batch_size, seed,
                             epochs=epochs, initial_epoch=initial_epoch), steps
    return PLLBatches(images, candidates, labels, batch_size, seed,
                      initial_epoch=initial_epoch), steps


def eval_dataset(images: np.ndarray, labels: np.ndarray | None, batch_size: int):
    """A ``tf.data.Dataset`` of ``(x uint8, label int32)`` batches, in order, last one kept.

    ``labels`` may be None (prediction only): labels are then -1.
    """
    import tensorflow as tf

    images = _check_images(images)
    labels = _check_labels(labels, len(images))
    _check_batch_size(batch_size)
    images_t, labels_t = tf.constant(images), tf.constant(labels)

    def gather(rows):
        rows = tf.cast(rows, tf.int32)
        return tf.gather(images_t, rows), tf.gather(labels_t, rows)

    batches = tf.data.Dataset.range(len(images)).batch(batch_size)
    return batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class PLLBatches(keras.utils.PyDataset):
    """The training batches of :func:`train_dataset` as numpy, for any Keras backend.

    Pure numpy (no TensorFlow), so ``model.fit(PLLBatches(...))`` works with JAX on a machine
    without TensorFlow. Epoch ``e``'s order is a permutation seeded by ``(seed, e)``: it depends
    only on the seed and the epoch number (not on tf.data's generator, so orders differ from
    :func:`train_dataset`'s), and a new order is drawn in :meth:`on_epoch_end`.

    Args:
        images, candidates, labels, batch_size, seed, shuffle, drop_remainder: as for
            :func:`train_dataset`.
        initial_epoch: the epoch the first iteration is (a resumed run starts later).
        **kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size`` for
            ``keras.utils.PyDataset``.
    """

    def __init__(
        self,
        images,
        candidates,
        labels,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        drop_remainder: bool = True,
        initial_epoch: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        arrays = _TrainingArrays(images, candidates, labels, batch_size, drop_remainder)
        self.images, self.candidates, self.labels = arrays.images, arrays.candidates, arrays.labels
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder
        self.epoch = int(initial_epoch)
        self._order = self._epoch_order(self.epoch)

    def __len__(self) -> int:
        return steps_per_epoch(len(self.images), self.batch_size, self.drop_remainder)

    def __getitem__(self, batch: int):
        if not 0 <= batch < len(self):
            raise IndexError(f"batch {batch} out of range for {len(self)} batches")
        rows = self._order[batch * self.batch_size : (batch + 1) * self.batch_size]
        targets = {
            "candidates": self.candidates[rows],
            "index": rows,
            "label": self.labels[rows],
        }
        return self.images[rows], targets

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._epoch_order(self.epoch)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.images), dtype=np.int32)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
        return order.astype(np.int32)


class _TrainingArrays:
    """Validated training arrays: uint8 images, float32 candidates, int32 labels (-1 unknown)."""

    def __init__(self, images, candidates, labels, batch_size, drop_remainder):
        self.images = _check_images(images)
        self.num_samples = len(self.images)
        self.candidates = _check_candidates(candidates, self.num_samples)
        self.labels = _check_labels(labels, self.num_samples)
        _check_batch_size(batch_size)
        if drop_remainder and batch_size > self.num_samples:
            raise LTPLLError(
                f"batch size {batch_size} is larger than the {self.num_samples} training samples"
            )


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise LTPLLError(
            f"images must be uint8 [N, H, W, channels]; got {images.dtype} {images.shape}"
        )
    return images


def _check_candidates(candidates, num_samples: int) -> np.ndarray:
    candidates = np.asarray(candidates, dtype=np.float32)
    if candidates.ndim != 2 or len(candidates) != num_samples:
        raise LTPLLError(
            f"candidates must be [N, C] with N = {num_samples} images; got {candidates.shape}"
        )
    empty = np.flatnonzero(candidates.sum(axis=1) <= 0)
    if len(empty):
        raise LTPLLError(f"{len(empty)} sample(s) have an empty candidate set, e.g. row {empty[0]}")
    return candidates


def _check_labels(labels, num_samples: int) -> np.ndarray:
    if labels is None:
        return np.full(num_samples, -1, dtype=np.int32)
    labels = np.asarray(labels)
    if labels.shape != (num_samples,):
        raise LTPLLError(f"labels must be [N] with N = {num_samples}; got {labels.shape}")
    return labels.astype(np.int32)


def _check_batch_size(batch_size) -> None:
    if not (isinstance(batch_size, (int, np.integer)) and batch_size > 0):
        raise LTPLLError(f"batch size must be a positive integer; got {batch_size!r}")
