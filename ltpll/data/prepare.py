"""From a data config to the LT-PLL training set: load, subsample, candidates, dev set,
pseudo-labels (all numpy, once per run).

:func:`prepare_data` is the whole of it; each step is a function of its own:

1. :func:`load_splits`: the training and test splits, checked against each other;
2. :func:`subset_indices`: the long-tailed subset (``--imbalance-ratio``), or a cap per class
   (``--max-per-class`` alone), or everything;
3. :func:`hold_out_dev` (``--dev-per-class``): clean images per class kept out of training;
4. :func:`make_candidates`: the user's candidate file, or generated uniform / hierarchical sets
   (``--candidate-model``, with the superclasses of :mod:`ltpll.data.superclasses`);
5. :func:`hold_out_val` (``--val-fraction``): a random share of the training set, candidate sets
   and all, kept out of training for label-free epoch selection;
6. :func:`add_pseudo_labels` (``--pseudo-labels``): extra single-candidate samples.
"""

import dataclasses

import numpy as np

from ltpll.data import candidates as candidate_sets
from ltpll.data import files as image_files
from ltpll.data import longtail, superclasses
from ltpll.data.devset import hold_out_dev
from ltpll.data.pseudo_label_file import load_pseudo_labels
from ltpll.data.sources import ImageSet, load_split
from ltpll.data.valsplit import hold_out_val
from ltpll.errors import LTPLLError


@dataclasses.dataclass
class TrainingData:
    """The LT-PLL training set and the test split, as numpy arrays."""

    images: np.ndarray          # uint8 [N, H, W, 3], or ImageFiles streamed from disk
    candidates: np.ndarray      # bool [N, C] multi-hot
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
    # The whole training split as loaded, only when asked for (prepare_data(keep_split=True)).
    split: ImageSet = None
    # The held-out partial-label validation split (``--val-fraction``): images (in memory or
    # streamed, as the training set), candidate sets and source paths; empty without one.
    val_images: np.ndarray = None
    val_candidates: np.ndarray = None
    val_paths: list = None

    @property
    def num_classes(self):
        return len(self.class_names)


def prepare_data(data_config, seed, log=print, keep_split=False):
    """Loads the splits, subsamples the long tail and makes or loads the candidate sets.

    Args:
        data_config: a validated :class:`~ltpll.config.DataConfig`.
        seed: the run's seed, which fixes the data unless ``data_config.data_seed`` is set
            (:func:`data_seed`): subsampling and the dev set use that seed, candidate
            generation ``seed + 1``.
        log: where to print the class counts and candidate statistics.
        keep_split: keep the whole loaded training split in ``TrainingData.split`` (for the
            images the subset left out), instead of letting it go.

    Raises:
        LTPLLError: for any problem with the data.
    """
    seed = data_seed(data_config, seed)
    train, test = load_splits(data_config, log)
    num_classes = len(train.class_names)
    user_candidates = None
    if data_config.candidates:
        user_candidates = candidate_sets.load_candidate_file(
            data_config.candidates, train.class_names, train.paths, ignore_paths=train.skipped
        )
    keep = subset_indices(train.labels, train.class_names, data_config, seed)
    dev_index = np.zeros(0, dtype=np.int64)
    if data_config.dev_per_class:
        dev_index, keep = hold_out_dev(train.labels, keep, data_config.dev_per_class,
                                       num_classes, seed, class_names=train.class_names)
        log(f"dev set: {len(dev_index)} images ({data_config.dev_per_class} per class) held out "
            "of training")
    labels = train.labels[keep]
    candidates = (user_candidates[keep] if user_candidates is not None
                  else make_candidates(labels, train, data_config, seed + 1))
    # The candidate sets are drawn before the split, so the images that stay in training keep
    # the sets they would have without one.
    val_index, val_candidates = keep[:0], candidates[:0]
    if data_config.val_fraction:
        val_at, train_at = hold_out_val(len(keep), data_config.val_fraction, seed, labels,
                                        list(train.class_names))
        val_index, val_candidates = keep[val_at], candidates[val_at]
        keep, labels, candidates = keep[train_at], labels[train_at], candidates[train_at]
        log(f"validation split: {len(val_index)} images ({data_config.val_fraction:g} of the "
            "training set) held out with their candidate sets")
    class_counts = np.bincount(labels, minlength=num_classes)
    stats = candidate_sets.candidate_stats(candidates, labels)
    log(f"training set: {len(keep)} images in {num_classes} classes; per-class counts "
        f"{class_counts.tolist()}")
    log(f"candidate sets: mean size {stats['mean_size']:.3f}")
    unused = np.ones(len(train.labels), dtype=bool)
    unused[keep] = unused[dev_index] = unused[val_index] = False
    dev_images = train.images[dev_index]
    if image_files.is_streamed(dev_images):  # small, and read at every meta step
        dev_images = dev_images.decode()
    data = TrainingData(
        images=train.images[keep],
        candidates=_as_bool(candidates),
        labels=labels,
        paths=[train.paths[i] for i in keep],
        class_names=list(train.class_names),
        class_counts=class_counts,
        test_images=test.images,
        test_labels=test.labels,
        unused_index=np.flatnonzero(unused),
        dev_images=dev_images,
        dev_labels=train.labels[dev_index],
        split=train if keep_split else None,
        val_images=train.images[val_index],
        val_candidates=_as_bool(val_candidates),
        val_paths=[train.paths[i] for i in val_index],
    )
    if data_config.pseudo_labels:
        data = add_pseudo_labels(data, data_config.pseudo_labels, log)
    return data


