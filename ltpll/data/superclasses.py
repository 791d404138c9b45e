"""Which classes are alike: the superclass table that hierarchical candidate sets draw from.

Real annotators confuse similar classes, so the ``nu`` and ``h`` candidate models
(:mod:`ltpll.data.candidates`) need each class's superclass. It comes, first match wins, from

1. ``--superclasses FILE``: a CSV of ``class,superclass`` rows, for any dataset (a user's own
   taxonomy is where their confusable labels come from); the file may name more classes than the
   dataset has (one taxonomy file for several subsets of it);
2. the dataset itself: tfds' ``cifar100`` carries coarse labels;
3. the class names: a folder whose classes are all CIFAR-100 fine names (``maple_tree``, or
   ``maple tree``) gets CIFAR-100's public table, so CIFAR-100 saved as folders (the offline way
   to have it) behaves as tfds' copy.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from ltpll.data.candidates import CIFAR100_FINE_NAMES, CIFAR100_SUPERCLASS_OF
from ltpll.errors import LTPLLError

SUPERCLASS_FILE_HEADER = ["class", "superclass"]


def superclass_table(class_names, own=None, path=None):
    """The superclass id of every class, or None where nothing gives one.

    Args:
        class_names: the dataset's classes, in label order.
        own: the dataset's own table (:attr:`ImageSet.superclass_of`), or None.
        path: a ``--superclasses`` CSV file, which wins over the others.

    Returns:
        int64 array ``[C]`` (classes share a superclass exactly when their ids are equal), or
        None.

    Raises:
        LTPLLError: for a bad superclass file (see :func:`load_superclass_file`).
    """
    if path:
        return load_superclass_file(path, class_names)
    if own is not None:
        return np.asarray(own, dtype=np.int64)
    return cifar100_superclasses(class_names)


def cifar100_superclasses(class_names):
    """CIFAR-100's table for classes that are all CIFAR-100 fine names (any subset of them, in
    any order; spaces and case do not matter), else None."""
    fine_id = {name: i for i, name in enumerate(CIFAR100_FINE_NAMES)}
    ids = [fine_id.get(_normalise(name)) for name in class_names]
    if not ids or None in ids:
        return None
    return CIFAR100_SUPERCLASS_OF[ids].astype(np.int64)


def _normalise(name) -> str:
    return "_".join(str(name).strip().lower().split())


def load_superclass_file(path, class_names):
    """Reads a ``class,superclass`` CSV into the superclass id of every class.

    An optional first row ``class,superclass`` is a header. Blank lines are skipped; class names
    must match the dataset's exactly (surrounding spaces aside). Superclass ids follow the order
    in which superclasses first appear in the file.

    Raises:
        LTPLLError: naming the file (and line): a missing or unreadable file, a row that is not
            two non-empty cells, a class listed twice, a file that names none of the dataset's
            classes, or a class of the dataset the file does not list.
    """
    path = os.fspath(path)
    superclass_of = {}
    first_line = {}
    for line, name, superclass in _read_rows(path):
        if name in first_line:
            raise LTPLLError(f"{path}, line {line}: class {name!r} is listed twice "
                             f"(first on line {first_line[name]})")
        first_line[name] = line
        superclass_of[name] = superclass
    known = [name for name in class_names if name in superclass_of]
    if superclass_of and not known:
        example = next(iter(superclass_of))
        raise LTPLLError(
            f"{path}: none of its classes is a class of the dataset (unknown class {example!r}; "
            f"the dataset's are e.g. {class_names[0]!r})"
        )
    missing = [name for name in class_names if name not in superclass_of]
    if missing:
        shown = ", ".join(repr(name) for name in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise LTPLLError(f"{path}: no superclass for class {shown}{more} of the dataset; "
                         "add a 'class,superclass' row for each")
    ids = {}
    for superclass in superclass_of.values():
        ids.setdefault(superclass, len(ids))
    return np.array([ids[superclass_of[name]] for name in class_names], dtype=np.int64)


def _read_rows(path):
    """Yield ``(line number, class, superclass)`` for each non-blank data row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))  # small: one row per class
    except FileNotFoundError:
        raise LTPLLError(f"superclass file {path} does not exist") from None
    except OSError as error:
        raise LTPLLError(f"cannot read superclass file {path}: {error.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise LTPLLError(f"superclass file {path} is not a UTF-8 CSV file "
                         f"({type(error).__name__})") from None
    for line, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if line == 1 and cells == SUPERCLASS_FILE_HEADER:
            continue
        if len(cells) != 2 or not all(cells):
            raise LTPLLError(f"{path}, line {line}: expected 'class,superclass' (two non-empty "
                             f"cells); got {','.join(row)!r}")
        yield line, cells[0], cells[1]
