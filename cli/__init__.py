"""The ``ltpll`` command line, importable as ``ltpll.cli`` (the ``cli/`` folder is mapped into
the package by ``setup.cfg``'s ``package_dir``)."""
