"""Negative RL (paper Eq. 1): subtract a constant baseline of 1, so failures push their own likelihood down.

sum_i (r(x_i) - 1) grad log p_theta(x_i) = -sum_i grad log p_theta(x_i) over a batch of failures. Its
expectation is zero, but with finite m the step is not, and repeating it drives the model away from the
prior (catastrophic detachment, Fig. 11a); `drift_nll` and `kl_to_prior` in the history show it.
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
    restore,
    trainable_copy,
    training_batch,
)
from banel.sequences import derive_seed

if TYPE_CHECKING:
    from banel.runner import Run


@dataclass(frozen=True)
class NegRLConfig:
    """method_options of `negrl`."""

    lr: float = 1e-3
    """Adam learning rate."""
    steps: int = 1
    """Gradient steps per round on the round's failures (1 is on-policy, Eq. 1 as written)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm (0 disables)."""
    train_on_successes: bool = False
    """Include reward-1 samples; their weight r - 1 is 0, so this changes only the batch mean."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"method_options.lr must be > 0, got {self.lr}")
        if self.steps < 1:
            raise ValueError(f"method_options.steps must be >= 1, got {self.steps}")
        if self.grad_clip < 0:
            raise ValueError(f"method_options.grad_clip must be >= 0 (0 disables), got {self.grad_clip}")


def negative_rl_loss(log_p: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """-(1/m) sum_i (r_i - 1) log p_theta(x_i): minimising it follows Eq. (1)."""
    return -((rewards.to(log_p.dtype) - 1.0) * log_p).mean()


def run(run: Run) -> None:
    """Negative RL as a method: `steps` descent steps on the likelihood of each round's failures."""
    opts = parse_options(NegRLConfig, run.config.method_options, "negrl")
    m, seed = run.config.banel.m, run.config.seed
    run.trained_on_successes = opts.train_on_successes
    policy = trainable_copy(run.prior, "negrl")
    optimiser = adam(policy, opts.lr)
    restore(run, policy=policy, optimiser=optimiser)
    while run.oracle.remaining >= m:
        i = run.round_index
        x = policy.sample(m, derive_seed(seed, i, "sample"))
        rewards = evaluate(run, x)
        batch, r = training_batch(x, rewards, opts.train_on_successes)
        stats = {"trained_on": len(batch), "loss": None, "grad_norm": None}
        for _ in range(opts.steps if len(batch) else 0):
            loss = negative_rl_loss(policy.log_prob_grad(batch), r)
            stats["grad_norm"] = optimiser_step(policy, optimiser, loss, opts.grad_clip)
            stats["loss"] = float(loss.detach())
        run.end_round(policy, x, rewards, stats, snapshot_models={"prior": run.prior, "posterior": policy})
        checkpoint(run, policy=policy, optimiser=optimiser)
