"""The success rate rho(p) = sum_x p(x) r(x) of a model: exact, or Monte Carlo with a Clopper-Pearson interval.

Only tasks that declare free measurement have one: an exact rate (`ExactSuccess`) or a free copy of the reward
(`GroundTruth.free_reward`). The costly `reward` is never called here; for a task with neither, every function
below returns None and a run is judged on its paid evidence alone (`banel.eval.evidence`).

Three estimates, with disjoint random streams (`derive_seed(seed, STREAM, ...)`), so none is selected on the
samples that measure it:
- `success_rate` at each evaluation of a run (stream "eval"): the numbers a run's best round is chosen on;
- `reestimate`, once per run, of the chosen generator on fresh samples (stream "reestimate"): the
  selection-free best reported in summary.json and the tables;
- `prior_estimate`, once per comparison, of the prior, drawing until a fixed number of successes (stream
  "prior"): the one denominator every improvement factor of a table shares.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace

import torch
from scipy.stats import binomtest

from banel.config import EvalConfig
from banel.models.protocol import GenerativeModel
from banel.sequences import derive_seed
from banel.tasks.protocol import Task, exact_success_rate, free_reward, subset_success_rate

STREAM_EVAL = "eval"
STREAM_REESTIMATE = "reestimate"
STREAM_PRIOR = "prior-estimate"
PRIOR_CHUNK = 20_000  # prior samples drawn at a time while counting successes (bounds memory)


@dataclass(frozen=True)
class SuccessRate:
    """A success rate with its interval; exact rates have low == high == rate and n == 0."""

    rate: float
    low: float
    high: float
    exact: bool
    n: int = 0
    successes: int = 0
    approximation: str = ""
    """How an intermediate evaluation was cheapened ('targets 5000', 'bf16'); empty for a full one."""

    def as_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial (Clopper-Pearson) interval for k successes in n trials."""
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def monte_carlo(task: Task, model: GenerativeModel, n: int, seed: int, confidence: float) -> SuccessRate | None:
    """The share of n fresh model samples with reward 1 by the task's free reward; None for a task without one."""
    reward = free_reward(task)
    if reward is None:
        return None
    k = int(reward(model.sample(n, seed)).sum())
    low, high = clopper_pearson(k, n, confidence)
    return SuccessRate(k / n, low, high, False, n, k)


def success_rate(
    task: Task, model: GenerativeModel, config: EvalConfig, seed: int, curve_seed: int | None = None
) -> SuccessRate | None:
    """Exact success rate if the task can compute it, else an estimate from config.samples draws scored by the
    task's free reward, else None (no free measurement).

    With `curve_seed` (an intermediate evaluation, not one that is reported as a best or final rate), the
    cheaper evaluation the config asks for: a fixed subset of the targets chosen by curve_seed
    (`exact_subset`) and bfloat16 autocast (`bf16_curves`).
    """
    if curve_seed is None or not (config.exact_subset or config.bf16_curves):
        return _full_rate(task, model, config, seed)
    with _bf16(model) if config.bf16_curves else contextlib.nullcontext():
        subset = subset_success_rate(task, model, config.exact_subset, curve_seed) if config.exact_subset else None
        rate = _full_rate(task, model, config, seed) if subset is None else SuccessRate(subset, subset, subset, True)
    if rate is None:
        return None
    notes = ([f"targets {config.exact_subset}"] if subset is not None else []) + (
        ["bf16"] if config.bf16_curves else []
    )
    return replace(rate, exact=False, approximation=", ".join(notes))


def _full_rate(task: Task, model: GenerativeModel, config: EvalConfig, seed: int) -> SuccessRate | None:
    """The exact rate, or the Monte-Carlo estimate of a task without one (None: no free measurement)."""
    exact = exact_success_rate(task, model)
    if exact is not None:
        return SuccessRate(exact, exact, exact, True)
    return monte_carlo(task, model, config.samples, seed, config.confidence)


def _bf16(model: GenerativeModel) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on the model's device (the CPU for a model that does not say)."""
    device = torch.device(getattr(model, "device", "cpu"))
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def evaluation_seed(seed: int, round_index: int | str) -> int:
    """The seed of a run's evaluation after round_index ('base' for the prior): the selection stream."""
    return derive_seed(seed, STREAM_EVAL, round_index)


def reestimate(task: Task, model: GenerativeModel, config: EvalConfig, seed: int) -> SuccessRate | None:
    """The selected generator measured again on samples of its own stream, never seen by the selection."""
    exact = exact_success_rate(task, model)
    if exact is not None:
        return SuccessRate(exact, exact, exact, True)
    n = config.reestimate_samples or config.samples
    return monte_carlo(task, model, n, derive_seed(seed, STREAM_REESTIMATE), config.confidence)


def prior_estimate(
    task: Task,
    prior: GenerativeModel,
    successes: int = 100,
    max_samples: int = 1_000_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> SuccessRate | None:
    """The prior's success rate for a whole comparison: exact where possible, else Monte-Carlo draws (scored by
    the free reward) until `successes` successes or `max_samples` draws, whichever comes first; None for a
    task without free measurement.

    Stopping at a fixed number of successes gives a relative precision that does not depend on the rate
    (about 1/sqrt(k): 10% at 100); the Clopper-Pearson interval is reported with it.
    """
    if successes < 1 or max_samples < 1:
        raise ValueError(
            f"the prior estimate needs successes >= 1 and max_samples >= 1; got {successes}, {max_samples}"
        )
    exact = exact_success_rate(task, prior)
    if exact is not None:
        return SuccessRate(exact, exact, exact, True)
    reward = free_reward(task)
    if reward is None:
        return None
    n = k = chunk = 0
    while k < successes and n < max_samples:
        size = min(PRIOR_CHUNK, max_samples - n)
        k += int(reward(prior.sample(size, derive_seed(seed, STREAM_PRIOR, chunk))).sum())
        n, chunk = n + size, chunk + 1
    low, high = clopper_pearson(k, n, confidence)
    return SuccessRate(k / n, low, high, False, n, k)
