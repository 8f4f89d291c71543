"""The prior as it is (the reference row of Table 2): m prior samples evaluated per round, no learning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from banel.baselines.common import checkpoint, evaluate, parse_options, restore
from banel.sequences import derive_seed

if TYPE_CHECKING:
    from banel.runner import Run


@dataclass(frozen=True)
class BaseConfig:
    """method_options of `base`: none."""


def run(run: Run) -> None:
    """Brute-force sampling from the prior: successes are recorded, the model never changes."""
    parse_options(BaseConfig, run.config.method_options, "base")
    m, seed = run.config.banel.m, run.config.seed
    run.trained_on_successes = False
    restore(run)  # no state beyond the run's own: resume continues after the last finished round
    while run.oracle.remaining >= m:
        x = run.prior.sample(m, derive_seed(seed, run.round_index, "sample"))
        rewards = evaluate(run, x)
        run.end_round(run.prior, x, rewards, {}, snapshot_models={"prior": run.prior})
        checkpoint(run)
