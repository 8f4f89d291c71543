"""What the policy-gradient baselines share: option parsing, a trainable copy of the prior, one
optimiser step, and KL-shaped REINFORCE advantages. Each baseline's loop stays in its own module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch
from torch import nn

from banel.config import from_dict
from banel.models.protocol import GenerativeModel, TrainableModel
from banel.sequences import Sequences
from banel.tasks.protocol import feasibility

if TYPE_CHECKING:
    from banel.runner import Run

T = TypeVar("T")


def parse_options(cls: type[T], options: dict[str, Any], method: str) -> T:
    """method_options validated into the method's dataclass; unknown keys are errors naming the allowed."""
    try:
        return from_dict(cls, options, "method_options.")
    except ValueError as err:
        raise ValueError(f"{method}: {err}") from None


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


def restore(run: Run, **parts: Stateful) -> None:
    """On a resumed run, load each part's state from the last checkpoint; on a fresh run do nothing."""
    state = run.restore()
    if state is None:
        return
    missing = set(parts) - set(state)
    if missing:
        raise ValueError(f"checkpoint of {run.config.method!r} lacks {sorted(missing)}: written by another version")
    for name, part in parts.items():
        part.load_state_dict(state[name])


def checkpoint(run: Run, **parts: Stateful) -> None:
    """Save every part's state with the run's bookkeeping (call right after `run.end_round`)."""
    run.checkpoint({name: part.state_dict() for name, part in parts.items()})


def evaluate(run: Run, x: Sequences) -> torch.Tensor:
    """Rewards of x from the run's oracle; with banel.feasible_only, what the task's check rules out is 0, unpaid."""
    feasible = feasibility(run.task, run.config.banel.feasible_only)
    if feasible is None:
        return run.oracle(x)
    ok = feasible(x)
    rewards = torch.zeros(len(x), dtype=torch.float64)
    if bool(ok.any()):
        rewards[ok] = run.oracle(x[ok])
    return rewards


def training_batch(x: Sequences, rewards: torch.Tensor, train_on_successes: bool) -> tuple[Sequences, torch.Tensor]:
    """The samples a method may learn from: the failures only (the paper's protocol), or every evaluated one.

    A sample whose evaluation failed (NaN reward from the ledger oracle) is never learned from.
    """
    keep = ~rewards.isnan() if train_on_successes else rewards == 0
    return x[keep], rewards[keep]


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
