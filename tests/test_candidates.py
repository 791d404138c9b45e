import os

import numpy as np
import pytest

from ltpll.data.candidates import (
    CIFAR100_COARSE_NAMES,
    CIFAR100_FINE_NAMES,
    CIFAR100_SUPERCLASS_OF,
    candidate_stats,
    hierarchical_candidates,
    load_candidate_file,
    save_candidate_file,
    superclass_candidates,
    uniform_candidates,
)
from ltpll.errors import LTPLLError

# The fine -> coarse table as published with CIFAR-100 tooling, typed in independently of ours.
PUBLISHED_SUPERCLASS_OF = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]  # fmt: skip


def _labels(n=20000, num_classes=10, seed=0):
    return np.random.default_rng(seed).integers(0, num_classes, n)


# --- synthetic sets ---------------------------------------------------------------------------


def test_uniform_true_label_always_present_and_mean_size():
    labels = _labels()
    candidates = uniform_candidates(labels, 10, q=0.3, seed=0)
    assert candidates.dtype == np.float32 and candidates.shape == (20000, 10)
    assert set(np.unique(candidates)) == {0.0, 1.0}
    assert (candidates[np.arange(len(labels)), labels] == 1).all()
    assert abs(candidates.sum(1).mean() - (1 + 0.3 * 9)) < 0.05
    # every wrong label joins at rate q, independently of which label is true
    wrong = np.ones_like(candidates, dtype=bool)
    wrong[np.arange(len(labels)), labels] = False
    per_label_rate = (candidates * wrong).sum(0) / wrong.sum(0)
    assert np.allclose(per_label_rate, 0.3, atol=0.02)


def test_uniform_is_seeded_and_q0_is_one_hot():
    labels = _labels(500)
    a = uniform_candidates(labels, 10, 0.5, seed=1)
    assert np.array_equal(a, uniform_candidates(labels, 10, 0.5, seed=1))
    assert not np.array_equal(a, uniform_candidates(labels, 10, 0.5, seed=2))
    assert np.array_equal(uniform_candidates(labels, 10, 0.0, seed=1), np.eye(10)[labels])


@pytest.mark.parametrize("q", [1.0, -0.1, 1.5])
def test_q_outside_range(q):
    with pytest.raises(LTPLLError, match=r"\[0, 1\)"):
        uniform_candidates(_labels(10), 10, q, seed=0)


def test_labels_outside_classes():
    with pytest.raises(LTPLLError, match="0..9"):
        uniform_candidates(np.array([0, 10]), 10, 0.1, seed=0)


def test_cifar100_h_never_leaves_the_superclass():
    labels = _labels(20000, 100)
    candidates = superclass_candidates(labels, CIFAR100_SUPERCLASS_OF, q=0.5, seed=0)
    assert (candidates[np.arange(len(labels)), labels] == 1).all()
    rows, cols = np.nonzero(candidates)
    assert (CIFAR100_SUPERCLASS_OF[cols] == CIFAR100_SUPERCLASS_OF[labels[rows]]).all()
    assert abs(candidates.sum(1).mean() - (1 + 0.5 * 4)) < 0.05


# Mean set sizes on CIFAR-100 (20 superclasses of 5), worked out by hand from the protocols:
# NU: the true label, 4 superclass mates at 8q each and 95 other labels at q: 1 + 32q + 95q;
# H: the true label and 4 superclass mates at q: 1 + 4q.
@pytest.mark.parametrize("q,nu_size,h_size", [(0.03, 4.81, 1.12), (0.05, 7.35, 1.20),
                                              (0.07, 9.89, 1.28)])
def test_mean_set_sizes_of_cifar100_lt_nu_and_cifar100_h(q, nu_size, h_size):
    labels = _labels(20000, 100)
    nu = hierarchical_candidates(labels, CIFAR100_SUPERCLASS_OF, q, seed=1)
    h = superclass_candidates(labels, CIFAR100_SUPERCLASS_OF, q, seed=1)
    # Standard errors over 20,000 sets: NU < 0.02 (a set's sd is < 2.8), H < 0.004.
    assert abs(nu.sum(1).mean() - nu_size) < 0.08
    assert abs(h.sum(1).mean() - h_size) < 0.015
    assert (nu[np.arange(len(labels)), labels] == 1).all()
    assert (h[np.arange(len(labels)), labels] == 1).all()