def data_seed(data_config, seed):
    """The seed of everything that fixes the dataset: ``--data-seed``, else the run's seed.

    Shuffling, augmentation and initialisation keep the run's seed, so runs of several seeds
    with one ``--data-seed`` differ only in training (the RECORDS authors' scripts build one
    subset and one set of candidates for every seed), and runs with several data seeds measure
    the spread the data adds.
    """
    return seed if data_config.data_seed is None else data_config.data_seed


def load_splits(data_config, log=print):
    """The training and test splits, with the test classes aligned to the training ones.

    Raises:
        LTPLLError: for images of different sizes, unknown test classes, or a class without
            test images.
    """
    reading = dict(strict=data_config.strict, input_mode=data_config.input_mode,
                   memory_budget=data_config.memory_budget, log=log)
    train = load_split(data_config.dataset, data_config.train_split, data_config.image_size,
                       **reading)
    if data_config.image_size is None and train.image_size is not None:
        # The default size for images of mixed sizes: the test split and the run config (so
        # resume, evaluate and export) take it too.
        data_config.image_size = train.image_size
    test = load_split(data_config.dataset, data_config.test_split, data_config.image_size,
                      classes=train, **reading)
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
        test = align_classes(train.class_names, test)
    _check_every_class_tested(train.class_names, test.labels, data_config.test_split)
    return train, test


def subset_indices(labels, class_names, data_config, seed):
    """Indices of the training images the run keeps, ascending.

    * with ``imbalance_ratio``: the long-tailed subset (``n_max`` = ``max_per_class`` or the
      largest class; under the superclass candidate models ``nu`` and ``h`` the counts go to
      classes in a seeded order, as the RECORDS authors' CIFAR-100-LT-NU);
    * with ``max_per_class`` alone: at most that many images of each class;
    * otherwise: every image.

    Each class draws its images by its own seeded shuffle (:func:`longtail.longtail_indices`).
    """
    num_classes = len(class_names)
    available = np.bincount(labels, minlength=num_classes)
    if data_config.imbalance_ratio is not None:
        n_max = data_config.max_per_class or int(available.max())
        counts = longtail.class_counts(
            n_max, num_classes, data_config.imbalance_ratio, data_config.imbalance_profile
        )
        shuffled = data_config.candidate_model != "uniform"
        order = longtail.shuffled_class_order(num_classes, seed) if shuffled else None
        return longtail.longtail_indices(labels, counts, seed, class_order=order,
                                         class_names=list(class_names))
    if data_config.max_per_class is not None:
        counts = np.minimum(available, data_config.max_per_class)
        return longtail.longtail_indices(labels, counts, seed, class_names=list(class_names))
    return np.arange(len(labels))


_CANDIDATE_MODEL_FLAGS = {"nu": "--hierarchical (--candidate-model nu)", "h": "--candidate-model h"}


def make_candidates(labels, train, data_config, seed):
    """Generated candidate sets of the kept images, by ``data_config.candidate_model``:
    uniform with rate q, ``nu`` (CIFAR-100-LT-NU) or ``h`` (CIFAR-100-H).

    Raises:
        LTPLLError: ``nu`` or ``h`` on a dataset without superclasses and no ``--superclasses``
            file, or a bad superclass file.
    """
    model = data_config.candidate_model
    if model != "uniform":
        table = superclasses.superclass_table(train.class_names, train.superclass_of,
                                              data_config.superclasses)
        if table is None:
            raise LTPLLError(
                f"{_CANDIDATE_MODEL_FLAGS[model]} needs superclasses, which "
                f"{data_config.dataset!r} does not have; pass --superclasses FILE (CSV rows "
                "'class,superclass')"
            )
        if model == "h":
            return candidate_sets.superclass_candidates(
                labels, table, data_config.partial_rate, seed, dtype=bool)
        return candidate_sets.hierarchical_candidates(
            labels, table, data_config.partial_rate, seed, ratio=data_config.superclass_ratio,
            dtype=bool)
    return candidate_sets.uniform_candidates(
        labels, len(train.class_names), data_config.partial_rate, seed, dtype=bool
    )


