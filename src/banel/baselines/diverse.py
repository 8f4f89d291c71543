"""Diverse selection: BaNEL with its ranking replaced by novelty in the prior's representation (issue 29).

A control for "is BaNEL's filter more than novelty?", after RepExp's inference-time selection (Tuyls, Foster,
Krishnamurthy, Ash, arXiv 2510.11686). Each round: draw m*f candidates from the generator, represent each by
the prior's mean final hidden state h(x), and keep m of them greedily by the elliptical bonus

    b(x) = sqrt(h(x)^T A^-1 h(x)),    A = lam I + sum over paid samples y of h(y) h(y)^T,

folding each pick into A before the next (so a round does not spend m evaluations on one new direction);
pay for the m, add them to A for good, and (with `distil`) fit the generator to the failures among them
exactly as BaNEL's Algorithm 2 does. Same m, f, seeds and distillation settings as BaNEL: the ranking is the
only difference, bar one (item 3 of docs/algorithms/baselines.md: the bonus needs no data, so round 0
already selects and distils, where BaNEL's has no negative model yet and pays for m unfiltered draws).
"""

from __future__ import annotations

import logging
import math
from dataclasses import field
from typing import Any

import torch

from banel.algorithm import decayed_epochs, quantiles
from banel.config import Annotated, Ge, Gt, Le, settings_dataclass
from banel.methods.protocol import Context, Oracle, Round
from banel.models.protocol import FitConfig, GenerativeModel, Represents
from banel.sequences import Sequences, derive_seed

log = logging.getLogger(__name__)


@settings_dataclass
class DiverseConfig:
    """Settings of `diverse` (the `diverse` table; the candidate count and distillation defaults are BaNEL's)."""

    filter_factor: Annotated[int, Ge(1)] = 2
    """f: draw m*f candidates and keep m by elliptical bonus (BaNEL's filter_factor)."""
    lam: Annotated[float, Gt(0)] = 1.0
    """lambda of A = lambda I + sum h h^T: the bonus of a sample before anything is paid is |h(x)| / sqrt(lambda);
    the smaller, the sooner a direction paid for once counts as explored."""
    distil: bool = True
    """Fit the generator to the failures among the kept samples each round, as BaNEL's Algorithm 2 does; false:
    the generator stays the prior and the bonus only chooses what to pay for (RepExp at inference time)."""
    free_check: bool = True
    """Rank out candidates the task's free check rules out, as BaNEL's free_check does (feasible_only always)."""
    generator_epochs: Annotated[int, Ge(0)] = 15
    """Epochs of distillation per round (BaNEL's generator_epochs)."""
    generator_decay: Annotated[float, Gt(0), Le(1)] = 1.0
    """Round i distils for max(1, round(generator_epochs * generator_decay**i)) epochs (BaNEL's)."""
    reset_generator: bool = True
    """Reset the generator to the prior before each distillation (BaNEL's, Appendix B.2)."""
    generator_fit: FitConfig = field(default_factory=FitConfig)
    """Optimiser settings of the distillation (BaNEL's generator_fit)."""


