"""Per-sample loss weighting for long tails, adapted to candidate sets (``--loss-weighting``).

One module per weighting over one base (:mod:`ltpll.weighting.base`), each registered in
:mod:`ltpll.components`:

* ``none`` (:class:`~ltpll.weighting.base.LossWeighting`): every sample weighs 1;
* ``cb`` (:mod:`~ltpll.weighting.class_balanced`): class-balanced weights (Cui et al., 2019);
* ``focal`` (:mod:`~ltpll.weighting.focal`): the focal factor (Lin et al., 2017);
* ``ldam``, ``ldam-drw`` (:mod:`~ltpll.weighting.ldam`): label-distribution-aware margins with a
  cosine head, and deferred re-weighting (Cao et al., 2019);
* ``meta`` (:mod:`~ltpll.weighting.meta`): meta-learned per-example weights on a clean dev set
  (Jamal et al., 2020).

The classic losses need each sample's class and the class counts; with candidate sets neither is
known. A sample's class weight is therefore the expectation of the class weights under its
confidence row, ``w_i = sum_y target_iy w_y`` (exactly ``w_{y_i}`` for a one-hot row), and the class
counts are the column sums of the confidence table, re-estimated every epoch (or the true counts
with ``--oracle-counts``). Every weighting composes with every PLL method, which supplies the
per-sample losses.

The classes are imported on first use, so ``import ltpll.weighting`` needs no Keras.
"""

import importlib

from ltpll import components

_CLASSES = {
    "LossWeighting": "base", "EstimateClassCounts": "base", "WeightingStart": "base",
    "estimated_class_counts": "base", "ClassBalanced": "class_balanced",
    "class_balanced_weights": "class_balanced", "Focal": "focal", "LDAM": "ldam",
    "LDAMDRW": "ldam", "ldam_margins": "ldam", "MetaWeighting": "meta", "meta_offsets": "meta",
}


def get_weighting(spec, context=None):
    """The weighting layer for a name (``"cb"``) or a config dict (``{"name": "cb", "beta":
    0.99}``), built for ``context`` (a :class:`ltpll.components.BuildContext`)."""
    return components.build("weighting", spec, context)


def __getattr__(name):
    if name in _CLASSES:
        return getattr(importlib.import_module(f"ltpll.weighting.{_CLASSES[name]}"), name)
    raise AttributeError(f"module 'ltpll.weighting' has no attribute {name!r}")


__all__ = sorted([*_CLASSES, "get_weighting"])
