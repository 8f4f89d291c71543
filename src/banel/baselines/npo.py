"""Negative Preference Optimisation (Zhang et al. 2024, arXiv 2404.05868) on failures: a bounded negrl.

    L(theta) = (2 / beta) * (1/m) sum_i (1 - r_i) log(1 + (p_theta(x_i) / p_prior(x_i))^beta)

over a round's samples (successes weigh 0, as in negrl). Its gradient is negrl's, -grad log p_theta(x_i) per
failure, times w_i = 2 sigmoid(beta * log(p_theta(x_i) / p_prior(x_i))): 1 where the policy still agrees with
the prior (the first step is exactly negrl's), falling to 0 as p_theta(x_i) -> 0. So a failure is pushed down
only until it is about 1/beta nats below the prior, and the loss is bounded below by 0 where negrl's
-log p_theta is not: the detachment of Fig. 11a has nothing left to pull on. The reference is the prior, the
only anchor (no KL term). The ratio is of whole-sequence likelihoods, end token included (the paper's
pi(y|x)); `length_normalise` divides the log-ratio by l(x) instead.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from banel.baselines.common import PolicyMethod, optimiser_step
from banel.config import Annotated, Ge, Gt, settings_dataclass
from banel.methods.protocol import Context, Oracle, Round
from banel.models.protocol import GenerativeModel


@settings_dataclass
class NPOConfig:
    """Settings of `npo` (the `npo` table; lr, steps and grad_clip as negrl's)."""

    beta: Annotated[float, Gt(0)] = 1.0
    """Inverse temperature of the ratio: a failure's weight halves once its log-ratio to the prior reaches
    -1.1/beta (the paper's 0.1 is for answers of hundreds of tokens; banel's sequences are short)."""
    length_normalise: bool = False
    """Use the log-ratio per scored token, log(p_theta/p_prior) / l(x), instead of the sequence's."""
    lr: Annotated[float, Gt(0)] = 1e-3
    """Adam learning rate."""
    steps: Annotated[int, Ge(1)] = 1
    """Gradient steps per round on the round's failures."""
    grad_clip: Annotated[float, Ge(0)] = 1.0
    """Clip the global gradient norm (0 disables)."""


def npo_loss(log_ratio: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """(2/beta) (1/m) sum_i (1 - r_i) log(1 + exp(beta * log_ratio_i)), log_ratio = log p_theta - log p_prior."""
    # softplus(z) = log(1 + e^z), stable for large |z|: the loss stays finite as p_theta -> 0 or grows
    terms = F.softplus(beta * log_ratio) * (1.0 - rewards.to(log_ratio.dtype))
    return (2.0 / beta) * terms.mean() if len(terms) else log_ratio.sum()


class NPO(PolicyMethod):
    """Negative Preference Optimisation on failures: negrl's push-down, bounded and anchored to the prior."""

    Options = NPOConfig

    def __init__(self, prior: GenerativeModel, options: NPOConfig | None = None, context: Context | None = None):
        super().__init__(prior, options or NPOConfig(), context)

    def round(self, oracle: Oracle, i: int) -> Round:
        """`steps` descent steps of the NPO loss on the round's failures (reward-1 samples weigh 0)."""
        o = self.options
        x, rewards, batch, r = self.draw(oracle, i)
        stats: dict[str, Any] = {"trained_on": len(batch), "loss": None, "grad_norm": None, "weight_mean": None}
        if not len(batch):
            return Round(x, rewards, stats)
        log_prior = self.prior.log_prob(batch)
        scale = self.prior.token_counts(batch).double().clamp(min=1) if o.length_normalise else 1.0
        for _ in range(o.steps):
            log_ratio = (self.policy.log_prob_grad(batch).double() - log_prior) / scale
            loss = npo_loss(log_ratio, r, o.beta)
            stats["grad_norm"] = optimiser_step(self.policy, self.optimiser, loss, o.grad_clip)
            stats["loss"] = float(loss.detach())
            # relative to negrl's unit weight per failure (before this step)
            weights = (2 * torch.sigmoid(o.beta * log_ratio.detach()))[r == 0]
            stats["weight_mean"] = float(weights.mean()) if len(weights) else None
        return Round(x, rewards, stats)
