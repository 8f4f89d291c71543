"""Pseudo-count exploration bonus (Bellemare et al. 2016; Ostrovski et al. 2017), Appendix B.2.

A density model rho with the prior's architecture and weights is trained online, one SGD step per evaluated
sample. The prediction gain of a sample is PG = log rho'(x) - log rho(x), rho' being the model after the
step on x. Ostrovski et al. decay it, PG_n <- c n^(-1/2) PG_n (n the density model's step count), and the
pseudo-count is the closed form N = rho (1 - rho') / (rho' - rho) with rho' = rho exp(PG_n); the bonus is
(N + 0.01)^(-1/2). The policy follows REINFORCE on bonus - kl_coef * (log p_theta - log p_prior) (0.05).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from banel.baselines.common import (
    PolicyMethod,
    Stateful,
    kl_shaped_advantages,
    optimiser_step,
    reinforce_loss,
    trainable_copy,
)
from banel.config import Annotated, Ge, Gt, settings_dataclass
from banel.methods.protocol import Context, Oracle, Round
from banel.models.protocol import GenerativeModel, TrainableModel
from banel.sequences import Sequences

BONUS_OFFSET = 0.01  # (N + 0.01)^(-1/2), Bellemare et al. 2016 and Ostrovski et al. 2017


@settings_dataclass
class CountConfig:
    """Settings of `count` (the `count` table)."""

    density_lr: Annotated[float, Gt(0)] = 1e-3
    """SGD step size of the density model's one update per sample (defines the prediction gain)."""
    decay_c: Annotated[float, Gt(0)] = 0.1
    """c in the prediction-gain decay c * n^(-1/2) (Ostrovski et al. 2017)."""
    lr: Annotated[float, Gt(0)] = 1e-3
    """Adam learning rate of the policy."""
    kl_coef: Annotated[float, Ge(0)] = 0.05
    """KL penalty to the prior (Appendix B.2: 0.05)."""
    bonus_coef: Annotated[float, Ge(0)] = 1.0
    """Weight of the exploration bonus in the return."""
    grad_clip: Annotated[float, Ge(0)] = 1.0
    """Clip the policy's global gradient norm (0 disables)."""


def pseudo_count(log_rho: float, gain: float) -> float:
    """N = rho (1 - rho') / (rho' - rho) with rho' = rho exp(gain); inf when gain <= 0 (no novelty)."""
    if gain <= 0:
        return math.inf
    rho_prime = math.exp(log_rho + gain)
    return (1.0 - rho_prime) / math.expm1(gain)


def decayed_gain(gain: float, n: int, c: float) -> float:
    """c n^(-1/2) (PG)_+: Ostrovski et al.'s prediction-gain decay at density-model step n >= 1."""
    return c * n**-0.5 * max(gain, 0.0)


def bonus(count: float) -> float:
    """(N + 0.01)^(-1/2); 0 for an infinite count."""
    return 0.0 if math.isinf(count) else (count + BONUS_OFFSET) ** -0.5


class DensityModel:
    """rho: the prior's architecture and weights, trained by one SGD step per observed sample."""

    def __init__(self, model: TrainableModel, lr: float, c: float) -> None:
        self.model, self.c, self.steps = model, c, 0
        self.optimiser = torch.optim.SGD(model.parameters(), lr=lr)

    def state_dict(self) -> dict[str, Any]:
        """The density model, its optimiser and its step count (the decay schedule's n)."""
        return {"model": self.model.state_dict(), "optimiser": self.optimiser.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.steps = int(state["steps"])

    def observe(self, x: Sequences) -> tuple[list[float], list[float]]:
        """Update on each sample in turn; returns each sample's raw prediction gain and pseudo-count."""
        gains, counts = [], []
        for k in range(len(x)):
            xk = x[k]
            log_p = self.model.log_prob_grad(xk)
            self.optimiser.zero_grad()
            (-log_p.sum()).backward()
            self.optimiser.step()
            self.steps += 1
            before = float(log_p.detach().sum())
            gain = float(self.model.log_prob(xk)[0]) - before
            gains.append(gain)
            counts.append(pseudo_count(before, decayed_gain(gain, self.steps, self.c)))
        return gains, counts


class PseudoCount(PolicyMethod):
    """Pseudo-count bonus (Ostrovski et al. 2017) + REINFORCE with KL 0.05 to the prior (App. B.2)."""

    Options = CountConfig

    def __init__(self, prior: GenerativeModel, options: CountConfig | None = None, context: Context | None = None):
        super().__init__(prior, options or CountConfig(), context)
        self.density = DensityModel(trainable_copy(prior, "count"), self.options.density_lr, self.options.decay_c)

    def parts(self) -> dict[str, Stateful]:
        """Policy, optimiser and the density model."""
        return {**super().parts(), "density": self.density}

    def round(self, oracle: Oracle, i: int) -> Round:
        """Update the density model on the round's samples, then a bonus-driven REINFORCE step."""
        o = self.options
        x, rewards, batch, r = self.draw(oracle, i)
        stats: dict[str, Any] = {"trained_on": len(batch), "loss": None, "bonus_mean": None, "gain_median": None}
        if len(batch):
            gains, counts = self.density.observe(batch)
            b = torch.tensor([bonus(n) for n in counts], dtype=torch.float64)
            log_p = self.policy.log_prob_grad(batch)
            adv = kl_shaped_advantages(o.bonus_coef * b + r, log_p.detach(), self.prior.log_prob(batch), o.kl_coef)
            loss = reinforce_loss(log_p, adv)
            optimiser_step(self.policy, self.optimiser, loss, o.grad_clip)
            stats["loss"] = float(loss.detach())
            stats["bonus_mean"] = float(b.mean())
            stats["gain_median"] = float(torch.tensor(gains).median())
        return Round(x, rewards, stats)
