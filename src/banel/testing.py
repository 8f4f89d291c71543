"""Test doubles and checks shipped with the package: enumerable spaces, exact distillation, a protocol check."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable

import torch

from banel.algorithm import Distiller, Filter
from banel.models.categorical import CategoricalModel
from banel.models.protocol import GenerativeModel
from banel.sequences import Sequences


def enumerate_sequences(vocab_size: int, max_len: int, end_token: bool = True) -> Sequences:
    """Every sequence over range(vocab_size): lengths 0..max_len with an end token, exactly max_len without."""
    lengths = range(max_len + 1) if end_token else [max_len]
    rows = [list(t) for n in lengths for t in itertools.product(range(vocab_size), repeat=n)]
    return Sequences.from_lists(rows)


def exact_distiller(support: Sequences) -> Distiller:
    """Tabular distillation with no error: the generator becomes generator * 1[filter accepts] / Z (Alg. 2 step 7)."""

    def distil(generator: GenerativeModel, _kept: Sequences, filt: Filter, _seed: int) -> list[float]:
        if not isinstance(generator, CategoricalModel):
            raise TypeError("exact_distiller needs a CategoricalModel generator")
        logits = torch.log_softmax(generator.logits, 0)
        accepted = filt.accepts(generator.support)
        generator.set_log_probs(torch.where(accepted, logits, torch.full_like(logits, -math.inf)))
        return []

    return distil


class ScriptedOracle:
    """A reward function that returns 1 exactly for a given set of sequences, and counts every call."""

    def __init__(self, successes: Iterable[list[int]]) -> None:
        self.successes = {tuple(s) for s in successes}
        self.calls: list[int] = []

    def __call__(self, x: Sequences) -> torch.Tensor:
        """1.0 for scripted successes, 0.0 otherwise."""
        self.calls.append(len(x))
        return torch.tensor([float(tuple(s) in self.successes) for s in x.to_lists()], dtype=torch.float64)


def check_model(model: GenerativeModel, support: Sequences, n: int = 20_000, seed: int = 0) -> dict[str, float]:
    """Check a GenerativeModel wrapper on an enumerable support; returns the measured discrepancies.

    `total_mass`: sum of exp(log_prob) over the support (1 for a normalised model);
    `tv_sampling`: total-variation distance between n draws and exp(log_prob);
    `clone_drift`: change of the original's log-probs after training its clone (0 if independent);
    `state_roundtrip`: max |log_prob| difference after a state_dict round trip.
    """
    lp = model.log_prob(support)
    p = lp.exp()
    draws = model.sample(n, seed)
    index = {k: i for i, k in enumerate(support.keys())}
    counts = torch.zeros(len(support), dtype=torch.float64)
    for k in draws.keys():
        counts[index[k]] += 1
    twin = model.clone()
    twin.fit(draws[torch.arange(min(64, n))], 3, seed)
    state = model.state_dict()
    other = model.clone()
    other.reinitialise(seed + 1)
    other.load_state_dict(state)
    return {
        "total_mass": float(p.sum()),
        "tv_sampling": float(0.5 * (counts / n - p).abs().sum()),
        "clone_drift": float((model.log_prob(support) - lp).abs().max()),
        "state_roundtrip": float((other.log_prob(support) - lp).abs().max()),
    }


def constant_reward(value: float) -> Callable[[Sequences], torch.Tensor]:
    """A reward function that returns `value` for every sample (for budget and failure tests)."""

    def reward(x: Sequences) -> torch.Tensor:
        return torch.full((len(x),), float(value), dtype=torch.float64)

    return reward
