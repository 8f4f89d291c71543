"""An exact categorical model over a finite, enumerated support: the test double for every algorithm."""

from __future__ import annotations

from typing import Any

import torch

from banel.models.protocol import FitConfig
from banel.sequences import Sequences


class CategoricalModel:
    """p(x) = softmax(logits)[index of x] over an explicit list of sequences; 0 outside the support.

    `fit` runs full-batch Adam on the logits for `epochs` steps from the current values, so initialisation
    and the number of epochs matter exactly as they do for a neural model; `set_log_probs` sets the table
    directly (exact, tabular distillation in tests).
    """

    def __init__(self, support: Sequences, logits: torch.Tensor | None = None, end_token: bool = False) -> None:
        keys = support.keys()
        if len(set(keys)) != len(keys):
            raise ValueError("CategoricalModel support contains duplicate sequences")
        self.support = support.to("cpu")
        self.end_token = end_token
        self._index = {k: i for i, k in enumerate(keys)}
        k = len(support)
        self.logits = torch.zeros(k, dtype=torch.float64) if logits is None else logits.detach().double().clone()
        if self.logits.shape != (k,):
            raise ValueError(f"logits must have shape ({k},), got {tuple(self.logits.shape)}")

    def probs(self) -> torch.Tensor:
        """The probability table over the support: (K,) float64."""
        return torch.softmax(self.logits.detach(), 0)

    def set_log_probs(self, log_probs: torch.Tensor) -> None:
        """Set the distribution (up to normalisation) from unnormalised log-probabilities (-inf allowed)."""
        self.logits = torch.log_softmax(log_probs.double(), 0)

    def indices(self, x: Sequences) -> torch.Tensor:
        """Support index of each sequence, -1 where it is outside the support."""
        return torch.tensor([self._index.get(k, -1) for k in x.keys()], dtype=torch.long)

    def sample(self, n: int, seed: int, temperature: float = 1.0) -> Sequences:
        """n independent draws from the table (tempered as softmax(logits / T))."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        gen = torch.Generator().manual_seed(seed)
        idx = torch.multinomial(
            torch.softmax(self.logits.detach() / temperature, 0), n, replacement=True, generator=gen
        )
        return self.support[idx]

    def log_prob(self, x: Sequences) -> torch.Tensor:
        """Exact log p(x): (n,) float64, -inf outside the support."""
        idx = self.indices(x)
        lp = torch.log_softmax(self.logits.detach(), 0)
        out = torch.full((len(x),), float("-inf"), dtype=torch.float64)
        inside = idx >= 0
        out[inside] = lp[idx[inside]]
        return out

    def log_prob_grad(self, x: Sequences) -> torch.Tensor:
        """log p(x) with gradients to the logits table (every x must be in the support): (n,) float64."""
        idx = self.indices(x)
        if (idx < 0).any():
            raise ValueError("CategoricalModel.log_prob_grad got a sequence outside its support")
        return torch.log_softmax(self.parameters()[0], 0)[idx]

    def parameters(self) -> list[torch.Tensor]:
        """The logits table, as a leaf tensor that requires grad (optimisers update it in place)."""
        if not self.logits.requires_grad:
            self.logits = self.logits.detach().requires_grad_(True)
        return [self.logits]

    def token_counts(self, x: Sequences) -> torch.Tensor:
        """Content length, plus one when the model is declared to score an end token."""
        return x.lengths.cpu() + int(self.end_token)

    def fit(self, x: Sequences, epochs: int, seed: int, config: FitConfig | None = None) -> list[float]:
        """Full-batch Adam on the logits, `epochs` steps; returns the NLL per sequence after each step."""
        config = config or FitConfig()
        idx = self.indices(x)
        if (idx < 0).any():
            raise ValueError("CategoricalModel.fit got a sequence outside its support")
        if epochs == 0 or len(x) == 0:
            return []
        counts = torch.bincount(idx, minlength=len(self.support)).double()
        logits = self.logits.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([logits], lr=config.lr)
        losses = []
        for _ in range(epochs):
            loss = -(counts * torch.log_softmax(logits, 0)).sum() / counts.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        self.logits = logits.detach()
        return losses

    def clone(self) -> CategoricalModel:
        """An independent copy."""
        return CategoricalModel(self.support, self.logits, self.end_token)

    def sequence_shape(self) -> tuple[int, int]:
        """(longest sequence, largest token id + 1) of the support."""
        tokens = self.support.tokens
        return int(tokens.shape[1]), int(tokens.max()) + 1 if tokens.numel() else 0

    def tempered(self, temperature: float) -> CategoricalModel:
        """A copy at `temperature`: softmax(logits / T)."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        return CategoricalModel(self.support, self.logits.detach() / temperature, self.end_token)

    def reinitialise(self, seed: int) -> None:
        """Uniform over the support (the seed is irrelevant: the uniform table is the only fresh start)."""
        self.logits = torch.zeros_like(self.logits)

    def state_dict(self) -> dict[str, Any]:
        """The logits table."""
        return {"logits": self.logits.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the logits table (in place when it is an optimiser's parameter, so the optimiser stays bound)."""
        logits = state["logits"].detach().double()
        if self.logits.requires_grad and logits.shape == self.logits.shape:
            with torch.no_grad():
                self.logits.copy_(logits)
        else:
            self.logits = logits.clone()
