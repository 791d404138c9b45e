"""Long-tail rebalancing: RECORDS and the identity."""

from ltpll.rebalancing.records import NoRebalancing, Records, RecordsPrior

__all__ = ["NoRebalancing", "Records", "RecordsPrior"]