def add_pseudo_labels(data, path, log=print):
    """Appends the images of an ``ltpll pseudo-label`` file as single-candidate samples.

    Their hidden label is -1 (unknown): training accuracy and the class counts (which define
    Many/Medium/Few and the oracle baselines) stay those of the labelled set.
    """
    if image_files.is_streamed(data.images):
        raise LTPLLError("--pseudo-labels adds in-memory images, which a training set streamed "
                         "from disk cannot take; pass --in-memory")
    images, labels, paths = load_pseudo_labels(path, data.class_names, data.images.shape[1:])
    log(f"pseudo-labels: {len(labels)} extra single-candidate images from {path}; per class "
        f"{np.bincount(labels, minlength=data.num_classes).tolist()}")
    one_hot = np.eye(data.num_classes, dtype=bool)[labels]
    return dataclasses.replace(
        data,
        images=np.concatenate([data.images, images]),
        candidates=np.concatenate([data.candidates, one_hot]),
        labels=np.concatenate([data.labels, np.full(len(labels), -1, dtype=data.labels.dtype)]),
        paths=data.paths + [f"pseudo:{p}" for p in paths],
    )


def _readable(images, rows):
    """The decoded images at ``rows``, leaving out the files that cannot be decoded (which the
    streaming pipeline skips too)."""
    unreadable = []
    decoded = images.decode(rows, on_error=lambda row, _error: unreadable.append(row))
    return np.delete(decoded, unreadable, axis=0)


def _as_bool(candidates):
    """Multi-hot sets as bool (a quarter of float32's memory), without a copy if they are."""
    candidates = np.asarray(candidates)
    return candidates if candidates.dtype == bool else candidates > 0


def _check_every_class_tested(class_names, test_labels, split):
    """Per-class and Many/Medium/Few accuracy need test images of every class."""
    missing = [name for c, name in enumerate(class_names) if not np.any(test_labels == c)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise LTPLLError(
            f"the {split} split has no images of class(es) {shown}, which the training split has; "
            "every class needs test images"
        )


def align_classes(train_classes, test):
    """Relabels a split whose class list is a subset of the training classes."""
    index_of = {name: i for i, name in enumerate(train_classes)}
    unknown = [name for name in test.class_names if name not in index_of]
    if unknown:
        raise LTPLLError(f"test split has classes not in the training split: {', '.join(unknown)}")
    mapping = np.array([index_of[name] for name in test.class_names])
    return dataclasses.replace(test, labels=mapping[test.labels], class_names=list(train_classes))


#: Images decoded to estimate the channel statistics of a set streamed from disk.
STATISTICS_SAMPLE = 1000


def channel_statistics(images, seed=0, block=64):
    """Per-channel mean and std of uint8 images, in [0, 1] units (for normalisation).

    One pass over ``block`` images at a time in float64, each block's mean and squared
    deviations merged into the running ones (Chan et al.'s pairwise update): the memory is that
    of one block, not a float64 copy of every pixel (2.3 MB per 224-px image). Images on disk are
    estimated from a seeded sample of :data:`STATISTICS_SAMPLE` of them (the standard error of a
    channel mean is then ~0.1% of the pixel range), decoded a block at a time.
    """
    if image_files.is_streamed(images):
        rows = np.sort(np.random.default_rng(seed).permutation(len(images))[:STATISTICS_SAMPLE])
        chunks = (_readable(images, rows[start:start + block])
                  for start in range(0, len(rows), block))
    else:
        chunks = (images[start:start + block] for start in range(0, len(images), block))
    channels = images.shape[-1]
    count, mean, squares = 0, np.zeros(channels), np.zeros(channels)
    for chunk in chunks:
        pixels = chunk.reshape(-1, channels).astype(np.float64)
        size, chunk_mean = len(pixels), pixels.mean(axis=0)
        delta = chunk_mean - mean
        total = count + size
        mean = mean + delta * (size / total)
        squares = squares + ((pixels - chunk_mean) ** 2).sum(axis=0) + delta**2 * count * size / total
        count = total
    std = np.sqrt(squares / count)
    return tuple((mean / 255.0).tolist()), tuple(np.maximum(std / 255.0, 1e-3).tolist())
