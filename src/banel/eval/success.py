"""The success rate rho(p) = sum_x p(x) r(x) of a model: exact, or Monte Carlo with a Clopper-Pearson interval."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from scipy.stats import binomtest

from banel.config import EvalConfig
from banel.models.protocol import GenerativeModel
from banel.tasks.protocol import Task, exact_success_rate


@dataclass(frozen=True)
class SuccessRate:
    """A success rate with its interval; exact rates have low == high == rate and n == 0."""

    rate: float
    low: float
    high: float
    exact: bool
    n: int = 0
    successes: int = 0

    def as_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial (Clopper-Pearson) interval for k successes in n trials."""
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def success_rate(task: Task, model: GenerativeModel, config: EvalConfig, seed: int) -> SuccessRate:
    """Exact success rate if the task can compute it, else an estimate from config.samples uncharged draws."""
    exact = exact_success_rate(task, model)
    if exact is not None:
        return SuccessRate(exact, exact, exact, True)
    x = model.sample(config.samples, seed)
    k = int(task.reward(x).sum())
    low, high = clopper_pearson(k, config.samples, config.confidence)
    return SuccessRate(k / config.samples, low, high, False, config.samples, k)
