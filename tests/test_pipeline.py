
import numpy as np
import pytest

from ltpll.data.pipeline import PLLBatches, eval_dataset, train_dataset
from ltpll.errors import LTPLLError
from tests.helpers import run_python

N, C = 53, 7


@pytest.fixture
def arrays():
    """Images whose pixels spell their row number, random candidate sets and labels."""
    rng = np.random.default_rng(0)
    images = np.zeros((N, 4, 4, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(N)
    images[:, 1:, :, :] = rng.integers(0, 256, (N, 3, 4, 3))
    candidates = (rng.random((N, C)) < 0.3).astype(np.float32)
    labels = rng.integers(0, C, N)
    candidates[np.arange(N), labels] = 1
    labels[::5] = -1  # some true labels unknown
    return images, candidates, labels


def _check_batch(x, y, arrays, batch_size):
    """Every part of a batch must be the rows of the source arrays named by its index."""
    images, candidates, labels = arrays
    x, index = np.asarray(x), np.asarray(y["index"])
    assert x.dtype == np.uint8 and index.dtype == np.int32
    assert np.asarray(y["candidates"]).dtype == np.float32
    assert np.asarray(y["label"]).dtype == np.int32
    assert len(index) == batch_size
    assert np.array_equal(x, images[index])
    assert np.array_equal(np.asarray(y["candidates"]), candidates[index])
    assert np.array_equal(np.asarray(y["label"]), labels[index])
    return index.tolist()


def _epoch(dataset, arrays, batch_size):
    rows = []
    for x, y in dataset:
        rows += _check_batch(x, y, arrays, batch_size)
    return rows


def test_train_batches_are_aligned_rows(arrays):
    dataset = train_dataset(*arrays, batch_size=8, seed=1)
    first = _epoch(dataset, arrays, 8)
    assert len(first) == 48 and len(set(first)) == 48  # 6 full batches, no repeats
    assert first != sorted(first)
    second = _epoch(dataset, arrays, 8)
    assert second != first  # reshuffled every epoch

    again = train_dataset(*arrays, batch_size=8, seed=1)
    assert _epoch(again, arrays, 8) == first  # seeded
    assert _epoch(again, arrays, 8) == second
    assert _epoch(train_dataset(*arrays, batch_size=8, seed=2), arrays, 8) != first


def test_train_static_shapes_and_unshuffled_order(arrays):
    dataset = train_dataset(*arrays, batch_size=10, seed=0, shuffle=False, drop_remainder=False)
    x_spec, y_spec = dataset.element_spec
    assert x_spec.shape.as_list() == [None, 4, 4, 3]
    assert set(y_spec) == {"candidates", "index", "label"}
    rows = [i for x, y in dataset for i in np.asarray(y["index"]).tolist()]
    assert rows == list(range(N))  # last partial batch kept
    dropped = train_dataset(*arrays, batch_size=10, seed=0)
    assert dropped.element_spec[0].shape.as_list() == [10, 4, 4, 3]


def test_unknown_labels_are_minus_one(arrays):
    images, candidates, _ = arrays
    x, y = next(iter(train_dataset(images, candidates, None, batch_size=4, seed=0)))
    assert np.asarray(y["label"]).tolist() == [-1] * 4


def test_eval_batches_in_order_with_partial_last(arrays):
    images, _, labels = arrays
    batches = list(eval_dataset(images, labels, batch_size=10))
    assert [len(x) for x, _ in batches] == [10, 10, 10, 10, 10, 3]
    assert np.array_equal(np.concatenate([np.asarray(x) for x, _ in batches]), images)
    got_labels = np.concatenate([np.asarray(y) for _, y in batches])
    assert got_labels.dtype == np.int32 and np.array_equal(got_labels, labels)


def test_numpy_batches_are_aligned_rows(arrays):
    batches = PLLBatches(*arrays, batch_size=8, seed=1)
    assert len(batches) == 6
    first = [i for b in range(len(batches)) for i in _check_batch(*batches[b], arrays, 8)]
    assert len(set(first)) == 48 and first != sorted(first)
    batches.on_epoch_end()
    second = [i for b in range(len(batches)) for i in _check_batch(*batches[b], arrays, 8)]
    assert second != first

    replay = PLLBatches(*arrays, batch_size=8, seed=1)
    assert [i for b in range(6) for i in replay[b][1]["index"].tolist()] == first
    with pytest.raises(IndexError):
        batches[6]


def test_numpy_batches_keep_the_remainder_when_asked(arrays):
    batches = PLLBatches(*arrays, batch_size=10, seed=0, shuffle=False, drop_remainder=False)
    assert len(batches) == 6
    assert batches[5][1]["index"].tolist() == [50, 51, 52]


@pytest.mark.parametrize("make", [train_dataset, PLLBatches])
def test_bad_inputs(arrays, make):
    images, candidates, labels = arrays
    with pytest.raises(LTPLLError, match="larger than the 53 training samples"):
        make(images, candidates, labels, batch_size=64, seed=0)
    with pytest.raises(LTPLLError, match="candidates must be"):
        make(images, candidates[:-1], labels, batch_size=8, seed=0)
    empty = candidates.copy()
    empty[3] = 0
    with pytest.raises(LTPLLError, match="empty candidate set, e.g. row 3"):
        make(images, empty, labels, batch_size=8, seed=0)
    with pytest.raises(LTPLLError, match="uint8"):
        make(images.astype(np.float32), candidates, labels, batch_size=8, seed=0)


def test_numpy_batches_need_no_tensorflow():
    script = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import numpy as np\n"
        "from ltpll.data.pipeline import PLLBatches\n"
        "b = PLLBatches(np.zeros((5, 2, 2, 3), np.uint8), np.ones((5, 3)), None, 2, seed=0)\n"
        "x, y = b[1]\n"
        "print(len(b), x.shape, sorted(y), y['label'].tolist())\n"
    )
    assert run_python(script, "jax").strip().splitlines()[-1] == (
        "2 (2, 2, 2, 3) ['candidates', 'index', 'label'] [-1, -1]"
    )