def test_cifar100_lt_nu_draws_superclass_mates_8x_as_often_as_the_rest():
    labels = _labels(20000, 100)
    nu = hierarchical_candidates(labels, CIFAR100_SUPERCLASS_OF, 0.05, seed=2)
    same = CIFAR100_SUPERCLASS_OF[labels][:, None] == CIFAR100_SUPERCLASS_OF[None, :]
    false = np.ones_like(same)
    false[np.arange(len(labels)), labels] = False
    assert abs(nu[same & false].mean() - 0.40) < 0.01  # 80,000 draws at 8 x 0.05
    assert abs(nu[~same].mean() - 0.05) < 0.002        # 1,900,000 draws at 0.05


def test_hierarchical_tiny_case_by_hand():
    # 6 classes: superclass A = {0, 1, 2}, B = {3, 4}, C = {5}.
    superclass_of = np.array([0, 0, 0, 1, 1, 2])
    labels = np.array([0, 3, 5, 1] * 500)
    # q = 0.125 at ratio 8: a superclass mate joins with probability 1, so every set holds its
    # whole superclass, and each outsider joins an eighth of the time.
    nu = hierarchical_candidates(labels, superclass_of, 0.125, seed=0)
    whole = {0: [0, 1, 2], 3: [3, 4], 5: [5], 1: [0, 1, 2]}
    for label, members in whole.items():
        assert (nu[labels == label][:, members] == 1).all()
    outsiders = ~(superclass_of[labels][:, None] == superclass_of[None, :])
    assert abs(nu[outsiders].mean() - 0.125) < 0.02
    # The cap: ratio x q above 1 is a sure draw, not an error; sizes 3 + 3q, 2 + 4q, 1 + 5q.
    capped = hierarchical_candidates(labels, superclass_of, 0.5, seed=0)
    assert (capped[labels == 3][:, [3, 4]] == 1).all()
    # H on the same table: the singleton superclass C keeps only its true label, always.
    h = superclass_candidates(labels, superclass_of, 0.9, seed=0)
    assert (h[labels == 5] == np.eye(6)[5]).all()
    assert not h[labels == 3][:, [0, 1, 2, 5]].any()


def test_hierarchical_with_ratio_1_is_uniform():
    # Ratio 1 puts superclass mates at q as well: the same draws as the uniform protocol.
    labels = _labels(300, 100)
    assert np.array_equal(hierarchical_candidates(labels, CIFAR100_SUPERCLASS_OF, 0.1, 7, ratio=1),
                          uniform_candidates(labels, 100, 0.1, 7))


def test_hierarchical_rejects_a_ratio_below_1():
    with pytest.raises(LTPLLError, match="ratio must be >= 1"):
        hierarchical_candidates(np.array([0]), np.array([0, 0]), 0.1, 0, ratio=0.5)


def test_cifar100_superclasses():
    assert CIFAR100_SUPERCLASS_OF.shape == (100,)
    assert np.bincount(CIFAR100_SUPERCLASS_OF).tolist() == [5] * 20
    assert CIFAR100_SUPERCLASS_OF.tolist() == PUBLISHED_SUPERCLASS_OF
    fine, coarse = CIFAR100_FINE_NAMES.index, CIFAR100_COARSE_NAMES
    assert coarse[CIFAR100_SUPERCLASS_OF[fine("whale")]] == "aquatic_mammals"
    assert coarse[CIFAR100_SUPERCLASS_OF[fine("oak_tree")]] == "trees"


# --- candidate files --------------------------------------------------------------------------

CLASSES = ["cat", "dog", "0015", "bird"]
PATHS = [f"{c}/{i:04d}.jpg" for c in ("bird", "cat", "dog") for i in range(5)]


def _random_sets(seed=0):
    rng = np.random.default_rng(seed)
    candidates = (rng.random((len(PATHS), len(CLASSES))) < 0.4).astype(np.float32)
    candidates[np.arange(len(PATHS)), rng.integers(0, len(CLASSES), len(PATHS))] = 1
    return candidates


