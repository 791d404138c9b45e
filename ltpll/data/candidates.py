"""Candidate label sets: generate them, read and write them, summarise them.

In partial-label learning each training image comes with a *set* of candidate labels, one of
which is the (hidden) true label. Sets are stored as a float32 multi-hot matrix [N, C], the form
the disambiguation strategies consume directly.

Benchmarks make sets synthetically from clean labels (:func:`uniform_candidates`; with a
superclass table, :func:`hierarchical_candidates` for CIFAR-100-LT-NU and
:func:`superclass_candidates` for CIFAR-100-H); real annotations come from a CSV candidate file
(:func:`load_candidate_file`).
"""

from __future__ import annotations

import csv
import os
import posixpath

import numpy as np

from ltpll.data.defaults import DEFAULT_SUPERCLASS_RATIO
from ltpll.errors import LTPLLError
from ltpll.fileio import atomic_path

CANDIDATE_FILE_HEADER = ["path", "candidates"]
SEPARATOR = ";"

# CIFAR-100's 100 fine classes (label ids 0..99, alphabetical) and 20 superclasses (coarse ids).
CIFAR100_FINE_NAMES = ["apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm"]

_CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}
CIFAR100_COARSE_NAMES = sorted(_CIFAR100_SUPERCLASSES)


def _cifar100_superclass_of() -> np.ndarray:
    """Build the fine -> coarse id table from the named groups above (readable and checkable)."""
    table = np.full(len(CIFAR100_FINE_NAMES), -1, dtype=np.int64)
    for coarse_id, coarse in enumerate(CIFAR100_COARSE_NAMES):
        for fine in _CIFAR100_SUPERCLASSES[coarse].split():
            table[CIFAR100_FINE_NAMES.index(fine)] = coarse_id
    return table


#: ``CIFAR100_SUPERCLASS_OF[c]`` is the superclass (coarse label) of CIFAR-100 fine class ``c``.
CIFAR100_SUPERCLASS_OF = _cifar100_superclass_of()


# --------------------------------------------------------------------------------------------
# Synthetic candidate sets
# --------------------------------------------------------------------------------------------


def uniform_candidates(labels: np.ndarray, num_classes: int, q: float, seed: int,
                       dtype=np.float32) -> np.ndarray:
    """Uniform (instance-independent) candidate sets, the standard PLL benchmark protocol.

    The true label is always a candidate; every other label joins independently with
    probability ``q``, so the expected set size is ``1 + q * (C - 1)``.

    Args:
        labels: int array [N] of true labels.
        num_classes: number of classes ``C``.
        q: flipping probability, in [0, 1).
        seed: random seed.
        dtype: of the result; ``bool`` takes a quarter of float32's memory (iNaturalist 2018's
            437,513 x 8,142 sets: 3.6 GB instead of 14 GB).

    Returns:
        A multi-hot array [N, C] of ``dtype``. The uniform draws are made a block of rows at a
        time (the same stream as one ``[N, C]`` draw), so the only large array is the result.

    Raises:
        LTPLLError: ``q`` outside [0, 1) or labels outside ``0..C-1``.
    """
    _check_q(q)
    labels = _check_true_labels(labels, num_classes)
    return _draw_sets(labels, num_classes, lambda rows: q, seed, dtype)


