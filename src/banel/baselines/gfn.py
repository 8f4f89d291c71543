"""GFlowNet trajectory balance in its VarGrad form (paper Eqs. 2-3; Malkin et al. 2022, Richter et al. 2020).

For an autoregressive model each sequence has one trajectory, so L_TB = (1/m) sum_i (log p_theta(x_i) -
log((r(x_i) + eps) / Z))^2; the batch-optimal log Z turns it into the variance over the batch of
log p_theta(x_i) - log(r(x_i) + eps) (VarGrad). With every reward 0 that is the variance of log p_theta over
the batch (Eq. 3): the optimum puts equal mass on the m samples and leaves the rest uncontrolled, so the
model detaches from the prior (Fig. 11b). Several updates per round are allowed (the method is off-policy).
"""

from __future__ import annotations

import math
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
class GFNConfig:
    """method_options of `gfn`."""

    epsilon: float = 1e-6
    """eps in log(r + eps), so reward-0 samples have a finite log reward (Eq. 2)."""
    lr: float = 1e-3
    """Adam learning rate."""
    steps: int = 5
    """Gradient steps per round on the round's batch."""
    grad_clip: float = 1.0
    """Clip the global gradient norm (0 disables)."""
    train_on_successes: bool = False
    """Include reward-1 samples in the batch (off in the paper's protocol)."""

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"method_options.epsilon must be > 0, got {self.epsilon}")
        if not self.lr > 0:
            raise ValueError(f"method_options.lr must be > 0, got {self.lr}")
        if self.steps < 1:
            raise ValueError(f"method_options.steps must be >= 1, got {self.steps}")
        if self.grad_clip < 0:
            raise ValueError(f"method_options.grad_clip must be >= 0 (0 disables), got {self.grad_clip}")


def vargrad_loss(log_p: torch.Tensor, rewards: torch.Tensor, epsilon: float) -> torch.Tensor:
    """(1/m) sum_i (d_i - mean d)^2 with d_i = log p_theta(x_i) - log(r_i + eps) (Eq. 3 when all r_i = 0)."""
    d = log_p - torch.log(rewards.to(log_p.dtype) + epsilon)
    return ((d - d.mean()) ** 2).mean()


def log_z(log_p: torch.Tensor, rewards: torch.Tensor, epsilon: float) -> float:
    """The batch-optimal log Z of Eq. (2): mean of log(r_i + eps) - log p_theta(x_i)."""
    return float((torch.log(rewards.double() + epsilon) - log_p.detach().double()).mean()) if len(log_p) else math.nan


def run(run: Run) -> None:
    """GFlowNet (TB-VarGrad) as a method: `steps` updates per round of m evaluations."""
    opts = parse_options(GFNConfig, run.config.method_options, "gfn")
    m, seed = run.config.banel.m, run.config.seed
    run.trained_on_successes = opts.train_on_successes
    policy = trainable_copy(run.prior, "gfn")
    optimiser = adam(policy, opts.lr)
    restore(run, policy=policy, optimiser=optimiser)
    while run.oracle.remaining >= m:
        i = run.round_index
        x = policy.sample(m, derive_seed(seed, i, "sample"))
        rewards = evaluate(run, x)
        batch, r = training_batch(x, rewards, opts.train_on_successes)
        stats = {"trained_on": len(batch), "loss": None, "grad_norm": None, "log_z": None}
        for _ in range(opts.steps if len(batch) > 1 else 0):
            log_p = policy.log_prob_grad(batch)
            loss = vargrad_loss(log_p, r, opts.epsilon)
            stats["log_z"] = log_z(log_p, r, opts.epsilon)
            stats["grad_norm"] = optimiser_step(policy, optimiser, loss, opts.grad_clip)
            stats["loss"] = float(loss.detach())
        run.end_round(policy, x, rewards, stats, snapshot_models={"prior": run.prior, "posterior": policy})
        checkpoint(run, policy=policy, optimiser=optimiser)
