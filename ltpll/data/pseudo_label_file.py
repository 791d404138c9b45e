"""The pseudo-label file: what ``ltpll pseudo-label`` writes and ``ltpll train --pseudo-labels``
reads.

One compressed ``.npz`` holding the kept images (uint8), their pseudo-labels, confidences and
source paths, the class names, and a JSON summary (counts per class, accuracy against the true
labels where they are known). Keras-free: reading it is part of preparing the training data.
"""

import json
import os
import zipfile
import zlib

import numpy as np

from ltpll.errors import LTPLLError
from ltpll.fileio import atomic_path

FORMAT = "ltpll-pseudo-labels"
FORMAT_VERSION = 1
# Arrays of a pseudo-label file; "metadata" is a JSON string (see save_pseudo_labels).
FILE_KEYS = ("images", "labels", "confidences", "paths", "class_names", "metadata")


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
