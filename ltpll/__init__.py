"""ltpll: long-tailed partial-label learning with Keras 3.

The public API, imported lazily so ``import ltpll`` stays cheap and never pulls in TensorFlow
(the JAX backend works on machines without it):

* :class:`PLLModel` — the Keras model whose training step disambiguates candidate sets;
* :class:`Records` — the RECORDS callback (dynamic rebalancing by a moving feature mean);
* :class:`UpdateStart` — holds confidence updates back for the first epochs;
* :mod:`ltpll.weighting` — class-balanced, focal, LDAM(-DRW) and meta-learned loss weights;
* :mod:`ltpll.components` — the registry of methods, rebalancers, weightings and backbones
  (``components.build(kind, name, context)``; ``components.register`` adds your own);
* :func:`load_model` — loads any saved ltpll model (a ``.keras`` file or a run directory);
* :func:`pretrain` — self-supervised rotation pre-training of a backbone;
* :func:`train`, :func:`resume`, :func:`evaluate` — the jobs behind ``ltpll train`` /
  ``ltpll evaluate``;
* :class:`RunConfig` and friends — the run configuration;
* :class:`LTPLLError` — every user-facing error.
"""

import importlib

from ltpll.environment import prefer_onednn

__version__ = "0.1.0"

# Before anything imports TensorFlow: its fast CPU kernels on every x86 CPU (see prefer_onednn).
prefer_onednn()

_EXPORTS = {
    "PLLModel": "ltpll.models.pll_model",
    "UpdateStart": "ltpll.models.pll_model",
    "Records": "ltpll.callbacks",
    "RecordsPrior": "ltpll.rebalancing.records",
    "build_backbone": "ltpll.models.backbones",
    "load_model": "ltpll.saving",
    "pretrain": "ltpll.representation.ssp",
    "train": "ltpll.training",
    "resume": "ltpll.training",
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
