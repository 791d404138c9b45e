"""Batches for training and evaluation, from in-memory arrays or streamed from image files.

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

Images on disk (:class:`~ltpll.data.files.ImageFiles`, a split above the memory budget) take the
same shuffled indices through :func:`stream_train_dataset` (tf.data: files read and decoded in
parallel, prefetched so decoding overlaps the training step) or :class:`StreamedBatches` (a
``PyDataset`` whose worker threads decode with Pillow: no TensorFlow needed). Epoch ``e``'s order
is the in-memory path's, so the index of each decoded image travels with it and the candidate row
is gathered by that index after decoding: a sample's image, candidate set and confidence row stay
aligned whatever the decode order. Candidate sets are kept bit-packed (``C / 8`` bytes per sample:
445 MB for iNaturalist 2018's 437,513 x 8,142, where float32 would take 14 GB).
"""

from __future__ import annotations

import contextlib
import math
import re

import keras
import numpy as np

from ltpll.data.files import ANTIALIAS_FROM, ImageFiles, decode_file, is_streamed
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
            "candidates": tf.cast(tf.gather(candidates_t, rows), tf.float32),
            "index": rows,
            "label": tf.gather(labels_t, rows),
        }
        return tf.gather(images_t, rows), targets

    if epochs is not None:
        num_samples = arrays.num_samples

        def epoch_batches(epoch):
            rows = _epoch_rows(num_samples, seed, epoch, shuffle)
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


def _epoch_rows(num_samples, seed, epoch, shuffle):
    """The int64 rows of epoch ``epoch`` (a tensor) in their order: a permutation that depends
    only on ``(seed, epoch)``, the same in memory and streamed."""
    import tensorflow as tf

    rows = tf.range(num_samples, dtype=tf.int64)
    if not shuffle:
        return rows
    return tf.random.experimental.stateless_shuffle(
        rows, seed=tf.stack([tf.constant(seed, tf.int64), epoch])
    )


