"""Pseudo-labelling a pool of unlabeled images with a trained run, for semi-supervised training.

Yang & Xu (NeurIPS 2020, "Rethinking the value of labels for improving class-imbalanced
learning") train a model on the long-tailed labelled set, let it label extra unlabeled images,
and train again on the labelled plus the pseudo-labelled images (they used five times as many
unlabeled images as labelled ones). Here:

1. :func:`pseudo_label` keeps the pool images whose top softmax probability (of the run's
   debiased logits) reaches a threshold, at most ``max_count`` of them, the most confident first;
2. :func:`save_pseudo_labels` writes them, with their labels, paths and a JSON summary, to one
   compressed ``.npz`` file (``ltpll pseudo-label``);
3. :func:`load_pseudo_labels` reads that file back for ``ltpll train --pseudo-labels FILE``,
   which adds the images as extra training samples whose candidate set is the pseudo-label alone.

The pool is a folder of image files (:func:`load_unlabeled_folder`) or, offline, the images of the
run's own training split that its long-tailed subset left out (:func:`leftover_pool`).
"""

import collections
import concurrent.futures
import json
import os
import zipfile
import zlib

import numpy as np

from ltpll.errors import LTPLLError

FORMAT = "ltpll-pseudo-labels"
FORMAT_VERSION = 1
# Arrays of a pseudo-label file; "metadata" is a JSON string (see save_pseudo_labels).
FILE_KEYS = ("images", "labels", "confidences", "paths", "class_names", "metadata")
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
    # Imported here, not at the top: ltpll.training imports this module.
    from ltpll.training import predict_logits

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


def accuracy_summary(labels, true_labels, class_names):
    """How often the pseudo-labels are right, overall and per pseudo-label class.

    Args:
        labels: int ``[M]`` pseudo-labels.
        true_labels: int ``[M]`` true labels of the same images.
        class_names: the run's class names.

    Returns:
        ``{"accuracy": float or None, "per_class_accuracy": {name: float or None}}``: None where
        no image was kept (per class: none was given that class).
    """
    labels, true_labels = np.asarray(labels), np.asarray(true_labels)
    correct = labels == true_labels
    per_class = {}
    for c, name in enumerate(class_names):
        given = labels == c
        per_class[name] = float(correct[given].mean()) if given.any() else None
    return {"accuracy": float(correct.mean()) if len(labels) else None,
            "per_class_accuracy": per_class}


# --------------------------------------------------------------------------------------------
# The pseudo-label file
# --------------------------------------------------------------------------------------------


def check_output_path(path):
    """Refuses a path that is not ``*.npz`` or already exists (never overwrite a user's file).

    Raises:
        LTPLLError: as above.
    """
    path = os.fspath(path)
    if not path.lower().endswith(".npz"):
        raise LTPLLError(f"the pseudo-label file must end in .npz; received {path}")
    if os.path.lexists(path):
        raise LTPLLError(f"{path} exists; choose another --output or delete it")


def save_pseudo_labels(path, images, labels, confidences, paths, class_names, source, *,
                       threshold=None, true_labels=None, extra=None):
    """Writes pseudo-labelled images to one compressed ``.npz`` file, atomically.

    The file holds ``images`` (uint8 ``[M, H, W, 3]``), ``labels`` (int64), ``confidences``
    (float32), ``paths`` and ``class_names`` (strings) and ``metadata``, a JSON string:
    ``format``, ``format_version``, ``ltpll_version``, ``source`` (the run), ``threshold``,
    ``num_images``, ``image_shape``, ``counts`` (images per pseudo-label class, by name) and,
    where ``true_labels`` are given, ``accuracy`` and ``per_class_accuracy``
    (:func:`accuracy_summary`), plus anything in ``extra``. No pickles: the file loads with
    ``allow_pickle=False``. It goes to a temporary file renamed into place when complete, so a
    crash never leaves half a file at ``path``.

    Args:
        path: the ``.npz`` file to write; must not exist.
        images: uint8 ``[M, H, W, 3]``.
        labels: int ``[M]`` pseudo-labels, indices into ``class_names``.
        confidences: float ``[M]`` top probabilities.
        paths: ``M`` strings naming each image's origin.
        class_names: the run's class names.
        source: what labelled them (the run directory).
        threshold: the confidence threshold used, recorded in the metadata.
        true_labels: int ``[M]`` true labels where the pool's labels are known, else None.
        extra: more JSON-serialisable metadata (e.g. the pool's description and size).

    Returns:
        The metadata dict.

    Raises:
        LTPLLError: if ``path`` does not end in ``.npz`` or exists, the arrays disagree in length
            or shape, a label is not a class, or the file cannot be written.
    """
    path = os.fspath(path)
    check_output_path(path)
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    confidences = np.asarray(confidences, dtype=np.float32)
    paths = [str(p) for p in paths]
    class_names = [str(name) for name in class_names]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise LTPLLError(f"pseudo-labelled images must be uint8 [M, H, W, 3]; received "
                         f"{images.dtype} {images.shape}")
    lengths = {len(images), len(labels), len(confidences), len(paths)}
    if true_labels is not None:
        lengths.add(len(true_labels))
    if len(lengths) != 1 or labels.ndim != 1:
        raise LTPLLError("images, labels, confidences and paths must have one entry per image")
    _check_labels(labels, len(class_names), path)

    counts = np.bincount(labels, minlength=len(class_names))
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ltpll_version": _version(),
        "source": str(source),
        "threshold": None if threshold is None else float(threshold),
        "num_images": len(images),
        "image_shape": [int(d) for d in images.shape[1:]],
        "counts": {name: int(n) for name, n in zip(class_names, counts)},
        **(accuracy_summary(labels, true_labels, class_names) if true_labels is not None
           else {"accuracy": None}),
        **(extra or {}),
    }
    from ltpll.fileio import atomic_path

    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(
                handle, images=images, labels=labels, confidences=confidences,
                paths=np.array(paths, dtype=str), class_names=np.array(class_names, dtype=str),
                metadata=np.array(json.dumps(metadata)),
            )
    except OSError as error:
        raise LTPLLError(f"cannot write {path}: {error.strerror or error}") from None
    return metadata


