"""Tasks: a plain dict from name to a factory `make(options, cache) -> Task`, with one line of help each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from banel.config import from_dict
from banel.tasks.mnist import Digits, ImageTaskOptions, Mnist
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


def _images(cls: type) -> Callable[[dict[str, Any], str | Path | None], Task]:
    def make(options: dict[str, Any], cache: str | Path | None) -> Task:
        return cls(from_dict(ImageTaskOptions, options, "task_options."), cache)

    return make


TASKS: dict[str, Callable[[dict[str, Any], str | Path | None], Task]] = {
    "toy1d": _toy(Toy1D),
    "toy2d": _toy(Toy2D),
    "digits": _images(Digits),
    "mnist": _images(Mnist),
}

DESCRIPTIONS: dict[str, str] = {
    "toy1d": "1D line, prior pre-trained on N(0,1); reward one near -2 and 2 (blog figure). Exact rates.",
    "toy2d": "Two circles (Fig. 1); reward one on a short arc of the inner circle. Exact rates.",
    "digits": "0 -> 6 on sklearn's embedded 8x8 digits: prior on zeros, 50,000 affine sixes. Exact rates.",
    "mnist": "MNIST 0 -> 6 (Sec. 5.1) from the IDX files, task_options.resolution 14 or 28. Exact rates.",
}


def make_task(name: str, options: dict[str, Any] | None = None, cache: str | Path | None = None) -> Task:
    """Build a task by name."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}")
    return TASKS[name](options or {}, cache)


__all__ = ["DESCRIPTIONS", "TASKS", "Task", "make_task"]
