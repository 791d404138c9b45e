"""The ``ltpll benchmark`` grid: many runs (method x rebalancer x q x rho x seed) and their report.

One run directory per grid cell; :mod:`ltpll.benchmark.report` turns the finished cells into the
RECORDS paper's Table 1 / Table 2 layout, and :mod:`ltpll.benchmark.plots` draws the figures that
show *why* the numbers differ (estimated vs true prior, prior distance over epochs, per-class
accuracy by class frequency).
"""
