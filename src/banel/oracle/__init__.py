"""Reward oracles: a hard NRE budget around any reward function, a durable ledger, executors."""

from banel.oracle.budget import BudgetedOracle, BudgetExceeded, RewardFn, validate_rewards
from banel.oracle.integrity import LedgerMismatch
from banel.oracle.ledger import Ledger
from banel.oracle.ledger_oracle import LedgerOracle, OracleFailing, OutOfContract

__all__ = [
    "BudgetExceeded",
    "BudgetedOracle",
    "Ledger",
    "LedgerMismatch",
    "LedgerOracle",
    "OracleFailing",
    "OutOfContract",
    "RewardFn",
    "validate_rewards",
]
