"""The contract of a task: a pre-trained prior, a reward function, and (where possible) exact success rates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from banel.models.protocol import GenerativeModel
from banel.sequences import Sequences

Feasible = Callable[[Sequences], torch.Tensor]
"""feasible(x) -> (n,) bool: False where r(x) = 0 is known without an evaluation (Task.feasible)."""


class Task(Protocol):
    """A sparse-reward problem: a prior p_theta and a binary reward r.

    Optional extras, looked up with getattr: `support() -> Sequences`, every sequence of a small enumerable
    space (Algorithm 1's exact normaliser); `feasible(x) -> (n,) bool`, False where r(x) = 0 follows from
    the reward's definition without an evaluation (e.g. a malformed query), for `banel.feasible_only`.
    """

    name: str
    """Short name used on the command line."""

    def prior(self, device: str) -> GenerativeModel:
        """The pre-trained model p_theta (trained on first use and cached; the same for every run seed)."""
        ...

    def reward(self, x: Sequences) -> torch.Tensor:
        """The ground-truth reward of a batch: (n,) float64 of 0/1. Methods only reach it through an oracle."""
        ...

    def exact_success_rate(self, model: GenerativeModel) -> float | None:
        """Sum of p(x) over every x with r(x) = 1, when the success set is enumerable; else None."""
        ...

    def decode(self, x: Sequences) -> list[str]:
        """Human-readable form of each sample (for ledgers, logs and reports)."""
        ...

    def snapshot(self, models: dict[str, GenerativeModel]) -> dict[str, np.ndarray] | None:
        """Arrays worth saving each round for plots (e.g. exact densities on a grid), or None."""
        ...

    def describe(self) -> dict[str, Any]:
        """Task settings, saved in the run's config.json."""
        ...


def feasibility(task: Any, enabled: bool) -> Feasible | None:
    """The task's free check `feasible` when `enabled` (banel.feasible_only), else None; an error if it has none."""
    if not enabled:
        return None
    check = getattr(task, "feasible", None)
    if check is None:
        raise ValueError(f"banel.feasible_only=true: task {task.name!r} has no feasibility check (addition has)")
    return check
