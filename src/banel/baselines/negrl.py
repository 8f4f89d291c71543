"""Negative RL (paper Eq. 1): subtract a constant baseline of 1, so failures push their own likelihood down.

sum_i (r(x_i) - 1) grad log p_theta(x_i) = -sum_i grad log p_theta(x_i) over a batch of failures. Its
expectation is zero, but with finite m the step is not, and repeating it drives the model away from the
prior (catastrophic detachment, Fig. 11a); `drift_nll` and `kl_to_prior` in the history show it.
"""

from __future__ import annotations

import torch

from banel.baselines.common import PolicyMethod, optimiser_step
from banel.config import Annotated, Ge, Gt, settings_dataclass
from banel.methods.protocol import Context, Oracle, Round
from banel.models.protocol import GenerativeModel


@settings_dataclass
class NegRLConfig:
    """Settings of `negrl` (the `negrl` table)."""

    lr: Annotated[float, Gt(0)] = 1e-3
    """Adam learning rate."""
    steps: Annotated[int, Ge(1)] = 1
    """Gradient steps per round on the round's failures (1 is on-policy, Eq. 1 as written)."""
    grad_clip: Annotated[float, Ge(0)] = 1.0
    """Clip the global gradient norm (0 disables)."""


def negative_rl_loss(log_p: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """-(1/m) sum_i (r_i - 1) log p_theta(x_i): minimising it follows Eq. (1)."""
    return -((rewards.to(log_p.dtype) - 1.0) * log_p).mean()


class NegativeRL(PolicyMethod):
    """Negative RL, Eq. (1): push down the likelihood of failures."""

    Options = NegRLConfig

    def __init__(self, prior: GenerativeModel, options: NegRLConfig | None = None, context: Context | None = None):
        super().__init__(prior, options or NegRLConfig(), context)

    def round(self, oracle: Oracle, i: int) -> Round:
        """`steps` descent steps on the likelihood of the round's failures (reward-1 samples weigh 0)."""
        x, rewards, batch, r = self.draw(oracle, i)
        stats = {"trained_on": len(batch), "loss": None, "grad_norm": None}
        for _ in range(self.options.steps if len(batch) else 0):
            loss = negative_rl_loss(self.policy.log_prob_grad(batch), r)
            stats["grad_norm"] = optimiser_step(self.policy, self.optimiser, loss, self.options.grad_clip)
            stats["loss"] = float(loss.detach())
        return Round(x, rewards, stats)
