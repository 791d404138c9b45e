"""Pseudo-labelling a pool of unlabeled images with a trained run, for semi-supervised training.

Yang & Xu (NeurIPS 2020, "Rethinking the value of labels for improving class-imbalanced
learning") train a model on the long-tailed labelled set, let it label extra unlabeled images,
and train again on the labelled plus the pseudo-labelled images (they used five times as many
unlabeled images as labelled ones). Here:

1. :func:`pseudo_label` keeps the pool images whose top softmax probability (of the run's
   debiased logits) reaches a threshold, at most ``max_count`` of them, the most confident first;
2. :func:`~ltpll.data.pseudo_label_file.save_pseudo_labels` writes them, with their labels,
   paths and a JSON summary, to one compressed ``.npz`` file (``ltpll pseudo-label``);
3. :func:`~ltpll.data.pseudo_label_file.load_pseudo_labels` reads that file back for
   ``ltpll train --pseudo-labels FILE``, which adds the images as extra training samples whose
   candidate set is the pseudo-label alone.

The pool is a folder of image files (:func:`load_unlabeled_folder`) or, offline, the images of the
run's own training split that its long-tailed subset left out (:func:`leftover_pool`).
"""

import collections
import concurrent.futures
import dataclasses
import os

import numpy as np

from ltpll.data.prepare import prepare_data
from ltpll.data.pseudo_label_file import (  # noqa: F401  (this module's API, for the CLI)
    FORMAT,
    accuracy_summary,
    check_output_path,
    load_pseudo_labels,
    save_pseudo_labels,
)
from ltpll.errors import LTPLLError
from ltpll.metrics import predict_logits

# What a folder pool may hold: whatever Pillow decodes. Other files (README.txt...) are ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
PREDICT_BATCH_SIZE = 512

PseudoLabels = collections.namedtuple("PseudoLabels", ["indices", "labels", "confidences"])
UnlabeledImages = collections.namedtuple("UnlabeledImages", ["images", "paths", "skipped"])


# --------------------------------------------------------------------------------------------
# Labelling
# --------------------------------------------------------------------------------------------


