"""GFlowNet trajectory balance in its VarGrad form (paper Eqs. 2-3; Malkin et al. 2022, Richter et al. 2020).

For an autoregressive model each sequence has one trajectory, so L_TB = (1/m) sum_i (log p_theta(x_i) -
log((r(x_i) + eps) / Z))^2; the batch-optimal log Z turns it into the variance over the batch of
log p_theta(x_i) - log(r(x_i) + eps) (VarGrad). With every reward 0 that is the variance of log p_theta over
the batch (Eq. 3): the optimum puts equal mass on the m samples and leaves the rest uncontrolled, so the
model detaches from the prior (Fig. 11b). Several updates per round are allowed (the method is off-policy).
"""

from __future__ import annotations

import math

import torch

from banel.baselines.common import PolicyMethod, optimiser_step
from banel.config import Annotated, Ge, Gt, settings_dataclass
from banel.methods.protocol import Context, Oracle, Round
from banel.models.protocol import GenerativeModel


@settings_dataclass
class GFNConfig:
    """Settings of `gfn` (the `gfn` table)."""

    epsilon: Annotated[float, Gt(0)] = 1e-6
    """eps in log(r + eps), so reward-0 samples have a finite log reward (Eq. 2)."""
    lr: Annotated[float, Gt(0)] = 1e-3
    """Adam learning rate."""
    steps: Annotated[int, Ge(1)] = 5
    """Gradient steps per round on the round's batch."""
    grad_clip: Annotated[float, Ge(0)] = 1.0
    """Clip the global gradient norm (0 disables)."""


def vargrad_loss(log_p: torch.Tensor, rewards: torch.Tensor, epsilon: float) -> torch.Tensor:
    """(1/m) sum_i (d_i - mean d)^2 with d_i = log p_theta(x_i) - log(r_i + eps) (Eq. 3 when all r_i = 0)."""
    d = log_p - torch.log(rewards.to(log_p.dtype) + epsilon)
    return ((d - d.mean()) ** 2).mean()


def log_z(log_p: torch.Tensor, rewards: torch.Tensor, epsilon: float) -> float:
    """The batch-optimal log Z of Eq. (2): mean of log(r_i + eps) - log p_theta(x_i)."""
    return float((torch.log(rewards.double() + epsilon) - log_p.detach().double()).mean()) if len(log_p) else math.nan


class GFlowNet(PolicyMethod):
    """GFlowNet trajectory balance, VarGrad form (Eq. 3), eps-smoothed log reward."""

    Options = GFNConfig

    def __init__(self, prior: GenerativeModel, options: GFNConfig | None = None, context: Context | None = None):
        super().__init__(prior, options or GFNConfig(), context)

    def round(self, oracle: Oracle, i: int) -> Round:
        """`steps` TB-VarGrad updates on the round's batch."""
        x, rewards, batch, r = self.draw(oracle, i)
        stats = {"trained_on": len(batch), "loss": None, "grad_norm": None, "log_z": None}
        for _ in range(self.options.steps if len(batch) > 1 else 0):
            log_p = self.policy.log_prob_grad(batch)
            loss = vargrad_loss(log_p, r, self.options.epsilon)
            stats["log_z"] = log_z(log_p, r, self.options.epsilon)
            stats["grad_norm"] = optimiser_step(self.policy, self.optimiser, loss, self.options.grad_clip)
            stats["loss"] = float(loss.detach())
        return Round(x, rewards, stats)
