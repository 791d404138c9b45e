"""Long-tail rebalancing: RECORDS, its per-epoch ablation, oracle logit adjustment, identity.

Each rebalancer is one module here plus its registration in :mod:`ltpll.components`; build one
for a run with ``ltpll.components.build("rebalancer", name_or_config, context)``.
"""

from ltpll.rebalancing.base import NoRebalancing, Rebalancer
from ltpll.rebalancing.logit_adjust import OracleLogitAdjustment, TemperatureRamp
from ltpll.rebalancing.records import EpochRecordsPrior, RecordsPrior

__all__ = [
    "EpochRecordsPrior",
    "NoRebalancing",
    "OracleLogitAdjustment",
    "Rebalancer",
    "RecordsPrior",
    "TemperatureRamp",
]
