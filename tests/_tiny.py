"""A tiny enumerable task for the baseline tests: 3 tokens over 4 symbols (64 sequences), exact rates."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from banel.models.categorical import CategoricalModel
from banel.models.protocol import GenerativeModel
from banel.models.transformer import TransformerConfig, TransformerModel
from banel.sequences import Sequences

VOCAB, LENGTH = 4, 3


def support() -> Sequences:
    """All 64 sequences of length 3 over range(4)."""
    return Sequences.from_lists([list(t) for t in itertools.product(range(VOCAB), repeat=LENGTH)])


class TinyTask:
    """Reward 1 exactly for [3, 3, 3]; the prior: a random tiny transformer, or a skewed categorical table."""

    name = "tiny"

    def __init__(self, kind: str = "transformer", seed: int = 0) -> None:
        self.kind, self.seed = kind, seed
        self._prior: GenerativeModel | None = None

    def prior(self, device: str = "cpu") -> GenerativeModel:
        """The same prior object every call (Run keeps a reference to it)."""
        if self._prior is None:
            if self.kind == "transformer":
                cfg = TransformerConfig(VOCAB, LENGTH, end_token=False, d_model=16, n_layer=1, n_head=2)
                self._prior = TransformerModel(cfg, seed=self.seed)
            else:
                # Skewed towards token 0 so that the success [3, 3, 3] is rare (p = 1/1000 per token^3).
                s = support()
                logits = -torch.log(torch.tensor(10.0)) * (s.tokens == 3).sum(1).double()
                self._prior = CategoricalModel(s, logits)
        return self._prior

    def reward(self, x: Sequences) -> torch.Tensor:
        """1 for [3, 3, 3]."""
        return torch.tensor([float(r == [3, 3, 3]) for r in x.to_lists()], dtype=torch.float64)

    def exact_success_rate(self, model: GenerativeModel) -> float:
        """p([3, 3, 3])."""
        return float(model.log_prob(Sequences.from_lists([[3, 3, 3]])).exp()[0])

    def decode(self, x: Sequences) -> list[str]:
        """Tokens as text."""
        return [" ".join(map(str, r)) for r in x.to_lists()]

    def snapshot(self, models: dict[str, GenerativeModel]) -> dict[str, np.ndarray] | None:
        """Nothing to save."""
        return None

    def describe(self) -> dict[str, Any]:
        """Settings for config.json."""
        return {"name": self.name, "kind": self.kind}
