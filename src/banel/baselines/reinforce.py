"""REINFORCE with a baseline (Williams 1992; paper Section 3.1): the classic policy gradient.

Each round draws m samples from the policy, spends m NREs on them, and takes one on-policy step along
(1/m) sum_i (r(x_i) - b) grad log p_theta(x_i) with b the batch mean reward. When every reward is 0 the
advantages are 0 and so is the gradient: the method is then brute-force sampling from the prior until it
stumbles on a success. In the paper's protocol (train_on_successes = False) successes are recorded but never
trained on, so the update is always exactly zero; set it to true to see classic REINFORCE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from banel.baselines.common import (
    adam,
    checkpoint,
    evaluate,
    optimiser_step,
    parse_options,
    reinforce_loss,
    restore,
    trainable_copy,
    training_batch,
)
from banel.sequences import derive_seed

if TYPE_CHECKING:
    from banel.runner import Run


@dataclass(frozen=True)
class ReinforceConfig:
    """method_options of `reinforce`."""

    lr: float = 1e-3
    """Adam learning rate of the policy."""
    grad_clip: float = 1.0
    """Clip the global gradient norm (0 disables)."""
    train_on_successes: bool = False
    """Include reward-1 samples in the update (off in the paper's protocol)."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"method_options.lr must be > 0, got {self.lr}")
        if self.grad_clip < 0:
            raise ValueError(f"method_options.grad_clip must be >= 0 (0 disables), got {self.grad_clip}")


def advantages(rewards: torch.Tensor) -> torch.Tensor:
    """r_i - mean(r): the batch-mean baseline; all zero on an all-failure batch."""
    return rewards.double() - rewards.double().mean() if len(rewards) else rewards.double()


def run(run: Run) -> None:
    """REINFORCE as a method: one policy-gradient step per round of m evaluations."""
    opts = parse_options(ReinforceConfig, run.config.method_options, "reinforce")
    m, seed = run.config.banel.m, run.config.seed
    run.trained_on_successes = opts.train_on_successes
    policy = trainable_copy(run.prior, "reinforce")
    optimiser = adam(policy, opts.lr)
    restore(run, policy=policy, optimiser=optimiser)
    while run.oracle.remaining >= m:
        i = run.round_index
        x = policy.sample(m, derive_seed(seed, i, "sample"))
        rewards = evaluate(run, x)
        batch, r = training_batch(x, rewards, opts.train_on_successes)
        stats = {"trained_on": len(batch), "loss": None, "grad_norm": None}
        if len(batch):
            loss = reinforce_loss(policy.log_prob_grad(batch), advantages(r))
            stats["grad_norm"] = optimiser_step(policy, optimiser, loss, opts.grad_clip)
            stats["loss"] = float(loss.detach())
        run.end_round(policy, x, rewards, stats, snapshot_models={"prior": run.prior, "posterior": policy})
        checkpoint(run, policy=policy, optimiser=optimiser)
