"""High-temperature sampling (Appendix B.3): the prior sampled at temperature T > 1, no training.

Each round spends m NREs on m tempered samples (successes are recorded, nothing is learnt). The evaluated
model is the tempered prior itself, built exactly: per-token logits divided by T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from banel.baselines.common import checkpoint, evaluate, parse_options, restore
from banel.models.categorical import CategoricalModel
from banel.models.protocol import GenerativeModel
from banel.models.transformer import TransformerModel
from banel.sequences import derive_seed

if TYPE_CHECKING:
    from banel.runner import Run


@dataclass(frozen=True)
class TemperatureConfig:
    """method_options of `temperature`."""

    temperature: float = 1.2
    """Sampling temperature (B.3 tries 1.1 and 1.2)."""

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"method_options.temperature must be > 0, got {self.temperature}")


def tempered(model: GenerativeModel, temperature: float) -> GenerativeModel:
    """A copy whose sampling and log_prob are those of `model` at `temperature` (per-token logits / T)."""
    if isinstance(model, TransformerModel):
        copy = model.clone()
        # The output head has no bias, so scaling its weight by 1/T divides every logit by T exactly.
        copy.net.head.weight.data.div_(temperature)
        return copy
    if isinstance(model, CategoricalModel):
        return CategoricalModel(model.support, model.logits.detach() / temperature, model.end_token)
    raise ValueError(
        f"temperature: cannot temper a {type(model).__name__}; supported: TransformerModel, CategoricalModel"
    )


def run(run: Run) -> None:
    """Tempered sampling as a method: m tempered samples evaluated per round, no learning."""
    opts = parse_options(TemperatureConfig, run.config.method_options, "temperature")
    m, seed = run.config.banel.m, run.config.seed
    run.trained_on_successes = False
    model = tempered(run.prior, opts.temperature)
    restore(run)  # no state beyond the run's own: resume continues after the last finished round
    while run.oracle.remaining >= m:
        x = model.sample(m, derive_seed(seed, run.round_index, "sample"))
        rewards = evaluate(run, x)
        run.end_round(
            model,
            x,
            rewards,
            {"temperature": opts.temperature},
            snapshot_models={"prior": run.prior, "posterior": model},
        )
        checkpoint(run)