def test_round_trip_is_exact(tmp_path):
    candidates = _random_sets()
    path = tmp_path / "sets" / "candidates.csv"
    save_candidate_file(path, candidates, CLASSES, PATHS)
    loaded = load_candidate_file(path, CLASSES, PATHS)
    assert loaded.dtype == np.float32
    assert np.array_equal(loaded, candidates)
    assert os.listdir(path.parent) == ["candidates.csv"]  # no temporary file left behind
    assert path.read_text().splitlines()[0] == "path,candidates"


def test_rows_in_any_order_with_names_and_ids(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("path,candidates\n\ndog/0001.jpg, 1;cat \n./cat/0000.jpg,0015\n" + "".join(
        f"{p},bird\n" for p in PATHS if p not in ("dog/0001.jpg", "cat/0000.jpg")
    ))
    loaded = load_candidate_file(path, CLASSES, PATHS)
    assert loaded[PATHS.index("dog/0001.jpg")].tolist() == [1, 1, 0, 0]
    # "0015" is a class name, which wins over reading it as an id
    assert loaded[PATHS.index("cat/0000.jpg")].tolist() == [0, 0, 1, 0]
    assert loaded[PATHS.index("bird/0003.jpg")].tolist() == [0, 0, 0, 1]


def _write(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


def _all_rows(skip=()):
    return "".join(f"{p},cat\n" for p in PATHS if p not in skip)


@pytest.mark.parametrize(
    "text, message",
    [
        ("file,labels\n" + _all_rows(), r"bad.csv, line 1: header"),
        ("path,candidates\n" + _all_rows() + "", None),
        ("path,candidates\nbird/0000.jpg,cat;horse\n", r"line 2: unknown class 'horse'"),
        ("path,candidates\nbird/0000.jpg,9\n", r"line 2: unknown class '9'"),
        ("path,candidates\nbird/0000.jpg, ; \n", r"line 2: empty candidate set"),
        ("path,candidates\nbird/0000.jpg,cat\nbird/0000.jpg,dog\n", r"line 3: duplicate path"),
        ("path,candidates\nbird/9999.jpg,cat\n", r"line 2: path 'bird/9999.jpg' is not an image"),
        ("path,candidates\nbird/0000.jpg,cat,dog\n", r"line 2: expected 2 columns"),
        ("path,candidates\n" + _all_rows(skip=PATHS[3:5]), r"2 dataset image\(s\) have no row, "
         r"e.g. 'bird/0003.jpg'"),
    ],
)
def test_candidate_file_errors(tmp_path, text, message):
    path = _write(tmp_path, text)
    if message is None:  # the well-formed control case
        assert load_candidate_file(path, CLASSES, PATHS).sum() == len(PATHS)
        return
    with pytest.raises(LTPLLError, match=message) as error:
        load_candidate_file(path, CLASSES, PATHS)
    assert str(path) in str(error.value)


def test_missing_candidate_file(tmp_path):
    with pytest.raises(LTPLLError, match="does not exist"):
        load_candidate_file(tmp_path / "nope.csv", CLASSES, PATHS)


def test_save_refuses_what_it_could_not_read_back(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("keep me")
    empty_row = _random_sets()
    empty_row[2] = 0
    with pytest.raises(LTPLLError, match="empty candidate set"):
        save_candidate_file(path, empty_row, CLASSES, PATHS)
    with pytest.raises(LTPLLError, match="cannot be written"):
        save_candidate_file(path, _random_sets(), ["a;b", "dog", "x", "y"], PATHS)
    with pytest.raises(LTPLLError, match="0/1"):
        save_candidate_file(path, _random_sets() * 0.5, CLASSES, PATHS)
    assert path.read_text() == "keep me"


def test_candidate_stats():
    candidates = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=np.float32)
    stats = candidate_stats(candidates, labels=np.array([0, 2, 1, -1]))
    assert stats == {
        "num_samples": 4,
        "num_classes": 3,
        "mean_size": 7 / 4,
        "min_size": 1,
        "max_size": 3,
        "true_label_rate": 2 / 3,  # row 1 misses its label; row 3 (unknown) does not count
    }
    assert "true_label_rate" not in candidate_stats(candidates)