def elliptical_bonus(h: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """b(x) = sqrt(h(x)^T A^-1 h(x)) for each row of h (n, d), A = gram (d, d): (n,) float64."""
    a_inv = torch.cholesky_inverse(torch.linalg.cholesky(gram.double()))
    h = h.double()
    return torch.einsum("nd,de,ne->n", h, a_inv, h).clamp(min=0).sqrt()


def greedy_elliptical(
    h: torch.Tensor, gram: torch.Tensor, m: int, allowed: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick up to m rows of h (n, d), one at a time, by the largest bonus against A = gram plus the rows picked
    before it; rows outside `allowed` are never picked.

    Returns the picked indices in pick order, each pick's bonus at its turn, and every row's bonus against A
    with all picks folded in (NaN outside `allowed`, 0 for a picked row). Ties go to the lower index. Each pick
    updates A^-1 and the squared bonuses by Sherman-Morrison: O(n d) a pick instead of a fresh inverse.
    """
    h = h.double()
    a_inv = torch.cholesky_inverse(torch.linalg.cholesky(gram.double()))
    b2 = torch.einsum("nd,de,ne->n", h, a_inv, h)
    if allowed is not None:
        b2 = b2.masked_fill(~allowed, -math.inf)
    picked: list[int] = []
    at_pick: list[float] = []
    for _ in range(min(m, len(h))):
        j = int(torch.argmax(b2))
        if b2[j] == -math.inf:
            break  # fewer than m allowed rows
        picked.append(j)
        at_pick.append(math.sqrt(max(float(b2[j]), 0.0)))
        u = a_inv @ h[j]
        denom = 1.0 + float(h[j] @ u)
        a_inv = a_inv - torch.outer(u, u) / denom
        b2 = b2 - (h @ u) ** 2 / denom
        b2[j] = -math.inf
    after = b2.clamp(min=0).sqrt()
    after[torch.tensor(picked, dtype=torch.long)] = 0.0
    if allowed is not None:
        after = after.masked_fill(~allowed, math.nan)
    return torch.tensor(picked, dtype=torch.long), torch.tensor(at_pick, dtype=torch.float64), after


class Diverse:
    """Diverse selection: keep m of m*f candidates by an elliptical bonus on the prior's hidden states (RepExp),
    pay for them, distil the failures as BaNEL does."""

    Options = DiverseConfig
    description = "Keep m of m*f candidates by RepExp's elliptical bonus on the prior's hidden states; distil as BaNEL."

    def __init__(self, prior: GenerativeModel, options: DiverseConfig | None = None, context: Context | None = None):
        self.prior, self.options, self.context = prior, options or DiverseConfig(), context or Context()
        if not isinstance(prior, Represents):
            raise ValueError(
                f"method 'diverse' needs a model with represent(x), its mean final hidden state "
                f"(banel.models.protocol.Represents); {type(prior).__name__} has none"
            )
        self.feasible = self.context.feasible
        if self.feasible is None and self.options.free_check:
            self.feasible = self.context.check
        self.distilled: GenerativeModel = prior.clone()
        """The generator (the prior while `distil` is off)."""
        self.gram: torch.Tensor | None = None
        """A = lam I + sum h h^T over every sample paid for (d, d) float64; None until round 0 reads d."""

    @property
    def generator(self) -> GenerativeModel:
        """The distilled generator, or the prior without `distil`."""
        return self.distilled if self.options.distil else self.prior

    def rank(self, candidates: Sequences, h: torch.Tensor, ok: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """The kept candidates' indices (at most m, none that `ok` rules out) and the bonus's diagnostics."""
        assert self.gram is not None
        idx, at_pick, after = greedy_elliptical(h, self.gram, self.context.m, ok)
        rejected = torch.ones(len(candidates), dtype=torch.bool)
        rejected[idx] = False
        return idx, {"bonus_kept": quantiles(at_pick), "bonus_rejected": quantiles(after[rejected])}

    def round(self, oracle: Oracle, i: int) -> Round:
        """Round i: propose m*f, keep m by elliptical bonus, pay, add them to A, distil the failures."""
        o, m, seed = self.options, self.context.m, self.context.seed
        candidates = self.generator.sample(m * o.filter_factor, derive_seed(seed, i, "sample"))
        # the frozen prior's features: a paid sample's h never changes, so A accumulates across rounds, and
        # the ranking depends on what was paid, never on what distillation has learnt
        h = self.prior.represent(candidates)
        if self.gram is None:
            self.gram = o.lam * torch.eye(h.shape[1], dtype=torch.float64)
        ok = self.feasible(candidates) if self.feasible is not None else None
        if ok is not None and not ok.any() and self.context.feasible is None:
            log.warning("round %d: no candidate passes the free check; ranking without it this round", i)
            ok = None  # as BaNEL: free_check only ranks
        idx, stats = self.rank(candidates, h, ok)
        if not len(idx):
            raise RuntimeError(f"round {i}: no feasible candidate among {len(candidates)}")
        if len(idx) < m:
            log.warning("round %d: only %d of %d candidates are feasible", i, len(idx), len(candidates))
        kept = candidates[idx]
        rewards = oracle(kept)
        evaluated = ~rewards.isnan()  # a failed evaluation was not paid for: it does not count as explored
        paid = h[idx][evaluated]
        self.gram = self.gram + paid.T @ paid

        generator_loss = None
        if o.distil:
            distil_on = kept[evaluated] if self.context.train_on_successes else kept[rewards == 0]
            if o.reset_generator:
                self.distilled = self.prior.clone()
            epochs = o.generator_epochs
            if o.generator_decay < 1:
                epochs = decayed_epochs(o.generator_epochs, o.generator_decay, i)
            # BaNEL's mle_distiller: maximum likelihood on the kept failures, same seed stream
            losses = self.distilled.fit(distil_on, epochs, derive_seed(seed, i, "distil"), o.generator_fit)
            generator_loss = losses[-1] if losses else None
        return Round(
            kept, rewards, {"candidates": len(candidates), "kept": len(kept), **stats, "generator_loss": generator_loss}
        )

    def state_dict(self) -> dict[str, Any]:
        """The generator and A."""
        return {"generator": self.distilled.state_dict(), "gram": self.gram}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        if "gram" not in state:
            raise ValueError("checkpoint of Diverse lacks 'gram': written by another version")
        self.distilled = self.prior.clone()
        self.distilled.load_state_dict(state["generator"])
        self.gram = state["gram"]