def hierarchical_candidates(labels: np.ndarray, superclass_of: np.ndarray, q: float, seed: int,
                            ratio: float = DEFAULT_SUPERCLASS_RATIO,
                            dtype=np.float32) -> np.ndarray:
    """Candidate sets that favour the true label's superclass (the RECORDS paper's
    CIFAR-100-LT-NU, "non-uniform").

    Confusions in real annotation are mostly between similar classes (a "maple" taken for an
    "oak"), yet now and then between any two. So each other label of the true label's
    superclass joins with probability ``min(ratio * q, 1)`` and every label outside it with
    ``q``; the true label is always in. With ``k`` classes per superclass the expected set size
    is ``1 + (k - 1) * min(ratio * q, 1) + (C - k) * q``: on CIFAR-100 (20 superclasses of 5)
    at the paper's ratio 8, 4.81 / 7.35 / 9.89 for q = 0.03 / 0.05 / 0.07.

    Args:
        labels: int array [N] of true labels.
        superclass_of: int array [C]; ``superclass_of[c]`` is class ``c``'s superclass.
        q: flipping probability of a label outside the superclass, in [0, 1).
        seed: random seed.
        ratio: how many times likelier a superclass mate joins than any other label (>= 1).
        dtype: of the result (``bool`` for large sets, as :func:`uniform_candidates`).

    Returns:
        A multi-hot array [N, C] of ``dtype``, drawn a block of rows at a time.

    Raises:
        LTPLLError: ``q`` outside [0, 1), ``ratio < 1``, or labels outside the table.
    """
    _check_q(q)
    if not ratio >= 1:  # NaN fails too
        raise LTPLLError(f"superclass ratio must be >= 1; got {ratio}")
    superclass_of = _check_superclass_table(superclass_of)
    labels = _check_true_labels(labels, len(superclass_of))
    inside, outside = min(ratio * q, 1.0), q

    def rate(rows):
        same = superclass_of[labels[rows]][:, None] == superclass_of[None, :]
        return np.where(same, inside, outside)

    return _draw_sets(labels, len(superclass_of), rate, seed, dtype)


def superclass_candidates(labels: np.ndarray, superclass_of: np.ndarray, q: float, seed: int,
                          dtype=np.float32) -> np.ndarray:
    """Candidate sets drawn only from the true label's superclass (PiCO's CIFAR-100-H).

    Each other label of the true label's superclass joins with probability ``q``; labels of
    other superclasses never do, so the expected set size is ``1 + (k - 1) * q`` (1.2 on
    CIFAR-100 at q = 0.05): far smaller sets than :func:`hierarchical_candidates` at the same q.

    Args:
        labels: int array [N] of true labels.
        superclass_of: int array [C]; ``superclass_of[c]`` is class ``c``'s superclass.
        q: flipping probability, in [0, 1).
        seed: random seed.
        dtype: of the result.

    Returns:
        A multi-hot array [N, C] of ``dtype``.
    """
    _check_q(q)
    superclass_of = _check_superclass_table(superclass_of)
    labels = _check_true_labels(labels, len(superclass_of))

    def rate(rows):
        return np.where(superclass_of[labels[rows]][:, None] == superclass_of[None, :], q, 0.0)

    return _draw_sets(labels, len(superclass_of), rate, seed, dtype)