def steps_per_epoch(num_samples: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Batches in one epoch of :func:`train_dataset` / :class:`PLLBatches`."""
    count = num_samples / batch_size
    return math.floor(count) if drop_remainder else math.ceil(count)


def train_batches(images, candidates, labels, batch_size, seed, epochs, initial_epoch=0,
                  strict=False):
    """The training input of a run and its steps per epoch: tf.data when TensorFlow is
    installed, else a numpy :class:`PLLBatches`; images on disk stream from their files
    (``strict``: an unreadable file stops training instead of being left out). Epoch ``e``'s
    order depends only on ``(seed, e)``, so a resumed run sees the batches an uninterrupted one
    would."""
    labels = np.asarray(labels).astype(np.int32)
    steps = steps_per_epoch(len(labels), batch_size)
    streamed = is_streamed(images)
    if tensorflow_available() and streamed:
        batches = stream_train_dataset(images, candidates, labels, batch_size, seed,
                                       epochs=epochs, initial_epoch=initial_epoch, strict=strict)
    elif tensorflow_available():
        batches = train_dataset(images, candidates, labels, batch_size, seed, epochs=epochs,
                                initial_epoch=initial_epoch)
    elif streamed:
        batches = StreamedBatches(images, candidates, labels, batch_size, seed,
                                  initial_epoch=initial_epoch, strict=strict)
    else:
        batches = PLLBatches(images, candidates, labels, batch_size, seed,
                             initial_epoch=initial_epoch)
    return batches, steps


def eval_dataset(images: np.ndarray, labels: np.ndarray | None, batch_size: int):
    """A ``tf.data.Dataset`` of ``(x uint8, label int32)`` batches, in order, last one kept.

    ``labels`` may be None (prediction only): labels are then -1. Images on disk
    (:class:`ImageFiles`) are decoded in parallel, in order.
    """
    import tensorflow as tf

    if is_streamed(images):
        labels = _check_labels(labels, len(images))
        _check_batch_size(batch_size)
        rows = tf.data.Dataset.from_tensor_slices(np.arange(len(images), dtype=np.int32))
        decoded = rows.map(_file_loader(images), num_parallel_calls=tf.data.AUTOTUNE)
        labels_t = tf.constant(labels)
        return decoded.batch(batch_size).map(
            lambda x, rows: (x, tf.gather(labels_t, rows))
        ).prefetch(tf.data.AUTOTUNE)
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
    :func:`train_dataset`'s).

    Keras iterates a ``PyDataset`` one epoch at a time and calls :meth:`on_epoch_end` after each
    (and once more before the first, when ``fit`` starts); the order moves on to the next epoch
    only after an epoch whose batches were served, so epoch ``initial_epoch`` comes first and a
    resumed run sees the batches of an uninterrupted one. Keras stops its worker threads before it
    calls :meth:`on_epoch_end`, so no worker reads an order that is changing.

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
        self._order = self.epoch_order(self.epoch)
        self._served = False

    def __len__(self) -> int:
        return steps_per_epoch(len(self.images), self.batch_size, self.drop_remainder)

    def batch_rows(self, batch: int) -> np.ndarray:
        """The rows of batch ``batch`` of the current epoch."""
        if not 0 <= batch < len(self):
            raise IndexError(f"batch {batch} out of range for {len(self)} batches")
        self._served = True
        return self._order[batch * self.batch_size : (batch + 1) * self.batch_size]

    def __getitem__(self, batch: int):
        rows = self.batch_rows(batch)
        targets = {
            "candidates": self.candidates[rows].astype(np.float32),
            "index": rows,
            "label": self.labels[rows],
        }
        return self.images[rows], targets

    def on_epoch_end(self):
        if self._served:
            self.epoch += 1
            self._order = self.epoch_order(self.epoch)
            self._served = False

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s permutation of the rows (seeded by ``(seed, epoch)``)."""
        if not self.shuffle:
            return np.arange(len(self.images), dtype=np.int32)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
        return order.astype(np.int32)


def predict_batches(images, batch_size: int = 256):
    """Batches of ``images`` for ``model.predict``, in order: the array itself when it is in
    memory (Keras batches it), else the files decoded a batch at a time (tf.data, or a
    ``PyDataset`` of Pillow-decoding threads where TensorFlow is missing)."""
    if not is_streamed(images):
        return images
    if tensorflow_available():
        return eval_dataset(images, None, batch_size).map(lambda x, _labels: x)
    return FileBatches(images, batch_size)


# ---------------------------------------------------------------------------------------------
# Streaming from files
# ---------------------------------------------------------------------------------------------


def stream_train_dataset(
    images: ImageFiles,
    candidates: np.ndarray,
    labels: np.ndarray | None,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    epochs: int = 1,
    initial_epoch: int = 0,
    strict: bool = False,
    shard: tuple[int, int] = (1, 0),
    per_replica: int | None = None,
):
    """:func:`train_dataset` for images on disk: the same batches, decoded from the files.

    Epoch ``e`` visits the rows in :func:`train_dataset`'s order for ``(seed, e)``; each row's
    file is read and decoded in parallel (in order), the batch's candidate rows and labels are
    gathered by the decoded rows' indices. A file that cannot be decoded is left out and the epoch
    filled up from its start (``strict``: the error stops training), so every epoch still has
    :func:`steps_per_epoch` full batches and resumed runs stay aligned.

    Args:
        shard: ``(shards, index)``: this input pipeline reads only its contiguous
            ``batch_size / shards`` rows of every global batch of ``batch_size`` (multi-worker
            training: each worker decodes its own part of the file list, not all of it).
        per_replica: the batch size yielded (a shard's rows in consecutive pieces, one per
            local replica); default ``batch_size / shards``.
    """
    import tensorflow as tf

    arrays = _TrainingArrays(_RowsOnly(images), candidates, labels, batch_size, True)
    num_samples, num_classes = arrays.num_samples, arrays.candidates.shape[1]
    packed_t = tf.constant(pack_candidates(arrays.candidates))
    labels_t = tf.constant(arrays.labels)
    load = _file_loader(images)
    per_epoch = steps_per_epoch(num_samples, batch_size) * batch_size

    shards, index = shard
    if batch_size % shards:
        raise LTPLLError(f"batch size {batch_size} does not split over {shards} workers")
    part = batch_size // shards
    per_replica = per_replica or part

    def epoch_batches(epoch):
        rows = tf.cast(_epoch_rows(num_samples, seed, epoch, shuffle)[:per_epoch], tf.int32)
        if shards > 1:  # this shard's slice of every global batch, in order
            rows = tf.reshape(tf.reshape(rows, (-1, batch_size))[:, index * part:][:, :part], [-1])
        decoded = tf.data.Dataset.from_tensor_slices(rows).map(
            load, num_parallel_calls=tf.data.AUTOTUNE
        )
        if not strict:
            decoded = decoded.ignore_errors().repeat()
        return decoded.take(per_epoch // shards).batch(per_replica, drop_remainder=True)

    def targets(x, rows):
        bits = tf.gather(packed_t, rows)
        return x, {"candidates": unpack_bits(bits, num_classes), "index": rows,
                   "label": tf.gather(labels_t, rows)}

    batches = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_batches)
    return batches.map(targets, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def pack_candidates(candidates) -> np.ndarray:
    """``np.packbits`` of the multi-hot rows (``ceil(C / 8)`` bytes each), a block at a time so
    no bool copy of the whole table is made."""
    rows, classes = candidates.shape
    packed = np.empty((rows, (classes + 7) // 8), dtype=np.uint8)
    block = max(1, (1 << 26) // max(1, classes))
    for start in range(0, rows, block):
        packed[start:start + block] = np.packbits(candidates[start:start + block] > 0, axis=1)
    return packed


def distributed_stream(strategy, images, candidates, labels, batch_size, seed, epochs,
                       initial_epoch=0, strict=False):
    """:func:`stream_train_dataset` under a multi-worker strategy: each worker's input pipeline
    decodes only its slice of every global batch, which tf.distribute hands to its replicas.

    The global batches (and so the gradients) are those of one process reading the whole batch.
    """

    def per_worker(context):
        return stream_train_dataset(
            images, candidates, labels, batch_size, seed, epochs=epochs,
            initial_epoch=initial_epoch, strict=strict,
            shard=(context.num_input_pipelines, context.input_pipeline_id),
            per_replica=context.get_per_replica_batch_size(batch_size),
        )

    return strategy.distribute_datasets_from_function(per_worker)


_DECODE_FAILURE = re.compile(r"JPEG|PNG|GIF|BMP|image|Input is empty|decode", re.IGNORECASE)


@contextlib.contextmanager
def unreadable_files_as_errors(images, what="a streamed split"):
    """An image file the streaming pipeline cannot decode (a training set under ``--strict``, or
    a test split, whose rows must all be there) stops with one line, not a TensorFlow traceback.
    """
    if not (is_streamed(images) and tensorflow_available()):
        yield
        return
    import tensorflow as tf

    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        message = (error.message or str(error)).strip()
        if not _DECODE_FAILURE.search(message):
            raise
        raise LTPLLError(
            f"an image file of {what} cannot be decoded ({message.splitlines()[0][:160]}); "
            "fix or remove it (training images that cannot be decoded are skipped unless "
            "--strict)"
        ) from None


def unpack_bits(packed, num_classes):
    """float32 ``[B, C]`` multi-hot from ``np.packbits`` rows (big-endian bits), in TensorFlow."""
    import tensorflow as tf

    weights = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.uint8)
    bits = tf.bitwise.bitwise_and(packed[..., None], weights) > 0
    bits = tf.reshape(bits, (tf.shape(packed)[0], -1))[:, :num_classes]
    return tf.cast(bits, tf.float32)


def _file_loader(images: ImageFiles):
    """``row -> (uint8 [H, W, 3] image, row)`` reading ``images.files[row]`` (tf.data map)."""
    import tensorflow as tf

    files_t = tf.constant([str(f) for f in images.files])
    height, width = int(images.height), int(images.width)

    def load(row):
        data = tf.io.read_file(tf.gather(files_t, row))
        return decode_image_tf(data, height, width), row

    return load


def decode_image_tf(data, height, width):
    """One encoded image to uint8 ``[height, width, 3]`` RGB, in TensorFlow ops.

    Any mode becomes RGB (grayscale, palette, RGBA, CMYK). A JPEG at least twice the target size
    is decoded at 1/2, 1/4 or 1/8 scale in the DCT (the largest that still covers the target),
    which is most of the cost of a full-size photo; JPEGs use the accurate integer DCT, which is
    what Pillow uses. The image is then resized bilinearly (aspect ratio not kept), with
    antialiasing where it is still at least three times the target size, unless it already has
    the size.
    """
    import tensorflow as tf

    def jpeg():
        shape = tf.image.extract_jpeg_shape(data)
        fits = [tf.logical_and(shape[0] >= r * height, shape[1] >= r * width) for r in (2, 4, 8)]
        branch = tf.reduce_sum(tf.cast(tf.stack(fits), tf.int32))  # 0..3 -> ratio 1, 2, 4, 8
        return tf.switch_case(branch, [
            (lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r,
                                           dct_method="INTEGER_ACCURATE"))
            for r in (1, 2, 4, 8)
        ])

    def other():
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    image.set_shape([None, None, 3])

    def resize(antialias):
        scaled = tf.image.resize(image, (height, width), method="bilinear", antialias=antialias)
        return tf.cast(tf.clip_by_value(tf.round(scaled), 0, 255), tf.uint8)

    def resized():
        # Antialiasing cuts the throughput of a 500x375 JPEG at 224 px by 2.5x (measured in
        # `make bench-scale-cpu`) and matters little below a 3x reduction; JPEGs larger than
        # that are mostly reduced by the DCT-scaled decode above.
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        far = tf.reduce_any(shape >= ANTIALIAS_FROM * tf.constant([height, width], tf.float32))
        return tf.cond(far, lambda: resize(True), lambda: resize(False))

    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], [height, width]))
    return tf.ensure_shape(tf.cond(same, lambda: image, resized), (height, width, 3))


