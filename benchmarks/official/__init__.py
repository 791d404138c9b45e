"""Side-by-side harnesses against the RECORDS authors' PyTorch code (benchmarks, not tests).

The authors' modules are imported from a checkout the user points to (``OFFICIAL=path``); none of
their code lives in this repository. These scripts run in a separate virtual environment that has
torch and torchvision (``make torch-venv``); the ltpll side runs in the project's own.
"""