def _draw_sets(labels: np.ndarray, num_classes: int, rate, seed: int, dtype) -> np.ndarray:
    """Independent Bernoulli draws, ``rate(rows)`` (a scalar or a [rows, C] array) per label,
    plus the true label.

    The draws come a block of rows at a time from one generator, the same stream as one
    ``[N, C]`` draw: every protocol sees the same uniforms for the same seed, and memory stays
    that of the result (``uniform_candidates`` made its sets this way before the others).
    """
    rng = np.random.default_rng(seed)
    member = np.empty((len(labels), num_classes), dtype=dtype)
    block = max(1, (1 << 22) // max(1, num_classes))  # 32 MB of float64 draws at a time
    for start in range(0, len(labels), block):
        rows = np.arange(start, min(len(labels), start + block))
        member[rows] = rng.random((len(rows), num_classes)) < rate(rows)
    member[np.arange(len(labels)), labels] = 1
    return member


def _check_superclass_table(superclass_of) -> np.ndarray:
    superclass_of = np.asarray(superclass_of)
    if superclass_of.ndim != 1:
        raise LTPLLError(f"superclass_of must be a 1-D array [C]; got shape {superclass_of.shape}")
    return superclass_of


def _check_q(q: float) -> None:
    if not 0 <= q < 1:
        raise LTPLLError(f"candidate flipping probability q must be in [0, 1); got {q}")


def _check_true_labels(labels, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise LTPLLError(
            f"labels must be a 1-D integer array; got shape {labels.shape}, dtype {labels.dtype}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise LTPLLError(
            f"labels must lie in 0..{num_classes - 1} to generate candidates; "
            f"found {labels.min()}..{labels.max()}"
        )
    return labels.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Candidate files
# --------------------------------------------------------------------------------------------


def load_candidate_file(
    path, class_names: list[str], sample_paths: list[str], ignore_paths=()
) -> np.ndarray:
    """Read a candidate file into a multi-hot matrix aligned with ``sample_paths``.

    The file is a CSV with header ``path,candidates``; one row per image, its path relative to
    the dataset split root (as in :attr:`ImageSet.paths`, e.g. ``cat/0001.jpg``), its candidates
    ``;``-separated class names or integer class ids (a token naming a class wins over reading
    it as an id, so folders named ``0015`` work). Every image must have exactly one row.

    Args:
        path: the CSV file.
        class_names: the dataset's classes; column ``c`` of the result is ``class_names[c]``.
        sample_paths: the dataset's image paths; row ``i`` of the result is ``sample_paths[i]``.
        ignore_paths: paths whose rows are skipped (images left out as unreadable).

    Returns:
        float32 multi-hot array [len(sample_paths), len(class_names)].

    Raises:
        LTPLLError: naming the file (and line): missing file, bad header, unknown class, empty
            set, duplicate path, a path not in the dataset, or dataset images without a row.
    """
    path = os.fspath(path)
    row_of = {_normalise_path(p): i for i, p in enumerate(sample_paths)}
    class_of = _class_lookup(class_names)
    candidates = np.zeros((len(sample_paths), len(class_names)), dtype=np.float32)
    seen_line = {}
    ignored = {_normalise_path(p) for p in ignore_paths}
    for line, sample_path, field in _read_rows(path):
        where = f"{path}, line {line}"
        key = _normalise_path(sample_path)
        if key in ignored:
            continue
        if key in seen_line:
            raise LTPLLError(
                f"{where}: duplicate path {sample_path!r} (first on line {seen_line[key]})"
            )
        if key not in row_of:
            example = sample_paths[0] if sample_paths else "<none>"
            raise LTPLLError(
                f"{where}: path {sample_path!r} is not an image of the dataset "
                f"(paths are relative to the split folder, e.g. {example!r})"
            )
        seen_line[key] = line
        for cls in _parse_candidates(field, class_of, len(class_names), where):
            candidates[row_of[key], cls] = 1.0
    _check_all_rows_present(path, sample_paths, row_of, seen_line)
    return candidates


def _read_rows(path: str):
    """Yield ``(line number, path, candidates field)`` for each non-blank data row."""
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise LTPLLError(f"candidate file {path} does not exist") from None
    except OSError as error:
        raise LTPLLError(f"cannot read candidate file {path}: {error.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if [cell.strip() for cell in header or []] != CANDIDATE_FILE_HEADER:
            raise LTPLLError(
                f"{path}, line 1: header must be 'path,candidates'; got {','.join(header or [])!r}"
            )
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 2:
                raise LTPLLError(
                    f"{path}, line {reader.line_num}: expected 2 columns (path,candidates); "
                    f"got {len(row)}"
                )
            yield reader.line_num, row[0].strip(), row[1]


def _class_lookup(class_names: list[str]) -> dict[str, int]:
    lookup = {str(i): i for i in range(len(class_names))}
    lookup.update({name: i for i, name in enumerate(class_names)})
    return lookup


def _parse_candidates(field: str, class_of: dict[str, int], num_classes: int, where: str):
    tokens = [token.strip() for token in field.split(SEPARATOR)]
    tokens = [token for token in tokens if token]
    if not tokens:
        raise LTPLLError(f"{where}: empty candidate set")
    classes = []
    for token in tokens:
        if token not in class_of:
            raise LTPLLError(
                f"{where}: unknown class {token!r} (use one of the {num_classes} class names "
                f"or an id 0..{num_classes - 1})"
            )
        classes.append(class_of[token])
    return classes


def _check_all_rows_present(path, sample_paths, row_of, seen_line) -> None:
    missing = [p for p in sample_paths if _normalise_path(p) not in seen_line]
    if missing:
        raise LTPLLError(
            f"{path}: {len(missing)} dataset image(s) have no row, e.g. {missing[0]!r}"
        )


def _normalise_path(sample_path: str) -> str:
    """Treat ``./cat/1.jpg``, ``cat//1.jpg`` and ``cat\\1.jpg`` as the same image."""
    return posixpath.normpath(sample_path.strip().replace("\\", "/"))


def save_candidate_file(path, candidates, class_names: list[str], sample_paths: list[str]) -> None:
    """Write candidate sets as a candidate file (class names, in ``sample_paths`` order).

    Written to a temporary file and renamed into place, so a crash never leaves a truncated file
    that a later run would read as valid. :func:`load_candidate_file` reads it back exactly.

    Raises:
        LTPLLError: shapes that do not match, values other than 0/1, an empty set, or a class name
            that the format cannot hold (containing ``;`` or empty).
    """
    path = os.fspath(path)
    candidates = np.asarray(candidates)
    _check_saveable(candidates, class_names, sample_paths)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(CANDIDATE_FILE_HEADER)
            for sample_path, row in zip(sample_paths, candidates):
                names = [class_names[c] for c in np.flatnonzero(row)]
                writer.writerow([sample_path, SEPARATOR.join(names)])


def _check_saveable(candidates: np.ndarray, class_names, sample_paths) -> None:
    expected = (len(sample_paths), len(class_names))
    if candidates.shape != expected:
        raise LTPLLError(
            f"candidates have shape {candidates.shape}; expected {expected} "
            "(one row per sample path, one column per class)"
        )
    if not np.isin(candidates, (0, 1)).all():
        raise LTPLLError("candidates must be a 0/1 multi-hot matrix to be saved as sets")
    empty = np.flatnonzero(candidates.sum(axis=1) == 0)
    if len(empty):
        raise LTPLLError(
            f"{len(empty)} sample(s) have an empty candidate set, e.g. {sample_paths[empty[0]]!r}"
        )
    for name in class_names:
        if not name.strip() or SEPARATOR in name or name != name.strip():
            raise LTPLLError(f"class name {name!r} cannot be written to a candidate file")


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def candidate_stats(candidates, labels=None) -> dict:
    """Summary of candidate sets, for logs and sanity checks.

    Args:
        candidates: multi-hot [N, C].
        labels: optional true labels [N]; rows labelled -1 (unknown) are ignored.

    Returns:
        ``{"num_samples", "num_classes", "mean_size", "min_size", "max_size"}`` and, with labels,
        ``"true_label_rate"``: the fraction of rows whose set contains the true label (1.0 for
        sets generated by this module; lower means noisy partial labels).
    """
    candidates = np.asarray(candidates)
    if candidates.ndim != 2:
        raise LTPLLError(f"candidates must be a 2-D array [N, C]; got shape {candidates.shape}")
    sizes = (candidates > 0).sum(axis=1)
    stats = {
        "num_samples": int(candidates.shape[0]),
        "num_classes": int(candidates.shape[1]),
        "mean_size": float(sizes.mean()) if len(sizes) else 0.0,
        "min_size": int(sizes.min()) if len(sizes) else 0,
        "max_size": int(sizes.max()) if len(sizes) else 0,
    }
    if labels is not None:
        stats["true_label_rate"] = _true_label_rate(candidates, np.asarray(labels))
    return stats


def _true_label_rate(candidates: np.ndarray, labels: np.ndarray) -> float:
    if labels.shape != (candidates.shape[0],):
        raise LTPLLError(
            f"labels have shape {labels.shape}; expected ({candidates.shape[0]},)"
        )
    known = np.flatnonzero(labels >= 0)
    if not len(known):
        return float("nan")
    return float((candidates[known, labels[known]] > 0).mean())
