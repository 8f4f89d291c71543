"""REINFORCE with a baseline (Williams 1992; paper Section 3.1): the classic policy gradient.

Each round draws m samples from the policy, spends m NREs on them, and takes one on-policy step along
(1/m) sum_i (r(x_i) - b) grad log p_theta(x_i) with b the batch mean reward. When every reward is 0 the
advantages are 0 and so is the gradient: the method is then brute-force sampling from the prior until it
stumbles on a success. In the paper's protocol (train_on_successes = False) successes are recorded but never
trained on, so the update is always exactly zero; set the run's `train_on_successes` to see classic REINFORCE.
"""

from __future__ import annotations

import torch

from banel.baselines.common import PolicyMethod, optimiser_step, reinforce_loss
from banel.config import Annotated, Ge, Gt, settings_dataclass
from banel.methods.protocol import Context, Oracle, Round
from banel.models.protocol import GenerativeModel


@settings_dataclass
class ReinforceConfig:
    """Settings of `reinforce` (the `reinforce` table)."""

    lr: Annotated[float, Gt(0)] = 1e-3
    """Adam learning rate of the policy."""
    grad_clip: Annotated[float, Ge(0)] = 1.0
    """Clip the global gradient norm (0 disables)."""


def advantages(rewards: torch.Tensor) -> torch.Tensor:
    """r_i - mean(r): the batch-mean baseline; all zero on an all-failure batch."""
    return rewards.double() - rewards.double().mean() if len(rewards) else rewards.double()


class Reinforce(PolicyMethod):
    """REINFORCE with a batch-mean baseline (Sec. 3.1): zero update on all-failure batches."""

    Options = ReinforceConfig

    def __init__(self, prior: GenerativeModel, options: ReinforceConfig | None = None, context: Context | None = None):
        super().__init__(prior, options or ReinforceConfig(), context)

    def round(self, oracle: Oracle, i: int) -> Round:
        """One policy-gradient step on the round's m samples."""
        x, rewards, batch, r = self.draw(oracle, i)
        stats = {"trained_on": len(batch), "loss": None, "grad_norm": None}
        if len(batch):
            loss = reinforce_loss(self.policy.log_prob_grad(batch), advantages(r))
            stats["grad_norm"] = optimiser_step(self.policy, self.optimiser, loss, self.options.grad_clip)
            stats["loss"] = float(loss.detach())
        return Round(x, rewards, stats)
