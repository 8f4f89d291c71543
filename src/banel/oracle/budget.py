"""A reward oracle with a hard budget on the number of reward evaluations (NREs)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from banel.sequences import Sequences

log = logging.getLogger(__name__)

RewardFn = Callable[[Sequences], torch.Tensor]
"""A batch reward function: Sequences of n samples -> (n,) tensor of 0/1 rewards."""


class BudgetExceeded(RuntimeError):
    """Raised before evaluating a request larger than the NREs left; nothing of the request is evaluated."""


def validate_rewards(rewards: object, x: Sequences) -> torch.Tensor:
    """Check a reward function's return: (n,) of exactly 0 or 1; raise naming the first bad sample."""
    r = torch.as_tensor(rewards).detach().cpu().double().reshape(-1)
    if r.shape[0] != len(x):
        raise ValueError(f"reward function returned {r.shape[0]} values for a batch of {len(x)} samples")
    bad = ~((r == 0) | (r == 1))
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"reward function returned {r[i].item()!r} for sample {x[i].to_lists()[0]}; expected 0 or 1")
    return r


class BudgetedOracle:
    """Wraps a reward function so that every evaluated sample costs one NRE and the budget is never exceeded.

    The bare core: no ledger, no de-duplication, no retries, no timeout. A reward function that raises raises
    through it, and that batch is neither recorded nor counted; one that hangs blocks. Use `LedgerOracle`
    (`LedgerOracle.open(reward, budget, path)` from Python; every run uses one) for all of those.

    The whole request is checked against the NREs left before anything is evaluated. `used` counts NREs
    spent, `queries` counts samples asked for (equal here; a ledger that answers repeats for free makes
    them differ), `errors` evaluations that failed (none here: a raising reward function raises).
    """

    def __init__(self, reward_fn: RewardFn, budget: int) -> None:
        if budget < 0:
            raise ValueError(f"nre_budget must be >= 0, got {budget}")
        self.reward_fn = reward_fn
        self.budget = int(budget)
        self.used = 0
        self.queries = 0
        self.errors = 0
        self.round = 0
        """The round being paid for (the ledger records it; a resumed round is replayed from it)."""

    @property
    def remaining(self) -> int:
        """NREs left."""
        return self.budget - self.used

    def __call__(self, x: Sequences) -> torch.Tensor:
        """Rewards of a batch: (n,) float64 of 0/1; raises BudgetExceeded if n > remaining."""
        n = len(x)
        if n > self.remaining:
            raise BudgetExceeded(f"request of {n} evaluations exceeds the {self.remaining} NREs left of {self.budget}")
        if n == 0:
            return torch.zeros(0, dtype=torch.float64)
        rewards = validate_rewards(self.reward_fn(x), x)
        self.used += n
        self.queries += n
        return rewards

    def state_dict(self) -> dict[str, int]:
        """Counters, for checkpoints."""
        return {"budget": self.budget, "used": self.used, "queries": self.queries}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore counters saved by `state_dict`."""
        self.used, self.queries = int(state["used"]), int(state["queries"])

    def replay_round(self, round_index: int | None) -> int:
        """Answers to replay when a run resumes round_index: none without a ledger."""
        return 0

    def close(self) -> None:
        """Nothing to release."""


class CheckedOracle:
    """An oracle that answers 0 without paying where a free check rules a sample out (the run's feasible_only)."""

    def __init__(self, oracle: Callable[[Sequences], torch.Tensor], feasible: Callable[[Sequences], torch.Tensor]):
        self.oracle, self.feasible = oracle, feasible

    def __call__(self, x: Sequences) -> torch.Tensor:
        """(n,) float64 rewards: 0 where the check rules x out, the oracle's answer (paid) elsewhere."""
        ok = self.feasible(x).bool().cpu()
        rewards = torch.zeros(len(x), dtype=torch.float64)
        if bool(ok.any()):
            rewards[ok] = self.oracle(x[ok])
        return rewards