class StreamedBatches(PLLBatches):
    """:class:`PLLBatches` for images on disk, decoded with Pillow: for machines without
    TensorFlow (JAX on the GPU machine).

    Each batch is decoded in the ``__getitem__`` of one of ``workers`` threads (Pillow releases
    the GIL), ``max_queue_size`` batches ahead of the step. Epoch orders are
    :class:`PLLBatches`'. An unreadable file is replaced by the next readable row of the epoch
    order (``strict``: it raises), keeping the batch full and its rows aligned.
    """

    def __init__(self, images, candidates, labels, batch_size, seed, shuffle=True,
                 drop_remainder=True, initial_epoch=0, strict=False, workers=None,
                 max_queue_size=None, **kwargs):
        import os

        workers = workers or max(2, os.cpu_count() or 1)
        self.files = images
        self.strict = strict
        super().__init__(_RowsOnly(images), candidates, labels, batch_size, seed,
                         shuffle=shuffle, drop_remainder=drop_remainder,
                         initial_epoch=initial_epoch, workers=workers,
                         max_queue_size=max_queue_size or 2 * workers, **kwargs)

    def __getitem__(self, batch: int):
        rows = list(self.batch_rows(batch))
        order = self._order
        images = np.zeros((len(rows), *self.files.shape[1:]), dtype=np.uint8)
        spare = (batch + 1) * self.batch_size
        for slot in range(len(rows)):
            while True:
                try:
                    images[slot] = decode_file(self.files.files[rows[slot]],
                                               self.files.height, self.files.width)
                    break
                except LTPLLError:
                    if self.strict or spare >= 2 * len(order):
                        raise
                    rows[slot] = order[spare % len(order)]
                    spare += 1
        rows = np.asarray(rows, dtype=np.int32)
        return images, {"candidates": self.candidates[rows].astype(np.float32), "index": rows,
                        "label": self.labels[rows]}


