"""Side-by-side harnesses against the RECORDS authors' PyTorch code (benchmarks, not tests).

The authors' modules are imported from a checkout the user points to (``OFFICIAL=path``); none of
their code lives in this repository. These scripts run in a separate virtual environment that has
torch and torchvision (``$(TORCH_VENV)``, which ``make crosscheck-official`` and ``make
bench-vs-official-cpu`` create once under the cache); the ltpll side runs in the project's own.
"""
