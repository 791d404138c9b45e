"""Superclass tables beyond tfds: CIFAR-100 class names, ``--superclasses FILE``, and the
candidate models that use them in a prepared training set."""

import os

import numpy as np
import pytest
from PIL import Image

from ltpll.config import DataConfig
from ltpll.data.prepare import prepare_data
from ltpll.data.superclasses import cifar100_superclasses, load_superclass_file
from ltpll.errors import LTPLLError

# Four CIFAR-100 classes from two superclasses: trees {maple_tree, oak_tree} and
# vehicles_2 {rocket, tank}. Sorted as a folder lists them.
CIFAR_CLASSES = ["maple_tree", "oak_tree", "rocket", "tank"]


def _quiet(*_args, **_kwargs):
    pass


def _folder(root, classes, per_class=10):
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", 2)):
        for name in classes:
            os.makedirs(root / split / name)
            for i in range(count):
                pixels = rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return str(root)


@pytest.fixture(scope="module")
def cifar_named_folder(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("cifar_named"), CIFAR_CLASSES)


def _write(tmp_path, text, name="superclasses.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_cifar100_names_get_the_builtin_table():
    table = cifar100_superclasses(["maple tree", "Oak_Tree", "rocket", "tank"])
    assert table[0] == table[1] and table[2] == table[3] and table[0] != table[2]
    assert cifar100_superclasses(["maple_tree", "spaceship"]) is None


def test_superclass_file_with_header_and_extra_classes(tmp_path):
    path = _write(tmp_path, "class,superclass\nant,insect\n\ncow, mammal\nbee,insect\nyak,mammal\n")
    table = load_superclass_file(path, ["ant", "bee", "cow"])
    assert table.tolist() == [0, 0, 1]


@pytest.mark.parametrize("text,classes,message", [
    ("ant,insect\nbee,insect\n", ["ant", "bee", "cow"], r"no superclass for class 'cow'"),
    ("ant,insect\nbee\n", ["ant", "bee"], r"line 2: expected 'class,superclass'"),
    ("ant,insect,x\n", ["ant"], r"line 1: expected 'class,superclass'"),
    ("ant,\n", ["ant"], r"line 1: expected"),
    ("dog,mammal\ncat,mammal\n", ["ant", "bee"], r"none of its classes.*unknown class 'dog'"),
    ("ant,insect\nant,mammal\n", ["ant"], r"line 2: class 'ant' is listed twice"),
])
def test_superclass_file_errors(tmp_path, text, classes, message):
    with pytest.raises(LTPLLError, match=message):
        load_superclass_file(_write(tmp_path, text), classes)


def test_missing_superclass_file(tmp_path):
    with pytest.raises(LTPLLError, match="superclass file .*nope.csv does not exist"):
        load_superclass_file(str(tmp_path / "nope.csv"), ["ant"])


def _sets_stay_in(data, superclass_of):
    rows, cols = np.nonzero(data.candidates)
    return bool((superclass_of[cols] == superclass_of[data.labels[rows]]).all())


def test_hierarchical_on_a_folder_of_cifar100_classes(cifar_named_folder):
    superclass_of = np.array([0, 0, 1, 1])
    # q = 0.125 at ratio 8: every superclass mate is in, so every set holds its superclass.
    nu = prepare_data(DataConfig(dataset=cifar_named_folder, candidate_model="nu",
                                 partial_rate=0.125), 0, log=_quiet)
    mates = superclass_of[nu.labels][:, None] == superclass_of[None, :]
    assert (nu.candidates[mates]).all()
    h = prepare_data(DataConfig(dataset=cifar_named_folder, candidate_model="h",
                                partial_rate=0.9), 0, log=_quiet)
    assert _sets_stay_in(h, superclass_of) and h.candidates.sum() > len(h.labels)


def test_superclasses_file_on_any_folder(image_folder, tmp_path):
    # The folder's classes are ant, bee, cow: the file puts ant and cow together.
    path = _write(tmp_path, "ant,a\ncow,a\nbee,b\nzebra,c\n")
    data = prepare_data(DataConfig(dataset=image_folder, candidate_model="h", partial_rate=0.9,
                                   superclasses=path), 0, log=_quiet)
    superclass_of = np.array([0, 1, 0])
    assert _sets_stay_in(data, superclass_of)
    assert (data.candidates[data.labels == 1] == [False, True, False]).all()
    assert data.candidates[data.labels == 0][:, 2].any()


def test_a_file_wins_over_the_cifar100_names(cifar_named_folder, tmp_path):
    path = _write(tmp_path, "maple_tree,x\nrocket,x\noak_tree,y\ntank,y\n")
    data = prepare_data(DataConfig(dataset=cifar_named_folder, candidate_model="h",
                                   partial_rate=0.9, superclasses=path), 0, log=_quiet)
    assert _sets_stay_in(data, np.array([0, 1, 0, 1]))


def test_hierarchical_without_superclasses_says_to_pass_a_file(image_folder):
    with pytest.raises(LTPLLError, match=r"--hierarchical .*needs superclasses.*--superclasses"):
        prepare_data(DataConfig(dataset=image_folder, candidate_model="nu"), 0, log=_quiet)
