"""Long-tail rebalancing: RECORDS, its per-epoch ablation, oracle logit adjustment, identity."""

from ltpll.errors import LTPLLError
from ltpll.rebalancing.base import NoRebalancing, Rebalancer
from ltpll.rebalancing.logit_adjust import OracleLogitAdjustment, TemperatureRamp
from ltpll.rebalancing.records import EpochRecordsPrior, PriorLog, Records, RecordsPrior

# --rebalance choices, in the order tables list them.
REBALANCERS = (
    "none", "oracle-la-posthoc", "oracle-la", "temp-oracle-la", "epoch-records", "records",
)


def make_rebalancer(name, class_counts=None, momentum=0.9, tau=1.0, ramp_epochs=0):
    """The rebalancer layer for a ``--rebalance`` name.

    Args:
        name: one of :data:`REBALANCERS`.
        class_counts: true training counts, needed by the oracle baselines.
        momentum: RECORDS momentum.
        tau: final logit-adjustment temperature of the oracle baselines.
        ramp_epochs: epochs over which ``temp-oracle-la`` ramps its temperature from 0.

    Raises:
        LTPLLError: for an unknown name, or an oracle baseline without class counts.
    """
    if name not in REBALANCERS:
        raise LTPLLError(f"unknown --rebalance {name!r}; choose one of {', '.join(REBALANCERS)}")
    if name == "none":
        return NoRebalancing(name="no_rebalancing")
    if name == "records":
        return RecordsPrior(momentum=momentum, name="records")
    if name == "epoch-records":
        return EpochRecordsPrior(name="epoch_records")
    if class_counts is None:
        raise LTPLLError(f"--rebalance {name} needs the true class counts of the training set")
    return OracleLogitAdjustment(
        class_counts, tau=tau, posthoc=name == "oracle-la-posthoc",
        ramp_epochs=max(1, ramp_epochs) if name == "temp-oracle-la" else 0,
        name=name.replace("-", "_"),
    )


__all__ = [
    "REBALANCERS",
    "EpochRecordsPrior",
    "NoRebalancing",
    "OracleLogitAdjustment",
    "PriorLog",
    "Rebalancer",
    "Records",
    "RecordsPrior",
    "TemperatureRamp",
    "make_rebalancer",
]
