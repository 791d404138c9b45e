"""PLL disambiguation methods, looked up by their CLI name."""

from ltpll.disambiguation.base import DisambiguationMethod
from ltpll.disambiguation.corr import CORR
from ltpll.errors import LTPLLError

METHODS = {CORR.name: CORR}


def get_method(name):
    """The method object for a CLI name such as ``"corr"``.

    Raises:
        LTPLLError: for an unknown name.
    """
    if isinstance(name, DisambiguationMethod):
        return name
    try:
        return METHODS[name]()
    except KeyError:
        raise LTPLLError(
            f"unknown PLL method {name!r}; choose one of {', '.join(sorted(METHODS))}"
        ) from None


__all__ = ["CORR", "DisambiguationMethod", "METHODS", "get_method"]