def load_pseudo_labels(path, class_names, image_shape):
    """Reads a file of :func:`save_pseudo_labels` for a run with these classes and image shape.

    Args:
        path: the ``.npz`` file written by ``ltpll pseudo-label``.
        class_names: the classes of the run being trained; the file's must be the same, in the
            same order (its labels are indices into them).
        image_shape: ``(H, W, 3)`` of the run's training images.

    Returns:
        ``(images, labels, paths)``: uint8 ``[M, H, W, 3]``, int64 ``[M]`` labels in
        ``0..C-1`` and a list of ``M`` path strings. ``M`` may be 0.

    Raises:
        LTPLLError: (one line) if the file is missing, unreadable or not a pseudo-label file,
            was written by a newer ltpll, or its classes or image shape differ from the run's.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LTPLLError(f"pseudo-label file {path} does not exist" if not os.path.exists(path)
                         else f"pseudo-label file {path} is not a file")
    stored = _read_file(path)
    names = [str(name) for name in class_names]
    if stored["class_names"] != names:
        raise LTPLLError(
            f"{path} labels the classes {_shorten(stored['class_names'])}, but this run has "
            f"{_shorten(names)}; make it with `ltpll pseudo-label` on a run of the same dataset")
    images, labels, paths = stored["images"], stored["labels"], stored["paths"]
    wanted = tuple(int(d) for d in image_shape)
    if images.ndim != 4 or images.shape[1:] != wanted:
        raise LTPLLError(f"{path} holds images of shape {images.shape[1:]}, but this run's are "
                         f"{wanted}; make it with a run of the same --image-size")
    if images.dtype != np.uint8 or labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise LTPLLError(f"{path} is not a valid pseudo-label file (image or label types)")
    if not len(images) == len(labels) == len(paths):
        raise LTPLLError(f"{path} is not a valid pseudo-label file ({len(images)} images, "
                         f"{len(labels)} labels, {len(paths)} paths)")
    _check_labels(labels, len(names), path)
    return images, labels.astype(np.int64), paths


def _read_file(path):
    """The file's arrays (class names and paths as lists), once its metadata says it is ours."""
    not_ours = (f"{path} is not an ltpll pseudo-label file; write one with "
                "`ltpll pseudo-label RUN --output FILE.npz`")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # a .npy file: one plain array
            raise LTPLLError(not_ours)
        with archive:
            if not all(key in archive.files for key in FILE_KEYS):
                raise LTPLLError(not_ours)
            stored = {key: archive[key] for key in FILE_KEYS}
    except LTPLLError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise LTPLLError(f"cannot read pseudo-label file {path}: {_first_line(error)}") from None
    try:
        metadata = json.loads(str(stored["metadata"]))
    except ValueError:
        raise LTPLLError(not_ours) from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise LTPLLError(not_ours)
    if not isinstance(metadata.get("format_version"), int) or \
            metadata["format_version"] > FORMAT_VERSION:
        raise LTPLLError(f"{path} was written by a newer ltpll (pseudo-label format "
                         f"{metadata.get('format_version')}); upgrade ltpll to read it")
    stored["class_names"] = [str(name) for name in stored["class_names"].reshape(-1)]
    stored["paths"] = [str(p) for p in stored["paths"].reshape(-1)]
    return stored


def _check_labels(labels, num_classes, path):
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise LTPLLError(f"{path}: pseudo-labels must lie in 0..{num_classes - 1}; found "
                         f"{labels.min()}..{labels.max()}")


def _shorten(names, limit=6):
    shown = ", ".join(names[:limit])
    return f"[{shown}{f' and {len(names) - limit} more' if len(names) > limit else ''}]"


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _version():
    from ltpll import __version__

    return __version__


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
        log: where :func:`~ltpll.training.prepare_data` reports (default: nowhere).

    Returns:
        ``(images, labels, paths)``: uint8 ``[P, H, W, 3]``, the int64 true labels (so the
        pseudo-labels' accuracy can be measured) and the split-relative paths.

    Raises:
        LTPLLError: if the run's data can no longer be loaded.
    """
    import dataclasses

    from ltpll.data.sources import load_split
    from ltpll.training import prepare_data

    data_config = config.data
    if getattr(data_config, "pseudo_labels", None):  # not needed to find the unused images
        data_config = dataclasses.replace(data_config, pseudo_labels=None)
    data = prepare_data(data_config, config.train.seed, log=log or (lambda *_, **__: None))
    train = load_split(data_config.dataset, data_config.train_split, data_config.image_size,
                       strict=data_config.strict)
    index = np.asarray(data.unused_index, dtype=np.int64)
    return train.images[index], train.labels[index].astype(np.int64), \
        [train.paths[i] for i in index]


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
