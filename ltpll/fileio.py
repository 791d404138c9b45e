"""Small file helpers: every file ltpll writes appears whole or not at all.

A crash (or Ctrl-C) in the middle of a write must never leave a half-written metrics.json or
config.json that a later ``ltpll evaluate`` would choke on, so everything goes to a temporary file
(:func:`atomic_path`) or directory (:func:`atomic_directory`: checkpoints, exports, pre-trained
backbones, extracted archives) beside its target and is renamed into place.
"""

import contextlib
import json
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to ``path``; renames it onto ``path`` if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(handle)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, payload):
    """Writes ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


class DirectoryNotMoved(OSError):
    """The finished temporary directory could not be renamed onto its target; ``kept`` is
    where it is (None when it was deleted)."""

    def __init__(self, target, reason, kept=None):
        super().__init__(f"could not move the result into {target} ({reason})")
        self.target, self.reason, self.kept = target, reason, kept


@contextlib.contextmanager
def atomic_directory(path, replace=False, keep_on_failure=False):
    """Yields a new temporary directory beside ``path``; renames it onto ``path`` if the block
    succeeds, so ``path`` appears complete or not at all.

    Args:
        path: the directory to create. It must not exist, or be an empty directory, unless
            ``replace`` is set.
        replace: delete an existing ``path`` first.
        keep_on_failure: if the final rename fails, keep the temporary directory (its name is in
            the error) instead of deleting it: for results that took long to make.

    Raises:
        DirectoryNotMoved: if the rename fails. An error inside the block deletes the temporary
            directory and propagates.
    """
    target = os.path.abspath(path)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result is not secret
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if replace and os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(tmp, target)  # replaces an empty directory on POSIX
    except OSError as error:
        if not keep_on_failure:
            shutil.rmtree(tmp, ignore_errors=True)
        raise DirectoryNotMoved(target, error.strerror or str(error),
                                kept=tmp if keep_on_failure else None) from None


def _umask():
    current = os.umask(0)
    os.umask(current)
    return current
