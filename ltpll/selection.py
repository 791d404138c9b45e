"""Which epoch a run reports: the last, the best on test (optimistic), or one chosen without labels.

The LT-PLL authors' scripts (RECORDS, SoLar, HTC) log a "Best Acc": the highest test accuracy
over all epochs. That picks the epoch on the test labels, which a user of the model never has;
it is an optimistic upper bound, comparable only with other numbers selected the same way. PLL
has no clean validation labels either (PLENCH, ICLR 2025, argues that selecting on them is unfair
in PLL), so a fair selection must use what a PLL user does have: held-out training images with
their *candidate sets* (``--val-fraction``). Two criteria are measured on them at every evaluated
epoch:

* :func:`covering_rate`: the share of held-out images whose predicted class lies in their
  candidate set. Under uniform candidate generation with rate q it is ``acc + (1 - acc) q``, a
  monotone function of accuracy, so maximising it maximises the expected accuracy on that
  distribution -- which, on long-tailed data, is dominated by the head classes.
* :func:`balanced_covering_rate`: the same idea for the class-balanced accuracy (mean per-class
  recall) that Many/Medium/Few report; see its docstring.

:func:`select_epoch` picks an epoch from the per-epoch history (``history.csv`` rows) by any
of these, ties going to the later epoch; :func:`selections` gathers the blocks ``metrics.json``
reports. Numpy only, Keras-free.
"""

import math

import numpy as np

#: The test metrics reported for a selected epoch, as the history rows name them (``test_<m>``).
TEST_METRICS = ("top1", "top5", "many", "medium", "few")

#: metrics.json block -> (history column it maximises, what it means in words). The order is
#: the order of the reports.
SELECTIONS = {
    "best_test_epoch": (
        "test_top1",
        ("optimistic: the epoch of the highest test top-1, selected on the test labels (what "
         "the authors' scripts log as 'Best Acc')"),
    ),
    "selected_by_val_covering": (
        "val_covering",
        "label-free: the epoch of the highest covering rate on the held-out partial-label split",
    ),
    "selected_by_val_covering_balanced": (
        "val_covering_balanced",
        ("label-free: the epoch of the highest prior-balanced covering rate on the held-out "
         "partial-label split"),
    ),
}


def covering_rate(predictions, candidates):
    """Share of samples whose predicted class is one of their candidates.

    Args:
        predictions: int ``[n]`` predicted classes (argmax of the debiased logits).
        candidates: ``[n, C]`` multi-hot candidate sets.

    Returns:
        A float in [0, 1] (NaN for no samples).

    Example:
        Predictions ``[0, 1, 2]`` against candidate sets ``{0, 1}``, ``{0}``, ``{2}`` cover the
        first and the third: 2/3.
    """
    predictions = np.asarray(predictions, dtype=np.int64)
    if len(predictions) == 0:
        return float("nan")
    covered = np.asarray(candidates)[np.arange(len(predictions)), predictions] > 0
    return float(np.mean(covered))


def balanced_covering_rate(predictions, candidates, prior):
    """Covering rate that does not reward predicting head classes: the mean over classes of
    ``min(1, K_c / (n * prior_c))``.

    ``K_c`` is the number of samples predicted as class c whose candidate set holds c, ``n`` the
    number of samples, ``prior`` a label-free estimate of the class distribution (``ltpll
    train`` passes the column means of the training confidence table, the disambiguated labels
    of the same distribution the held-out split was drawn from).

    Why this form: the class-balanced accuracy is the mean per-class recall, ``TP_c / n_c``.
    Without true labels, a covered prediction stands in for a correct one (as in the plain
    covering rate) and ``n * prior_c`` for the number of samples of class c, so each term
    estimates the recall of c; a recall cannot exceed 1, hence the clip. The clip is what keeps
    head classes from being rewarded: predicting a class more often than its expected count
    adds nothing, while every image pulled into a head class is missing from the term of its
    own class. A model that predicts one class for everything scores at most 1/C; one whose
    covered predictions match the prior scores 1. Alternatives considered: weighting each
    sample by the inverse prior of its prediction and normalising by the weights (a collapse
    onto one class then scores that class's covering, unpunished), and the mean of per
    *predicted* class covering (classes never predicted drop out, so the same collapse goes
    unpunished).

    Classes whose estimated prior is 0 expect no samples and are left out of the mean.

    Args:
        predictions: int ``[n]`` predicted classes.
        candidates: ``[n, C]`` multi-hot candidate sets.
        prior: ``[C]`` estimated class distribution (need not sum to 1 exactly; it is
            normalised).

    Returns:
        A float in [0, 1] (NaN for no samples or an all-zero prior).

    Example:
        4 samples, prior ``[0.5, 0.25, 0.25]`` (2, 1, 1 samples expected). All four predicted
        as class 0 and all covered: ``(min(1, 4/2) + 0 + 0) / 3 = 1/3``. Predictions
        ``[0, 0, 1, 2]``, all covered: ``(1 + 1 + 1) / 3 = 1``.
    """
    predictions = np.asarray(predictions, dtype=np.int64)
    candidates = np.asarray(candidates)
    prior = np.asarray(prior, dtype=np.float64)
    n = len(predictions)
    if n == 0 or not prior.sum() > 0:
        return float("nan")
    prior = prior / prior.sum()
    covered = candidates[np.arange(n), predictions] > 0
    hits = np.bincount(predictions[covered], minlength=len(prior)).astype(np.float64)
    expected = n * prior
    present = expected > 0
    return float(np.mean(np.minimum(1.0, hits[present] / expected[present])))


def _value(row, key):
    """The row's float value of ``key``, or None when it is absent, empty or NaN."""
    value = row.get(key)
    if value is None or value == "":
        return None
    value = float(value)
    return None if math.isnan(value) else value


def select_epoch(history, criterion):
    """The history row of the epoch with the highest ``criterion``, ties to the later epoch.

    Only evaluated epochs count: rows without a value of the criterion or of the test top-1
    (``--eval-every`` skipped them, or the run has no held-out split) are passed over.

    Args:
        history: per-epoch dicts with an ``epoch`` and columns such as ``test_top1`` and
            ``val_covering`` (the rows of ``history.csv``), in any order.
        criterion: the column to maximise.

    Returns:
        The chosen row, or None when no row has both values.
    """
    best, best_key = None, None
    for row in history:
        value = _value(row, criterion)
        if value is None or _value(row, "test_top1") is None:
            continue
        key = (value, int(row["epoch"]))
        if best_key is None or key > best_key:
            best, best_key = row, key
    return best


def selections(history):
    """The selection blocks of ``metrics.json``, for the criteria the history has.

    Returns:
        ``{block: {"epoch", "criterion", "<criterion column>", "note", "top1", "top5",
        "many", "medium", "few"}}`` for each of :data:`SELECTIONS` with a selected epoch
        (test metrics absent from a row are None).
    """
    blocks = {}
    for name, (criterion, note) in SELECTIONS.items():
        row = select_epoch(history, criterion)
        if row is None:
            continue
        block = {"epoch": int(row["epoch"]), "criterion": criterion,
                 criterion: _value(row, criterion), "note": note}
        block.update({metric: _value(row, f"test_{metric}") for metric in TEST_METRICS})
        blocks[name] = block
    return blocks
