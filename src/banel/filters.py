"""The Bayesian update of BaNEL (arXiv 2510.09596) as a filter: the likelihood ratio and its threshold (Eq. 5-6),
and Algorithm 1's posterior, the prior times every filter, sampled by rejection (banel.algorithm runs them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from banel.models.protocol import FitConfig, GenerativeModel
from banel.sequences import Sequences, derive_seed
from banel.tasks.protocol import Feasible

REJECTION_CHUNK = 4096  # candidates drawn at a time by rejection sampling from Algorithm 1's posterior
REJECTION_MAX_DRAWS = 2_000_000  # give up (with a clear error) rather than loop forever on a tiny acceptance


def ratio_scores(
    x: Sequences, numerator: GenerativeModel, negative: GenerativeModel, kappa: float, normalise: bool
) -> torch.Tensor:
    """score(x) = (log p_num(x) - kappa * log p_phi(x)) / l(x) (Eq. 5; l(x) = 1 without normalisation): (n,) float64."""
    score = numerator.log_prob(x) - kappa * negative.log_prob(x) if kappa else numerator.log_prob(x)
    if normalise:
        score = score / numerator.token_counts(x).double().clamp(min=1)
    return score


@dataclass
class Filter:
    """One Bayesian update: accept x iff score(x) >= tau for this negative model (Eq. 5-6)."""

    numerator: GenerativeModel
    negative: GenerativeModel
    kappa: float
    tau: float
    normalise: bool
    feasible: Feasible | None = None
    """If set, also reject what it rules out (known failures are in every rejection region)."""

    def accepts(self, x: Sequences) -> torch.Tensor:
        """Boolean (n,) mask of samples outside the rejection region."""
        ok = ratio_scores(x, self.numerator, self.negative, self.kappa, self.normalise) >= self.tau
        return ok & self.feasible(x) if self.feasible is not None else ok


class FilteredModel:
    """Algorithm 1's posterior p_theta(x) * prod_k 1[accepted by filter k] / Z, sampled by rejection.

    log Z is exact when the support is enumerated (`support`), else a Monte-Carlo estimate of the prior's
    acceptance probability from `z_samples` draws. Training is not supported: Algorithm 1 never distils.
    """

    def __init__(
        self,
        base: GenerativeModel,
        filters: Sequence[Filter],
        support: Sequences | None = None,
        z_samples: int = 20_000,
        seed: int = 0,
        feasible: Feasible | None = None,
    ) -> None:
        self.base, self.filters, self.feasible = base, list(filters), feasible
        self._support, self._z_samples, self._seed = support, z_samples, seed
        self._log_z: float | None = None

    def accepts(self, x: Sequences) -> torch.Tensor:
        """Accepted by every filter: (n,) bool."""
        ok = torch.ones(len(x), dtype=torch.bool)
        for f in self.filters:
            ok &= f.accepts(x)
        return ok

    def log_z(self) -> float:
        """Log of the prior mass that every filter accepts."""
        if self._log_z is None:
            if self._support is not None:
                lp = self.base.log_prob(self._support)
                self._log_z = float(torch.logsumexp(lp[self.accepts(self._support)], 0)) if len(lp) else -math.inf
            else:
                draws = self.base.sample(self._z_samples, derive_seed(self._seed, "log_z"))
                self._log_z = math.log(max(float(self.accepts(draws).double().mean()), 1.0 / self._z_samples))
        return self._log_z

    def sample(self, n: int, seed: int, temperature: float = 1.0) -> Sequences:
        """n draws from the filtered prior by rejection sampling."""
        return rejection_sample(
            self.base,
            self.accepts,
            n,
            derive_seed(seed, "rejection"),
            temperature,
            "the posterior is too narrow to sample by rejection: use banel.algorithm=2 (distillation)",
        )

    def log_prob(self, x: Sequences) -> torch.Tensor:
        """log p_theta(x) - log Z where accepted, -inf elsewhere: (n,) float64."""
        lp = self.base.log_prob(x) - self.log_z()
        return torch.where(self.accepts(x), lp, torch.full_like(lp, -math.inf))

    def token_counts(self, x: Sequences) -> torch.Tensor:
        """The base model's token counts."""
        return self.base.token_counts(x)

    def fit(self, x: Sequences, epochs: int, seed: int, config: FitConfig | None = None) -> list[float]:
        """Not available: Algorithm 1 keeps filters instead of training."""
        raise NotImplementedError("Algorithm 1's posterior is not trained; use banel.algorithm=2 to distil")

    def state_dict(self) -> dict[str, Any]:
        """Each filter's negative model, kappa, tau and normalisation (the numerator is always the base)."""
        return {
            "filters": [
                {"negative": f.negative.state_dict(), "kappa": f.kappa, "tau": f.tau, "normalise": f.normalise}
                for f in self.filters
            ]
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the filters saved by `state_dict` on this model's base."""
        self.filters = []
        for f in state["filters"]:
            negative = self.base.clone()
            negative.load_state_dict(f["negative"])
            self.filters.append(
                Filter(self.base, negative, float(f["kappa"]), float(f["tau"]), bool(f["normalise"]), self.feasible)
            )
        self._log_z = None


def rejection_sample(
    model: GenerativeModel,
    accepts: Callable[[Sequences], torch.Tensor],
    n: int,
    seed: int,
    temperature: float = 1.0,
    remedy: str = "",
) -> Sequences:
    """n draws of the model that `accepts` lets through, drawn in chunks (an error, not a hang, if too rare)."""
    kept: list[Sequences] = []
    have, drawn, chunk = 0, 0, 0
    while have < n:
        if drawn >= REJECTION_MAX_DRAWS:
            raise RuntimeError(f"rejection sampling accepted {have} of {drawn} draws; {remedy}")
        x = model.sample(REJECTION_CHUNK, derive_seed(seed, chunk), temperature)
        acc = x[accepts(x)]
        kept.append(acc)
        have, drawn, chunk = have + len(acc), drawn + len(x), chunk + 1
    return Sequences.cat(kept)[torch.arange(n)]
