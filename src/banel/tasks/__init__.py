"""Tasks: a plain dict from name to a factory `make(options, cache) -> Task`, with one line of help each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from banel.config import from_dict
from banel.tasks import addition
from banel.tasks.mnist import Digits, ImageTaskOptions, Mnist
from banel.tasks.protocol import Task
from banel.tasks.toy import PriorTraining, Toy1D, Toy2D


def _toy(cls: type) -> Callable[[dict[str, Any], str | Path | None], Task]:
    def make(options: dict[str, Any], cache: str | Path | None) -> Task:
        training = from_dict(PriorTraining, options.get("prior_training", {}), "task_options.prior_training.")
        unknown = set(options) - {"prior_training"}
        if unknown:
            raise ValueError(f"unknown task_options {sorted(unknown)} for {cls.name}; allowed: prior_training")
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
    "addition": addition.make,
}

DESCRIPTIONS: dict[str, str] = {
    "toy1d": "1D line, prior pre-trained on N(0, 0.4^2); reward one within 0.05 of -2 and 2 (blog figure). Exact.",
    "toy2d": "Two circles (Fig. 1), 99.8% of the prior on the outer; reward one on a quarter of the inner one. Exact.",
    "digits": "0 -> 6 on sklearn's embedded 8x8 digits: prior on its 99 raw zeros, 50,000 affine sixes. Exact rates.",
    "mnist": "MNIST 0 -> 6 (Sec. 5.1) from the IDX files, task_options.resolution 14 or 28. Exact rates.",
    "addition": "Attack a transformer adder (App. B.1): reward 1 for a well-formed query it answers wrongly.",
}


# Settings a task runs with unless the user overrides them (merged under the config file and --set).
# The toy tasks need a sharper negative model than the paper's image settings: see docs/LOG.md (2026-11-25).
# digits: the paper's distillation (reset to the base, 15 epochs on 250 samples) lowers the exact rate round
# after round there, so a wider filter and a light distillation into the kept generator (docs/LOG.md, issue 6b);
# with the sparse raw-zeros prior, kappa = 2 keeps the loop from collapsing where kappa = 0.5 and the paper's
# settings do not (docs/LOG.md, 2026-11-25 21:00).
DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    "toy1d": {"banel": {"kappa": 4.0, "negative_epochs": 20}},
    "toy2d": {"banel": {"kappa": 4.0, "negative_epochs": 20}},
    "digits": {"banel": {"kappa": 2.0, "filter_factor": 4, "generator_epochs": 3, "reset_generator": False}},
    "addition": {"banel": {"kappa": 2.0}},  # Appendix B.2: kappa = 1 everywhere except the addition attack
}


def make_task(name: str, options: dict[str, Any] | None = None, cache: str | Path | None = None) -> Task:
    """Build a task by name."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}")
    return TASKS[name](options or {}, cache)


__all__ = ["DEFAULT_SETTINGS", "DESCRIPTIONS", "TASKS", "Task", "make_task"]
