"""Small file helpers: every file ltpll writes appears whole or not at all.

A crash (or Ctrl-C) in the middle of a write must never leave a half-written metrics.json or
config.json that a later ``ltpll evaluate`` would choke on, so everything goes to a temporary file
in the same directory and is renamed into place.
"""

import contextlib
import json
import os
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
