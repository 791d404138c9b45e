"""What every ``ltpll`` command shares: the rich consoles and the user-error boundary.

Every user error surfaces as one line on stderr and exit status 2, never a traceback.
"""

import functools
import os
import sys

import click

EXIT_USER_ERROR = 2


class App:
    """State shared by the commands: one rich console for output, one for errors."""

    def __init__(self):
        from rich.console import Console

        self.console = Console(highlight=False)
        self.errors = Console(stderr=True, highlight=False)

    def fail(self, message):
        self.errors.print(f"[bold red]error:[/] {message}", soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)


pass_app = click.make_pass_decorator(App)


def user_errors(command):
    """Turns LTPLLError (and Ctrl-C) into one line and a non-zero exit, never a traceback."""

    @functools.wraps(command)
    def wrapper(app, *args, **kwargs):
        from ltpll.errors import LTPLLError

        try:
            return command(app, *args, **kwargs)
        except LTPLLError as error:
            app.fail(str(error))
        except KeyboardInterrupt:
            app.errors.print("interrupted")
            sys.exit(130)

    return wrapper


def quiet_tensorflow():
    """Hides TensorFlow's C++ start-up chatter (set before TensorFlow is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
