"""The methods `banel run --method` can run: a plain dict from name to `run(Run) -> None`."""

from __future__ import annotations

from collections.abc import Callable

from banel import algorithm
from banel.runner import Run

METHODS: dict[str, Callable[[Run], None]] = {
    "banel": algorithm.run,
}

DESCRIPTIONS: dict[str, str] = {
    "banel": "Bayesian Negative Evidence Learning (Algorithms 1 and 2 of the paper)",
}
