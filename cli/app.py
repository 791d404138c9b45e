"""What every ``ltpll`` command shares: the rich consoles, the user-error boundary, and a quiet
start of the backend.

Every user error surfaces as one line on stderr and exit status 2, never a traceback.
TensorFlow's C++ start-up lines ("failed call to cuInit" on a CPU machine, oneDNN notices) stay
off the terminal unless ``--verbose`` is given or the user set ``TF_CPP_MIN_LOG_LEVEL``.
"""

import contextlib
import functools
import os
import sys

import click

EXIT_USER_ERROR = 2
# Whether the user asked for TensorFlow's own logs, before this module sets anything.
_VERBOSE = {"on": False, "user_log_level": "TF_CPP_MIN_LOG_LEVEL" in os.environ}


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


class OneLineUsageError(click.ClickException):
    """A usage error (unknown flag, bad choice) shown as one line, like every other error."""

    exit_code = EXIT_USER_ERROR

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


class Group(click.Group):
    """The ``ltpll`` group: click's usage errors become one line (``error: ...``, exit 2)
    instead of a usage block."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as error:
            raise _one_line(error) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            raise _one_line(error) from None


# `ltpll` (or a group) without arguments shows its help: click signals it as a usage error.
_HELP_REQUEST = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _one_line(error):
    if isinstance(error, _HELP_REQUEST):
        return error
    return OneLineUsageError(_usage_text(error))


def _usage_text(error):
    command = error.ctx.command_path if error.ctx is not None else "ltpll"
    return f"{error.format_message()} (see `{command} --help`)"


def _set_verbose(ctx, param, value):
    if value:
        _VERBOSE["on"] = True


def verbose_option(command):
    """``--verbose`` / ``-v``: let TensorFlow's own log lines through."""
    return click.option("--verbose", "-v", is_flag=True, expose_value=False, is_eager=True,
                        callback=_set_verbose,
                        help="Show TensorFlow's own start-up and log lines.")(command)


def user_errors(command):
    """Turns LTPLLError (and Ctrl-C) into one line and a non-zero exit, never a traceback; and
    starts the backend quietly before the command runs."""

    @functools.wraps(command)
    def wrapper(app, *args, **kwargs):
        from ltpll.errors import LTPLLError

        try:
            start_backend()
            return command(app, *args, **kwargs)
        except LTPLLError as error:
            app.fail(str(error))
        except KeyboardInterrupt:
            app.errors.print("interrupted")
            sys.exit(130)

    return verbose_option(wrapper)


def start_backend():
    """Imports Keras and its backend with TensorFlow's start-up chatter filtered out (see the
    module docstring); a no-op once they are imported."""
    if "keras" in sys.modules:
        return
    with quiet_imports(_VERBOSE["on"]):
        import keras  # (imports TensorFlow under the TensorFlow backend)

        from ltpll.environment import tensorflow_available

        if keras.backend.backend() != "tensorflow" and tensorflow_available():
            import tensorflow  # noqa: F401  (tf.data feeds the JAX step wherever it is installed)


def load_plugins():
    """Loads the component plugins (their flags join the commands'), quietly: a plugin that
    imports Keras starts TensorFlow. Runs while the CLI is imported, before ``--verbose`` is
    parsed, so the flag is looked for in ``sys.argv``."""
    from ltpll import components

    if not os.environ.get(components.PLUGIN_ENV):
        components.load_plugins()  # nothing to import: no stderr capture at every start-up
        return
    with quiet_imports(bool({"-v", "--verbose"} & set(sys.argv[1:]))):
        components.load_plugins()


@contextlib.contextmanager
def quiet_imports(verbose):
    from ltpll.environment import filtered_stderr, quiet_tensorflow

    quiet_tensorflow(verbose=verbose)
    with filtered_stderr(enabled=not (verbose or _VERBOSE["user_log_level"])):
        yield
