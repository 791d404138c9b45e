"""PLL disambiguation methods, looked up by their CLI name."""

from ltpll.disambiguation.base import DisambiguationMethod
from ltpll.disambiguation.cavl import CAVL
from ltpll.disambiguation.corr import CORR
from ltpll.disambiguation.lw import LW
from ltpll.disambiguation.proden import PRODEN
from ltpll.errors import LTPLLError

METHODS = {cls.name: cls for cls in (CORR, PRODEN, LW, CAVL)}


def get_method(spec, **options):
    """The method object for a CLI name (``"corr"``), a ``get_config`` dict, or an instance.

    Args:
        spec: the method's name, its config dict (``{"name": "lw", "beta": 1.0}``), or a
            :class:`DisambiguationMethod` (returned as it is).
        **options: constructor options for a name (e.g. ``beta`` for LW); options a method does
            not take are ignored, so the CLI can pass every method option.

    Raises:
        LTPLLError: for an unknown name or a bad option value.
    """
    if isinstance(spec, DisambiguationMethod):
        return spec
    if isinstance(spec, dict):
        options = {**{k: v for k, v in spec.items() if k != "name"}, **options}
        spec = spec.get("name")
    try:
        cls = METHODS[spec]
    except (KeyError, TypeError):
        raise LTPLLError(
            f"unknown PLL method {spec!r}; choose one of {', '.join(sorted(METHODS))}"
        ) from None
    accepted = getattr(cls, "options", ())
    return cls(**{k: v for k, v in options.items() if k in accepted})


__all__ = ["CAVL", "CORR", "LW", "METHODS", "PRODEN", "DisambiguationMethod", "get_method"]
