"""What the policy-gradient baselines share: a trainable copy of the prior with its optimiser and state, one
optimiser step, and KL-shaped REINFORCE advantages. Each baseline's round stays in its own module."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from banel.methods.protocol import Context, Oracle, training_batch
from banel.models.protocol import GenerativeModel, TrainableModel
from banel.sequences import Sequences, derive_seed


def trainable_copy(model: GenerativeModel, method: str) -> TrainableModel:
    """An independent copy of the prior that supports log_prob_grad (the policy a baseline trains)."""
    copy = model.clone()
    if not isinstance(copy, TrainableModel):
        raise ValueError(
            f"method {method!r} needs a model with log_prob_grad() and parameters() "
            "(banel.models.protocol.TrainableModel); "
            f"{type(model).__name__} has no differentiable log-likelihood"
        )
    return copy


def adam(model: TrainableModel, lr: float) -> torch.optim.Optimizer:
    """Adam over the model's parameters."""
    return torch.optim.Adam(model.parameters(), lr=lr)


def optimiser_step(
    model: TrainableModel, optimiser: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float
) -> float:
    """One step: zero the gradients, backpropagate `loss`, clip the global norm (0: no clip), step.

    Returns the gradient norm before clipping.
    """
    optimiser.zero_grad(set_to_none=False)
    loss.backward()
    params = model.parameters()
    if grad_clip:
        norm = nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params if p.grad is not None]))
    optimiser.step()
    return float(norm)


class Stateful(Protocol):
    """Anything with state_dict / load_state_dict: models, torch optimisers, a method's own statistics."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class PolicyMethod:
    """A baseline that trains a policy, a copy of the prior, with Adam: the policy is what the run evaluates.

    Subclasses set `Options` (with an `lr` field) and write `round`; extra state goes in `parts()`.
    """

    def __init__(self, prior: GenerativeModel, options: Any, context: Context | None = None) -> None:
        self.prior, self.options, self.context = prior, options, context or Context()
        self.policy = trainable_copy(prior, type(self).__name__)
        self.optimiser = adam(self.policy, options.lr)

    @property
    def generator(self) -> GenerativeModel:
        """The policy."""
        return self.policy

    def parts(self) -> dict[str, Stateful]:
        """Everything a round depends on, by name (the checkpoint's keys)."""
        return {"policy": self.policy, "optimiser": self.optimiser}

    def state_dict(self) -> dict[str, Any]:
        """Each part's state."""
        return {name: part.state_dict() for name, part in self.parts().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore each part's state."""
        missing = set(self.parts()) - set(state)
        if missing:
            raise ValueError(f"checkpoint of {type(self).__name__} lacks {sorted(missing)}: written by another version")
        for name, part in self.parts().items():
            part.load_state_dict(state[name])

    def draw(self, oracle: Oracle, i: int) -> tuple[Sequences, torch.Tensor, Sequences, torch.Tensor]:
        """m policy samples and their rewards, and the part of them the method may learn from."""
        x = self.policy.sample(self.context.m, derive_seed(self.context.seed, i, "sample"))
        rewards = oracle(x)
        batch, r = training_batch(x, rewards, self.context.train_on_successes)
        return x, rewards, batch, r


def kl_shaped_advantages(
    reward: torch.Tensor, log_p_model: torch.Tensor, log_p_prior: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """REINFORCE advantages of reward - kl_coef * (log p_theta(x) - log p_prior(x)), batch mean as baseline.

    The per-sample KL term is the usual penalty to the initial policy (Ziegler et al. 2019), Appendix B.2.
    """
    shaped = reward.double() - kl_coef * (log_p_model.double() - log_p_prior.double())
    return shaped - shaped.mean() if len(shaped) else shaped


def reinforce_loss(log_p: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-(1/m) sum_i A_i log p_theta(x_i): its gradient is the REINFORCE estimate with (detached) A."""
    if not len(log_p):
        return log_p.sum()
    return -(advantages.detach().to(log_p.dtype) * log_p).mean()
