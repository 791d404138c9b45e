"""Datasets described by a list of files: the ImageNet-LT / Places-LT text lists and the
iNaturalist (COCO-style) JSON.

* A **text list** has one ``relative/path.jpg label_id`` per line, paths relative to the
  dataset root (``ImageNet_LT_train.txt``). An optional third column names the class. Without
  names, a class is named after the folder all its images are in when each class has a folder of
  its own (ImageNet's ``n01440764``), else after its id.
* A **JSON** file is COCO-style: ``images`` (``id``, ``file_name``), ``annotations``
  (``image_id``, ``category_id``) and ``categories`` (``id``, ``name``), as iNaturalist
  2017/2018/2019 release them. Category ids become labels in ascending order.

``inat2018:ROOT`` (and ``inat2017:``, ``inat2019:``) names ``ROOT`` with its release's train and
validation JSON files (:func:`dataset_spec`).

Label ids mean the same class in both lists: a test list must not add classes the training list
lacks (:func:`read_list` takes the training list's classes).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from ltpll.errors import LTPLLError

LIST_SUFFIXES = (".txt", ".lst", ".json")
#: ``<name>:ROOT`` -> (train file, test file) inside ROOT.
INATURALIST = {
    "inat2017": ("train2017.json", "val2017.json"),
    "inat2018": ("train2018.json", "val2018.json"),
    "inat2019": ("train2019.json", "val2019.json"),
}


@dataclasses.dataclass
class FileList:
    """The images of one list: absolute files, the list's own paths, labels, class names."""

    files: list[str]
    paths: list[str]
    labels: np.ndarray
    class_names: list[str]
    # The list's own class ids (text lists) or category ids (JSON), in label order: label c is
    # class id ``class_ids[c]`` of the file.
    class_ids: list[int]


def dataset_spec(dataset: str, split: str):
    """``(root, split)`` with ``inat2018:ROOT``-style names expanded: the release's training
    JSON for the ``train`` split, its validation JSON for ``test``/``val``, else ``split``."""
    prefix, sep, root = dataset.partition(":")
    if not (sep and prefix in INATURALIST):
        return dataset, split
    if not root:
        raise LTPLLError(f"{dataset!r}: give the dataset root after the colon, "
                         f"e.g. {prefix}:/data/inaturalist")
    train_file, test_file = INATURALIST[prefix]
    return root, {"train": train_file, "test": test_file, "val": test_file}.get(split, split)


def is_list_split(root: Path, split: str) -> bool:
    """True when ``split`` names a list file (by its suffix) rather than a split folder."""
    return split.lower().endswith(LIST_SUFFIXES) and not (root / split).is_dir()


def list_path(root: Path, split: str) -> Path:
    """The list file: as given if it exists, else relative to the dataset root.

    Raises:
        LTPLLError: if neither exists.
    """
    for candidate in (Path(split).expanduser(), root / split):
        if candidate.is_file():
            return candidate
    raise LTPLLError(f"no list file {split!r} (looked in the working directory and {root})")


def read_list(root: Path, split: str, classes: tuple[list, list] | None = None) -> FileList:
    """The images of a text or JSON list, their files under ``root``.

    Args:
        classes: ``(class_ids, class_names)`` of the training list, which this (test) list
            must use.

    Raises:
        LTPLLError: a malformed line or JSON, an empty list, or classes the training list lacks.
    """
    path = list_path(root, split)
    if path.suffix.lower() == ".json":
        paths, ids, names = _read_json(path)
    else:
        paths, ids, names = _read_text(path)
    if not paths:
        raise LTPLLError(f"{path} lists no images")
    if classes is None:
        class_ids = sorted(set(ids) | set(names))
        class_names = [names.get(i) or str(i) for i in class_ids]
        if not any(names.values()):
            class_names = _folder_names(paths, ids, class_ids) or class_names
    else:
        class_ids, class_names = classes
        unknown = sorted(set(ids) - set(class_ids))
        if unknown:
            raise LTPLLError(
                f"{path} has label id(s) the training list lacks: "
                f"{', '.join(map(str, unknown[:5]))}"
            )
    label_of = {class_id: label for label, class_id in enumerate(class_ids)}
    labels = np.array([label_of[i] for i in ids], dtype=np.int64)
    root_text = str(root)
    files = [os.path.join(root_text, p) for p in paths]
    return FileList(files, paths, labels, class_names, list(class_ids))


def _read_text(path: Path):
    paths, ids, names = [], [], {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split(maxsplit=2)
            if not fields:
                continue
            try:
                class_id = int(fields[1])
            except (IndexError, ValueError):
                raise LTPLLError(
                    f"{path}:{number}: expected 'relative/path.jpg label_id [class name]'; "
                    f"got {line.strip()[:80]!r}"
                ) from None
            if class_id < 0:
                raise LTPLLError(f"{path}:{number}: label id must be >= 0; got {class_id}")
            paths.append(fields[0])
            ids.append(class_id)
            if len(fields) > 2:
                names.setdefault(class_id, fields[2].strip())
            else:
                names.setdefault(class_id, None)
    return paths, ids, names


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        file_of = {image["id"]: image["file_name"] for image in data["images"]}
        names = {c["id"]: str(c.get("name", c["id"])) for c in data.get("categories", [])}
        annotated = [(a["image_id"], int(a["category_id"])) for a in data["annotations"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LTPLLError(
            f"{path} is not a COCO-style list (images/annotations/categories): {error}"
        ) from None
    missing = [image_id for image_id, _ in annotated if image_id not in file_of]
    if missing:
        raise LTPLLError(f"{path}: annotation of unknown image id {missing[0]}")
    paths = [file_of[image_id] for image_id, _ in annotated]
    ids = [category for _, category in annotated]
    for category in ids:
        names.setdefault(category, str(category))
    return paths, ids, names


def _folder_names(paths, ids, class_ids):
    """Each class's folder name when every class has its own folder (ImageNet), else None."""
    folders = collections.defaultdict(set)
    for path, class_id in zip(paths, ids):
        folders[class_id].add(os.path.basename(os.path.dirname(path)))
    names = [next(iter(folders[c])) if len(folders[c]) == 1 else None for c in class_ids]
    if None in names or "" in names or len(set(names)) != len(names):
        return None
    return names
