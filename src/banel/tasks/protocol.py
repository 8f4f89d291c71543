"""The contract of a task: a small required core (a prior and a reward) and optional capabilities.

A task is any object with `name`, `prior(device)` and `reward(x)`. Everything else is a capability, a small
protocol of its own that a task implements where it can; the run asks `isinstance(task, Capability)` and
falls back to the defaults below, so an outside task needs only the core. `banel.testing.check_task` checks
a task against this contract.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from banel.models.protocol import GenerativeModel
from banel.sequences import Sequences

Feasible = Callable[[Sequences], torch.Tensor]
"""feasible(x) -> (n,) bool: False where r(x) = 0 is known without an evaluation (`Feasibility`)."""


@runtime_checkable
class Task(Protocol):
    """A sparse-reward problem: a pre-trained prior p_theta and a binary reward r (the required core)."""

    name: str
    """Short name for run folders, tables and ledgers."""

    def prior(self, device: str) -> GenerativeModel:
        """The pre-trained model p_theta: the same weights for every run seed (train once, cache, load)."""
        ...

    def reward(self, x: Sequences) -> torch.Tensor:
        """The costly reward of a batch: (n,) of 0/1. banel calls it only through the run's budgeted, ledgered
        oracle, and never to measure a model (that is `GroundTruth.free_reward`)."""
        ...


@runtime_checkable
class ExactSuccess(Protocol):
    """The success set can be enumerated, so a model's success rate is exact (no Monte-Carlo noise)."""

    def exact_success_rate(self, model: GenerativeModel) -> float | None:
        """Sum of p(x) over every x with r(x) = 1; None where these settings cannot enumerate it."""
        ...


class GroundTruth(Protocol):
    """Free measurement: a copy of the reward that costs nothing, for measuring models only.

    Benchmarks have one (their reward is a function we can call as often as we like); a user's lab or paid
    grader does not, and a task without it gets no free reward call at all: its runs are judged on the
    evidence the budget paid for. banel calls it for success-rate estimates and nothing else; methods never
    see it. A task may set `free_reward = None` (class or instance) to switch it off.
    """

    def free_reward(self, x: Sequences) -> torch.Tensor:
        """The reward of a batch, (n,) of 0/1, at no cost: the same values `reward` would give."""
        ...


@runtime_checkable
class SubsetSuccess(Protocol):
    """The exact rate is a sum over a large target set, so a fixed random part of it estimates the rate cheaply
    (for a run's intermediate evaluations; `eval.exact_subset`)."""

    def subset_success_rate(self, model: GenerativeModel, size: int, seed: int) -> float:
        """Sum of p(x) over `size` targets drawn without replacement by `seed`, times targets / size: unbiased."""
        ...


@runtime_checkable
class Enumerable(Protocol):
    """The whole sample space is small enough to list (Algorithm 1's exact normaliser)."""

    def support(self) -> Sequences:
        """Every sequence the prior can generate."""
        ...


@runtime_checkable
class Feasibility(Protocol):
    """A free check: some samples have reward 0 by the reward's own definition (e.g. malformed queries)."""

    def feasible(self, x: Sequences) -> torch.Tensor:
        """(n,) bool: False where r(x) = 0 is certain without calling the oracle."""
        ...


@runtime_checkable
class Decode(Protocol):
    """Samples have a human-readable form (for ledgers, successes.jsonl and reports)."""

    def decode(self, x: Sequences) -> list[str]:
        """One string per sample."""
        ...


@runtime_checkable
class Snapshot(Protocol):
    """Arrays worth saving each round for plots (e.g. exact densities on a grid, sample images)."""

    def snapshot(self, models: dict[str, GenerativeModel]) -> dict[str, np.ndarray] | None:
        """Arrays keyed by name for the models of this round ('prior', 'posterior', 'negative', ...)."""
        ...


@runtime_checkable
class Describe(Protocol):
    """The task's settings, saved in each run's config.json (and part of the oracle's identity)."""

    def describe(self) -> dict[str, Any]:
        """Plain JSON-able settings."""
        ...


@runtime_checkable
class Metrics(Protocol):
    """Extra numbers the user cares about, computed at every evaluation of a model (never charged)."""

    def metrics(self, model: GenerativeModel, samples: Sequences) -> dict[str, float]:
        """Named numbers for `model`, given `eval.metric_samples` fresh draws from it."""
        ...


@runtime_checkable
class Prepare(Protocol):
    """Models that take long to train are trained ahead of runs by `banel prepare TASK` (resumable)."""

    def prepare(self, max_seconds: float | None, samples: int, seed: int, problems: int) -> dict[str, Any]:
        """Train (or resume training of) the task's models and report how good they are."""
        ...


# -- the defaults the run falls back to -------------------------------------------------------------------


def decode(task: object, x: Sequences) -> list[str]:
    """The task's text of each sample, or its tokens joined by commas."""
    if isinstance(task, Decode):
        return task.decode(x)
    return [",".join(map(str, row)) for row in x.to_lists()]


def describe(task: Task) -> dict[str, Any]:
    """The task's settings for config.json, or just its name."""
    return {"name": task.name, **task.describe()} if isinstance(task, Describe) else {"name": task.name}


def free_reward(task: object) -> Callable[[Sequences], torch.Tensor] | None:
    """The task's free copy of its reward (`GroundTruth`), or None: then nothing may measure a model for free."""
    reward = getattr(task, "free_reward", None)
    return reward if callable(reward) else None


def exact_success_rate(task: object, model: GenerativeModel) -> float | None:
    """The exact success rate where the task can enumerate its successes, else None."""
    return task.exact_success_rate(model) if isinstance(task, ExactSuccess) else None


def subset_success_rate(task: object, model: GenerativeModel, size: int, seed: int) -> float | None:
    """The task's estimate of the exact rate from `size` of its targets, or None where it has no target set."""
    return task.subset_success_rate(model, size, seed) if isinstance(task, SubsetSuccess) else None


def snapshot(task: object, models: dict[str, GenerativeModel]) -> dict[str, np.ndarray] | None:
    """The task's arrays for this round, or None."""
    return task.snapshot(models) if isinstance(task, Snapshot) else None


def support(task: object) -> Sequences | None:
    """Every sequence, where the task can list them, else None."""
    return task.support() if isinstance(task, Enumerable) else None


def feasibility(task: Task, enabled: bool) -> Feasible | None:
    """The task's free check when `enabled` (the run's `feasible_only`), else None; an error if it has none."""
    if not enabled:
        return None
    if not isinstance(task, Feasibility):
        raise ValueError(
            f"feasible_only=true needs a task with a free check, feasible(x) (banel.tasks.protocol.Feasibility); "
            f"task {task.name!r} has none"
        )
    return task.feasible


def metrics(task: object, model: GenerativeModel, samples: Sequences) -> dict[str, float]:
    """Extra metrics of `model` on its samples: `infeasible_fraction` for a task with a free check, then the
    task's own `metrics`."""
    out: dict[str, float] = {}
    if not len(samples):
        return out
    if isinstance(task, Feasibility):
        out["infeasible_fraction"] = float((~task.feasible(samples).bool().cpu()).double().mean())
    if isinstance(task, Metrics):
        out.update({str(k): float(v) for k, v in task.metrics(model, samples).items()})
    return out
