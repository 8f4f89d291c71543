"""High-temperature sampling (Appendix B.3): the prior sampled at temperature T > 1, no training.

Each round spends m NREs on m tempered samples (successes are recorded, nothing is learnt). The evaluated
model is the tempered prior itself, built exactly by the model (`Temperable.tempered`: per-token logits / T).
"""

from __future__ import annotations

from typing import Any

from banel.config import Annotated, Gt, settings_dataclass
from banel.methods.protocol import Context, Oracle, Round
from banel.models.protocol import GenerativeModel, Temperable
from banel.sequences import derive_seed


@settings_dataclass
class TemperatureConfig:
    """Settings of `temperature` (the `temperature` table)."""

    temperature: Annotated[float, Gt(0)] = 1.2
    """Sampling temperature (B.3 tries 1.1 and 1.2)."""


def tempered(model: GenerativeModel, temperature: float) -> GenerativeModel:
    """A copy whose sampling and log_prob are those of `model` at `temperature` (per-token logits / T)."""
    if not isinstance(model, Temperable):
        raise ValueError(
            f"temperature: a {type(model).__name__} cannot be tempered exactly; it needs "
            "tempered(temperature) -> GenerativeModel (banel.models.protocol.Temperable)"
        )
    return model.tempered(temperature)


class Temperature:
    """The prior sampled at a higher temperature (App. B.3), no training."""

    Options = TemperatureConfig

    def __init__(
        self, prior: GenerativeModel, options: TemperatureConfig | None = None, context: Context | None = None
    ) -> None:
        self.options, self.context = options or TemperatureConfig(), context or Context()
        self.model = tempered(prior, self.options.temperature)

    @property
    def generator(self) -> GenerativeModel:
        """The tempered prior."""
        return self.model

    def round(self, oracle: Oracle, i: int) -> Round:
        """m tempered samples, evaluated; nothing is learnt."""
        x = self.model.sample(self.context.m, derive_seed(self.context.seed, i, "sample"))
        return Round(x, oracle(x), {"temperature": self.options.temperature})

    def state_dict(self) -> dict[str, Any]:
        """Nothing: every round is a function of (seed, round)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""