class FileBatches(keras.utils.PyDataset):
    """Images on disk decoded in order, ``batch_size`` at a time, by worker threads (predict)."""

    def __init__(self, images: ImageFiles, batch_size: int, workers=None, **kwargs):
        import os

        workers = workers or max(2, os.cpu_count() or 1)
        super().__init__(workers=workers, max_queue_size=2 * workers, **kwargs)
        self.images, self.batch_size = images, batch_size

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, batch):
        if not 0 <= batch < len(self):
            raise IndexError(f"batch {batch} out of range for {len(self)} batches")
        rows = np.arange(batch * self.batch_size,
                         min(len(self.images), (batch + 1) * self.batch_size))
        return self.images.decode(rows, workers=1)


class _RowsOnly:
    """Stands in for the image array of files in the checks of :class:`_TrainingArrays`: only
    its length counts."""

    def __init__(self, images):
        self.shape, self.dtype, self.ndim = images.shape, np.dtype(np.uint8), 4

    def __len__(self):
        return self.shape[0]


class _TrainingArrays:
    """Validated training arrays: uint8 images, bool or float32 candidates, int32 labels (-1
    unknown)."""

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
    if isinstance(images, _RowsOnly):
        return images
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise LTPLLError(
            f"images must be uint8 [N, H, W, channels]; got {images.dtype} {images.shape}"
        )
    return images


def _check_candidates(candidates, num_samples: int) -> np.ndarray:
    """Multi-hot sets as bool (kept as given: no copy) or float32; batches are float32."""
    candidates = np.asarray(candidates)
    if candidates.dtype != bool:
        candidates = candidates.astype(np.float32, copy=False)
    if candidates.ndim != 2 or len(candidates) != num_samples:
        raise LTPLLError(
            f"candidates must be [N, C] with N = {num_samples} images; got {candidates.shape}"
        )
    empty = np.flatnonzero(~candidates.any(axis=1) if candidates.dtype == bool
                           else candidates.sum(axis=1) <= 0)
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