def pseudo_label(model, images, threshold, max_count, batch_size=PREDICT_BATCH_SIZE):
    """Labels the images the model is confident about.

    Confidence is the top softmax probability of the model's *debiased* logits (a PLLModel's
    ``predict`` already removes the estimated prior), so a long-tailed run does not simply label
    everything as its head class.

    Args:
        model: a trained :class:`~ltpll.models.pll_model.PLLModel` (or any Keras model mapping a
            uint8 batch to logits).
        images: uint8 ``[N, H, W, 3]`` at the model's image size.
        threshold: keep images whose top probability is ``>= threshold``, in ``[0, 1]``
            (0 keeps every image).
        max_count: keep at most this many, the most confident ones (ties: the earlier image).
        batch_size: images per prediction batch.

    Returns:
        ``PseudoLabels(indices, labels, confidences)``: int64 indices into ``images`` in
        ascending order, their int64 predicted labels and float64 top probabilities.

    Raises:
        LTPLLError: if ``threshold`` is outside ``[0, 1]``, ``max_count < 0`` or
            ``batch_size < 1``.
    """
    _check_threshold(threshold)
    _check_count("max_count", max_count, minimum=0)
    _check_count("batch_size", batch_size, minimum=1)
    if len(images) == 0:
        return PseudoLabels(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    probabilities = softmax(predict_logits(model, images, batch_size=batch_size))
    labels = probabilities.argmax(axis=-1)
    confidences = probabilities.max(axis=-1)
    kept = np.flatnonzero(confidences >= threshold)
    if len(kept) > max_count:
        most_confident_first = np.argsort(-confidences[kept], kind="stable")
        kept = np.sort(kept[most_confident_first[:max_count]])
    return PseudoLabels(kept.astype(np.int64), labels[kept].astype(np.int64), confidences[kept])


def softmax(logits):
    """Row-wise softmax in float64 (stable for large logits)."""
    logits = np.asarray(logits, dtype=np.float64)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _check_threshold(threshold):
    if not (isinstance(threshold, (int, float, np.number)) and 0.0 <= threshold <= 1.0):
        raise LTPLLError(f"--threshold must be in [0, 1]; received {threshold}")


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LTPLLError(f"{name} must be an integer >= {minimum}; received {value!r}")


# --------------------------------------------------------------------------------------------
# Pools of unlabeled images
# --------------------------------------------------------------------------------------------


def leftover_pool(config, log=None):
    """The images of a run's training split that its training set did not use, as a pool.

    Offline this is the only unlabeled pool there is: CIFAR-10-LT keeps ``n_c`` of each class's
    5000 training images, and the rest are unlabeled data from the same distribution. But it is
    *reverse*-imbalanced: at the full ``n_max = 5000`` the head class has no image left and the
    tail class has almost all of its own, unlike the pool of Yang & Xu, which is as long-tailed
    as the labelled set. Images held out as a dev set (``--dev-per-class``) are not in the pool.

    Args:
        config: the run's :class:`~ltpll.config.RunConfig`.
        log: where :func:`~ltpll.data.prepare.prepare_data` reports (default: nowhere).

    Returns:
        ``(images, labels, paths)``: uint8 ``[P, H, W, 3]``, the int64 true labels (so the
        pseudo-labels' accuracy can be measured) and the split-relative paths.

    Raises:
        LTPLLError: if the run's data can no longer be loaded.
    """
    data_config = config.data
    if data_config.pseudo_labels:  # not needed to find the unused images
        data_config = dataclasses.replace(data_config, pseudo_labels=None)
    data = prepare_data(data_config, config.train.seed, log=log or (lambda *_, **__: None),
                        keep_split=True)
    index = np.asarray(data.unused_index, dtype=np.int64)
    split = data.split
    return split.images[index], split.labels[index].astype(np.int64), \
        [split.paths[i] for i in index]


def load_unlabeled_folder(folder, image_shape, workers=None):
    """Decodes every image file under ``folder``, at any depth, to the run's image shape.

    Class subfolders, if any, are ignored: the pool is unlabeled. Files are read in sorted order
    of their relative paths; hidden files and folders and files that are not images by their
    extension (:data:`IMAGE_EXTENSIONS`) are ignored. Decoding is Pillow's, as in
    :mod:`ltpll.data.sources` (so JPEG pixels match the training loader's), and images of another
    size get the Pillow bilinear resize that ``--image-size`` uses.

    Args:
        folder: a directory of image files.
        image_shape: ``(H, W, 3)`` to decode to.
        workers: decoding threads (Pillow releases the GIL); default: the CPU count, at most 16.

    Returns:
        ``UnlabeledImages(images, paths, skipped)``: uint8 ``[P, H, W, 3]``, the readable files'
        paths relative to ``folder`` (posix), and the relative paths of the files that could not
        be decoded and were left out.

    Raises:
        LTPLLError: if ``folder`` is not a directory, or holds no image file or no readable one.
    """
    from ltpll.data.sources import UnreadableImage, _open_rgb

    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise LTPLLError(f"unlabeled folder {folder} does not exist" if not os.path.exists(folder)
                         else f"--unlabeled {folder} is not a folder")
    paths = _image_files(folder)
    if not paths:
        raise LTPLLError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    shape = tuple(int(d) for d in image_shape)

    def decode(relative):
        try:
            return _fit(_open_rgb(os.path.join(folder, *relative.split("/"))), shape)
        except UnreadableImage:
            return None

    workers = workers or min(16, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(decode, paths))
    readable = [i for i, image in enumerate(decoded) if image is not None]
    skipped = [p for p, image in zip(paths, decoded) if image is None]
    if not readable:
        raise LTPLLError(f"none of the {len(paths)} images under {folder} can be decoded, "
                         f"e.g. {skipped[0]}")
    images = np.stack([decoded[i] for i in readable]).astype(np.uint8)
    return UnlabeledImages(images, [paths[i] for i in readable], skipped)


def _image_files(folder):
    """Relative posix paths of the image files under ``folder``, sorted; hidden ones left out."""
    found = []
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative = os.path.relpath(directory, folder)
        for name in files:
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            found.append(name if relative == "." else
                         "/".join([*relative.split(os.sep), name]))
    return sorted(found)


def _fit(array, shape):
    """``array`` resized to ``shape`` with Pillow's bilinear filter, as ``--image-size`` does."""
    if array.shape == shape:
        return array
    from PIL import Image

    height, width = shape[:2]
    resized = Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)
