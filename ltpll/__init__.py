"""ltpll: long-tailed partial-label learning with Keras 3.

The public API, imported lazily so ``import ltpll`` stays cheap and never pulls in TensorFlow
(the JAX backend works on machines without it):

* :class:`PLLModel` — the Keras model whose training step disambiguates candidate sets;
* :class:`Records` — the RECORDS callback (dynamic rebalancing by a moving feature mean);
* :class:`UpdateStart` — switches confidence updates on at a given epoch;
* :class:`LossWeighting` — class-balanced, focal, LDAM(-DRW) and meta-learned loss weights;
* :func:`pretrain` — self-supervised rotation pre-training of a backbone;
* :func:`train`, :func:`evaluate` — the whole jobs behind ``ltpll train`` / ``ltpll evaluate``;
* :class:`RunConfig` and friends — the run configuration;
* :class:`LTPLLError` — every user-facing error.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "PLLModel": "ltpll.models.pll_model",
    "UpdateStart": "ltpll.models.pll_model",
    "Records": "ltpll.rebalancing.records",
    "RecordsPrior": "ltpll.rebalancing.records",
    "LossWeighting": "ltpll.rebalancing.reweighting",
    "build_backbone": "ltpll.models.backbones",
    "pretrain": "ltpll.representation.ssp",
    "train": "ltpll.training",
    "evaluate": "ltpll.training",
    "RunConfig": "ltpll.config",
    "DataConfig": "ltpll.config",
    "ModelConfig": "ltpll.config",
    "TrainConfig": "ltpll.config",
    "LTPLLError": "ltpll.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ltpll' has no attribute {name!r}")
