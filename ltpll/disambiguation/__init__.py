"""PLL disambiguation methods (CORR, PRODEN, LW, CAVL, CC, SoLar, HTC), looked up by name in the
registry.

Each method is one module here plus its registration in :mod:`ltpll.components`. The classes
are imported on first use, so ``import ltpll.disambiguation`` needs no Keras.
"""

import importlib

from ltpll import components

_CLASSES = {"CORR": "corr", "PRODEN": "proden", "LW": "lw", "CAVL": "cavl", "CC": "cc",
            "SoLar": "solar", "HTC": "htc", "DisambiguationMethod": "base"}


def get_method(spec, **options):
    """The method object for a name (``"corr"``), a ``get_config`` dict, or an instance.

    Args:
        spec: the method's name, its config dict (``{"name": "lw", "beta": 1.0}``), or a
            :class:`~ltpll.disambiguation.base.DisambiguationMethod` (returned as it is).
        **options: the method's options (``beta`` for LW), over those of a config dict.

    Raises:
        LTPLLError: for an unknown name, an option the method does not take, or a bad value.
    """
    from ltpll.disambiguation.base import DisambiguationMethod

    if isinstance(spec, DisambiguationMethod):
        return spec
    config = dict(spec) if isinstance(spec, dict) else {"name": spec}
    return components.build("method", {**config, **options})


def __getattr__(name):
    if name in _CLASSES:
        module = importlib.import_module(f"ltpll.disambiguation.{_CLASSES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'ltpll.disambiguation' has no attribute {name!r}")


__all__ = ["CAVL", "CC", "CORR", "HTC", "LW", "PRODEN", "DisambiguationMethod", "SoLar",
           "get_method"]
