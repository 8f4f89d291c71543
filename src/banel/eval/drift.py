"""Detachment from the prior (Fig. 11): held-out prior NLL under a model, and a sample KL(model || prior)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from banel.models.protocol import GenerativeModel
from banel.sequences import Sequences


@dataclass(frozen=True)
class Drift:
    """How far a model has moved from the prior.

    drift_nll: mean NLL per token of held-out prior samples under the model (nats; the prior's own value is
    its entropy rate, and it grows as the model forgets the prior; inf when the model gives some of them zero
    probability). kl_to_prior: E_{x ~ model}[log p_model(x) - log p_prior(x)] in nats per sequence, from
    model samples (0 for the prior itself).
    """

    drift_nll: float
    kl_to_prior: float

    def as_dict(self) -> dict[str, float]:
        """Plain dict for JSON."""
        return asdict(self)


def heldout_nll(model: GenerativeModel, heldout: Sequences) -> float:
    """Mean NLL per scored token of held-out sequences under the model (nats/token)."""
    lp = model.log_prob(heldout)
    tokens = model.token_counts(heldout).double().sum().clamp(min=1)
    return float(-lp.sum() / tokens)


def sample_kl(model: GenerativeModel, prior: GenerativeModel, n: int, seed: int) -> float:
    """Monte-Carlo KL(model || prior): mean of log p_model(x) - log p_prior(x) over n model samples."""
    x = model.sample(n, seed)
    diff = model.log_prob(x) - prior.log_prob(x)
    value = float(diff.mean())
    return value if not math.isnan(value) else math.inf


def drift(model: GenerativeModel, prior: GenerativeModel, heldout: Sequences, n: int, seed: int) -> Drift:
    """Both drift measures; the prior itself gets its entropy rate and exactly 0 KL."""
    if model is prior:
        return Drift(heldout_nll(prior, heldout), 0.0)
    return Drift(heldout_nll(model, heldout), sample_kl(model, prior, n, seed))


def heldout_samples(prior: GenerativeModel, n: int, seed: int) -> Sequences:
    """n prior samples kept aside for drift_nll (never shown to any method)."""
    return prior.sample(n, seed) if n else Sequences.empty()
