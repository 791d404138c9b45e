"""User-facing errors.

Anything a user can get wrong (a missing folder, a malformed candidate file, a flag out of range)
raises :class:`LTPLLError`. The CLI prints its message as one line and exits non-zero; nothing else
in the library catches it, so library users see the same message as an ordinary exception.
"""


class LTPLLError(ValueError):
    """A problem with the user's input or environment, worded for the user."""
