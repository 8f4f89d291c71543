"""Reward oracles: a hard NRE budget around any reward function."""

from banel.oracle.budget import BudgetedOracle, BudgetExceeded, RewardFn, validate_rewards

__all__ = ["BudgetExceeded", "BudgetedOracle", "RewardFn", "validate_rewards"]
