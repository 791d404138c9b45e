"""Imports the RECORDS authors' modules from the user's checkout of MediaBrain-SJTU/RECORDS-LTPLL.

Only the pieces the harnesses compare against are loaded: the CIFAR ResNet of ``models/resnet.py``
and the losses of ``utils/utils_loss.py``. The checkout's root goes first on ``sys.path`` so that
its ``models`` and ``utils`` packages resolve to the user's files, not to anything installed.
"""

import importlib
import os
import sys

REQUIRED = ("models/resnet.py", "utils/utils_loss.py")


class CheckoutError(ValueError):
    """The path given is not a usable RECORDS-LTPLL checkout."""


def check_checkout(path):
    """The absolute path of a checkout holding the files the harnesses need; a one-line
    :class:`CheckoutError` otherwise."""
    if not path:
        raise CheckoutError("give the authors' checkout: OFFICIAL=path/to/RECORDS-LTPLL")
    root = os.path.abspath(os.path.expanduser(path))
    missing = [name for name in REQUIRED if not os.path.isfile(os.path.join(root, name))]
    if missing:
        raise CheckoutError(f"{root} is not a RECORDS-LTPLL checkout: no {', '.join(missing)}")
    return root


def load_official(path):
    """``(resnet_module, loss_module)`` imported from the checkout at ``path``."""
    root = check_checkout(path)
    if root not in sys.path:
        sys.path.insert(0, root)
    for name in ("models", "models.resnet", "utils", "utils.utils_loss"):
        sys.modules.pop(name, None)  # a same-named package imported earlier must not shadow it
    return importlib.import_module("models.resnet"), importlib.import_module("utils.utils_loss")
