import numpy as np
import pytest

from ltpll.data.longtail import class_counts, longtail_indices, shuffled_class_order
from ltpll.errors import LTPLLError


def test_exp_counts_match_the_published_cifar10_lt():
    counts = class_counts(5000, 10, 100)
    assert counts.dtype == np.int64
    assert counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert counts.sum() == 12406  # the CIFAR-10-LT (rho=100) training set size in the literature


def test_exp_counts_match_the_published_cifar100_lt():
    counts = class_counts(500, 100, 100)
    assert counts[0] == 500 and counts[-1] == 5
    assert counts.sum() == 10847
    assert (np.diff(counts) <= 0).all()


def test_step_counts():
    assert class_counts(5000, 10, 10, "step").tolist() == [5000] * 5 + [500] * 5
    assert class_counts(100, 5, 4, "step").tolist() == [100, 100, 25, 25, 25]


def test_balanced_and_single_class():
    assert class_counts(7, 4, 1).tolist() == [7, 7, 7, 7]
    assert class_counts(7, 1, 50).tolist() == [7]


@pytest.mark.parametrize(
    "args, message",
    [
        ((5000, 10, 0.5), "imbalance ratio"),
        ((0, 10, 100), "n_max"),
        ((5000, 10, 100, "linear"), "profile"),
        ((5000, 0, 100), "num_classes"),
    ],
)
def test_count_errors(args, message):
    with pytest.raises(LTPLLError, match=message):
        class_counts(*args)


def _balanced_labels(num_classes=4, per_class=20):
    return np.repeat(np.arange(num_classes), per_class)


def test_subsample_keeps_exact_counts_sorted():
    labels = np.random.default_rng(0).permutation(_balanced_labels())
    kept = longtail_indices(labels, np.array([20, 9, 3, 0]), seed=1)
    assert kept.dtype == np.int64
    assert (np.diff(kept) > 0).all()
    assert np.bincount(labels[kept], minlength=4).tolist() == [20, 9, 3, 0]


def test_subsample_is_seeded():
    labels = _balanced_labels()
    counts = np.array([10, 5, 3, 1])
    same = longtail_indices(labels, counts, seed=3)
    assert np.array_equal(same, longtail_indices(labels, counts, seed=3))
    assert not np.array_equal(same, longtail_indices(labels, counts, seed=4))


def test_smaller_count_keeps_a_subset():
    labels = _balanced_labels()
    big = set(longtail_indices(labels, np.array([15, 15, 15, 15]), seed=0).tolist())
    small = set(longtail_indices(labels, np.array([15, 4, 2, 1]), seed=0).tolist())
    assert small <= big


def test_class_order_says_which_class_gets_which_count():
    labels = _balanced_labels(3, 10)
    kept = longtail_indices(labels, np.array([10, 4, 1]), seed=0, class_order=np.array([2, 0, 1]))
    assert np.bincount(labels[kept], minlength=3).tolist() == [4, 1, 10]


def test_too_few_images_names_the_class():
    labels = np.array([0, 0, 0, 1, 1])
    with pytest.raises(LTPLLError, match=r"class 1 \(dog\) has 2 images .* asks for 3"):
        longtail_indices(labels, np.array([3, 3]), seed=0, class_names=["cat", "dog"])


def test_bad_class_order_and_labels():
    labels = _balanced_labels(3, 5)
    with pytest.raises(LTPLLError, match="permutation"):
        longtail_indices(labels, np.array([5, 5, 5]), seed=0, class_order=np.array([0, 0, 1]))
    with pytest.raises(LTPLLError, match="labels must lie"):
        longtail_indices(labels, np.array([5, 5]), seed=0)


def test_shuffled_class_order_is_a_seeded_permutation():
    order = shuffled_class_order(100, seed=5)
    assert sorted(order.tolist()) == list(range(100))
    assert np.array_equal(order, shuffled_class_order(100, seed=5))
    assert not np.array_equal(order, shuffled_class_order(100, seed=6))
    assert not np.array_equal(order, np.arange(100))
