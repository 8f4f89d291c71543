"""The prior as it is (the reference row of Table 2): m prior samples evaluated per round, no learning."""

from __future__ import annotations

from typing import Any

from banel.methods.protocol import Context, Oracle, Round
from banel.models.protocol import GenerativeModel
from banel.sequences import derive_seed


class Base:
    """The prior as it is (reference row): brute-force sampling, no training."""

    Options = None

    def __init__(self, prior: GenerativeModel, options: None = None, context: Context | None = None) -> None:
        self.prior, self.context = prior, context or Context()

    @property
    def generator(self) -> GenerativeModel:
        """The prior itself."""
        return self.prior

    def round(self, oracle: Oracle, i: int) -> Round:
        """m prior samples, evaluated; successes are recorded, the model never changes."""
        x = self.prior.sample(self.context.m, derive_seed(self.context.seed, i, "sample"))
        return Round(x, oracle(x))

    def state_dict(self) -> dict[str, Any]:
        """Nothing: every round is a function of (seed, round)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""
