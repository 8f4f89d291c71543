"""Tasks: a plain dict from name to a factory `make(options, cache) -> Task`, with one line of help each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from banel.config import from_dict
from banel.tasks import addition
from banel.tasks.protocol import Task
from banel.tasks.toy import PriorTraining, Toy1D, Toy2D


def _toy(cls: type) -> Callable[[dict[str, Any], str | Path | None], Task]:
    def make(options: dict[str, Any], cache: str | Path | None) -> Task:
        training = from_dict(PriorTraining, options.get("prior_training", {}), "task_options.prior_training.")
        unknown = set(options) - {"prior_training"}
        if unknown:
            raise ValueError(
                f"unknown task_options {sorted(unknown)} for {cls.name}; allowed: prior_training"
            )
        return cls(training, cache)

    return make


TASKS: dict[str, Callable[[dict[str, Any], str | Path | None], Task]] = {
    "toy1d": _toy(Toy1D),
    "toy2d": _toy(Toy2D),
    "addition": addition.make,
}

DESCRIPTIONS: dict[str, str] = {
    "toy1d": "1D line, prior pre-trained on N(0,1); reward one near -2 and 2 (blog figure). Exact rates.",
    "toy2d": "Two circles (Fig. 1); reward one on a short arc of the inner circle. Exact rates.",
    "addition": "Attack a transformer adder (App. B.1): reward 1 for a well-formed query it answers wrongly.",
}


def make_task(name: str, options: dict[str, Any] | None = None, cache: str | Path | None = None) -> Task:
    """Build a task by name."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}")
    return TASKS[name](options or {}, cache)


__all__ = ["DESCRIPTIONS", "TASKS", "Task", "make_task"]
