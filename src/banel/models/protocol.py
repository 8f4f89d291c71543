"""The contract between BaNEL (or any method) and a likelihood-based generative model."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from banel.config import Annotated, Ge, Gt, settings_dataclass
from banel.sequences import Sequences


@settings_dataclass
class FitConfig:
    """How `fit` trains: AdamW with these settings for a number of epochs over a batch."""

    lr: Annotated[float, Gt(0)] = 1e-3
    """AdamW learning rate."""
    batch_size: Annotated[int, Ge(1)] = 64
    """Sequences per optimiser step."""
    weight_decay: Annotated[float, Ge(0)] = 0.0
    """AdamW weight decay."""
    grad_clip: Annotated[float, Ge(0)] = 1.0
    """Clip the global gradient norm to this value (0 disables)."""


@runtime_checkable
class GenerativeModel(Protocol):
    """A distribution over token sequences with exact likelihoods.

    Wrap your own model by implementing these seven methods; `banel.testing.check_model` verifies a
    wrapper (sampling frequencies agree with `log_prob`, `clone` is independent, state round-trips).
    """

    def sample(self, n: int, seed: int, temperature: float = 1.0) -> Sequences:
        """Draw n sequences; the same seed gives the same draws."""
        ...

    def log_prob(self, x: Sequences) -> torch.Tensor:
        """Exact log-likelihood of each sequence, end token included: (n,) float64."""
        ...

    def token_counts(self, x: Sequences) -> torch.Tensor:
        """Number of scored tokens l(x) per sequence (for length normalisation): (n,) int64."""
        ...

    def fit(self, x: Sequences, epochs: int, seed: int, config: FitConfig | None = None) -> list[float]:
        """Maximum-likelihood training on x for `epochs` passes; returns mean NLL per token per epoch."""
        ...

    def clone(self) -> GenerativeModel:
        """An independent deep copy (same weights, own parameters)."""
        ...

    def reinitialise(self, seed: int) -> None:
        """Reset the parameters to a fresh random initialisation (the 'from scratch' negative model)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the model's weights (tensors and plain values only)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore weights saved by `state_dict`."""
        ...


@runtime_checkable
class TrainableModel(GenerativeModel, Protocol):
    """A GenerativeModel whose log-likelihood can be differentiated (for policy-gradient baselines)."""

    def log_prob_grad(self, x: Sequences) -> torch.Tensor:
        """log p(x) per sequence with autograd attached to `parameters()`: (n,) float tensor."""
        ...

    def parameters(self) -> list[torch.Tensor]:
        """The leaf tensors `log_prob_grad` depends on (what an optimiser updates in place)."""
        ...


@runtime_checkable
class Temperable(Protocol):
    """A model that can build its own exact tempered copy (for the `temperature` baseline)."""

    def tempered(self, temperature: float) -> GenerativeModel:
        """A copy whose sampling and log_prob are this model's with per-token logits divided by temperature."""
        ...


@runtime_checkable
class Shaped(Protocol):
    """A model over sequences of at most max_len tokens from a vocabulary of vocab_size (for one-hot encodings)."""

    def sequence_shape(self) -> tuple[int, int]:
        """(max_len, vocab_size)."""
        ...


@runtime_checkable
class Embeds(Protocol):
    """A model that gives each sample a fixed feature vector (RND's input where a one-hot encoding of the
    tokens would be too wide, e.g. a language model's vocabulary)."""

    def embed(self, x: Sequences) -> torch.Tensor:
        """(n, d) float32 features, the same for the same sample whatever the model has learnt since."""
        ...


@runtime_checkable
class Represents(Protocol):
    """A model that exposes its own representation of a sample: the mean of its final hidden states over the
    sample's tokens (the feature of RepExp's elliptical bonus, Tuyls et al. 2025, for the `diverse` method).

    Unlike `Embeds.embed` (input embeddings, fixed), this is what the network computes, so it changes as the
    model learns: a method that wants fixed features calls it on a model it never trains (the prior).
    """

    def represent(self, x: Sequences) -> torch.Tensor:
        """(n, d) float64: the mean final hidden state over each sequence's tokens (its last context position,
        the begin token or the prompt's last, for an empty sequence)."""
        ...


@runtime_checkable
class Limits(Protocol):
    """A model that cannot do everything a method may ask (a language model cannot be re-initialised)."""

    def cannot(self, what: str) -> str | None:
        """Why it cannot do `what` ('reinitialise', 'rejection_sampling'), or None if it can."""
        ...
