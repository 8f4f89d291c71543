"""The contract between the run and a method: one round against the oracle at a time, and its own state.

The run owns the only loop: while the oracle can pay for a round of `m` samples it calls `method.round(oracle,
i)`, records the returned `Round` (successes, history, snapshots), evaluates `method.generator` when due, and
checkpoints `method.state_dict()`. A method never checks the budget, never writes files and never sees the
task: what it may know of the run comes in a `Context`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from banel.models.protocol import GenerativeModel
from banel.sequences import Sequences
from banel.tasks.protocol import Feasible

Oracle = Callable[[Sequences], torch.Tensor]
"""oracle(x) -> (n,) float64 rewards: 0/1, NaN where the evaluation failed (never learn from those)."""


@dataclass(frozen=True)
class Context:
    """The run-level settings every method reads the same way."""

    m: int = 250
    """Samples to evaluate per round (fewer only where the free check rules candidates out)."""
    seed: int = 0
    """Root seed; a method derives every random stream from (seed, round, purpose) with `derive_seed`."""
    feasible: Feasible | None = None
    """The task's free check when the run has `feasible_only` (the oracle already answers 0, unpaid, for what
    it rules out; a method may also use it to avoid drawing such samples), else None."""
    check: Feasible | None = None
    """The task's free check whenever it has one, feasible_only or not: a method may rank with it (what it
    then asks for is paid as usual); None for a task without one."""
    train_on_successes: bool = False
    """Learn from reward-1 samples too; off in the paper's protocol (successes are recorded, never trained on)."""
    support: Sequences | None = None
    """Every sequence of the sample space, when the task can enumerate it (Algorithm 1's exact normaliser)."""


@dataclass
class Round:
    """What one round did: the samples it paid for and their rewards, its diagnostics and models to snapshot."""

    samples: Sequences
    """The samples asked of the oracle this round."""
    rewards: torch.Tensor
    """Their rewards: (n,) float64, 0/1, NaN where the evaluation failed."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Method-specific numbers for history.jsonl (losses, thresholds, bonuses)."""
    models: dict[str, GenerativeModel] = field(default_factory=dict)
    """Extra models of this round for the task's snapshot (e.g. BaNEL's negative model)."""


@runtime_checkable
class Method(Protocol):
    """A post-training method, stepped one round at a time by the run.

    Built as `Method(prior, options, context)`: `options` is an instance of the class attribute `Options` (a
    frozen dataclass whose field docstrings are the `--help` of the table named after the method), or None
    for a method without one.
    """

    @property
    def generator(self) -> GenerativeModel:
        """The model the run evaluates, saves as best/final and snapshots as 'posterior'."""
        ...

    def round(self, oracle: Oracle, i: int) -> Round:
        """Round i (0, 1, ...): draw, pay through `oracle`, learn; random streams derived from (seed, i)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything the next round depends on (tensors and plain values: saved with weights_only=True)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved, on a method built with the same prior, options and context."""
        ...


def training_batch(x: Sequences, rewards: torch.Tensor, train_on_successes: bool) -> tuple[Sequences, torch.Tensor]:
    """The samples a method may learn from: the failures only (the paper's protocol), or every evaluated one.

    A sample whose evaluation failed (NaN reward) is never learned from.
    """
    keep = ~rewards.isnan() if train_on_successes else rewards == 0
    return x[keep], rewards[keep]
