"""BaNEL: Bayesian Negative Evidence Learning (arXiv 2510.09596), Algorithms 1 and 2.

The Bayesian update itself (the ratio of Eq. 5, its filter, Algorithm 1's filtered posterior) is in
banel.filters. Read `Banel.round` beside the paper: `# Alg. 2 line 5` marks a line of the paper's algorithm,
`# extension (setting)` a departure and the setting that turns it on. Each round draws from the proposal,
keeps the candidates whose likelihood ratio p_theta(x) / p_phi(x)^kappa clears tau, pays m reward evaluations
for them, fits the negative model p_phi on the failures, and keeps the filter (Algorithm 1) or distils it into the
generator (Algorithm 2). `BanelConfig.paper()` is the algorithm as written.

Departures from Algorithms 1-2 (numbered as in docs/algorithms/banel.md, which says why and what was measured):
 2. tau is adaptive: m*f candidates are drawn and the top m kept (Section 4.1's own choice; the boxes say tau).
 3. Ratios are length-normalised, log p / l(x) (`length_normalise`, Appendix B.2).
 4. The numerator may be the previous generator instead of the base (`numerator="generator"`, Appendix B.3).
 5. p_phi may train on every failure so far, or start from scratch or from last round's (`negative_data`,
    `negative_init`); the paper: this round's failures, from the base weights.
 6. Algorithm 1's normaliser Z is a Monte-Carlo estimate where the space cannot be enumerated.
 7. Distillation is maximum likelihood on the m kept samples (Section 4.2), from the base weights each round
    (`reset_generator`, Appendix B.2).
 8. Successes are trained on only with the run's `train_on_successes` (off: the paper's protocol).
 9. Importance resampling instead of the hard cut (`selection="importance"`, the soft alternative of 4.1).
12. The task's free check ranks infeasible candidates out (`free_check`, on by default; the run's
    `feasible_only` also stops paying for them). Off in the paper configuration.
14. A decaying distillation schedule (`generator_decay`, the Section 6 remedy; 1 = off).
15. Free extra draws of the filtered proposal join the distillation set (`distil_samples`; 0 = off).
16. A sample the oracle could not evaluate (NaN reward, not charged) is neither a failure nor trained on.
(Item 13, held-out early stopping of p_phi, was deleted on 2026-12-07: measured, it switched BaNEL off.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import field
from typing import Any, ClassVar, Literal

import torch

from banel.config import Annotated, Ge, Gt, Le, check, model_validator, settings_dataclass
from banel.filters import Filter, FilteredModel, ratio_scores, rejection_sample
from banel.methods.protocol import Context, Oracle, Round
from banel.models.protocol import FitConfig, GenerativeModel, Limits
from banel.sequences import Sequences, derive_seed

log = logging.getLogger(__name__)


PAPER: dict[str, Any] = {"free_check": False}
"""The paper's algorithm as written (`BanelConfig.paper()`, `"preset": "paper"`): every setting whose default
departs from it, at the paper's value. docs/algorithms/banel.md item 12 says why free_check's default moved."""


@settings_dataclass
class BanelConfig:
    """Every knob of BaNEL (paper Sections 4.1-4.2, Algorithms 1-2, Appendix B.2-B.3): the `banel` table."""

    filter_factor: Annotated[int, Ge(1)] = 2
    """f: draw m*f candidates and keep the top m by likelihood ratio (f=1 keeps everything)."""
    kappa: Annotated[float, Ge(0)] = 1.0
    """Sharpness of the negative model in the ratio p_theta(x) / p_phi(x)^kappa (Eq. 5)."""
    length_normalise: bool = True
    """Rank by log-likelihoods divided by length l(x), i.e. p^(1/l) (Appendix B.2)."""
    numerator: Literal["base", "generator"] = "base"
    """Ratio numerator: the base model p_theta, or the previous generator p_theta_(i-1) (ablation B.3)."""
    negative_init: Literal["base", "scratch", "continue"] = "base"
    """How p_phi starts each round: from the base weights, from a fresh initialisation, or from last round's."""
    negative_data: Literal["round", "all"] = "round"
    """Train p_phi on this round's failures (Algorithm 2 as written) or on every failure seen so far."""
    negative_epochs: Annotated[int, Ge(0)] = 50
    """Epochs of maximum-likelihood training of p_phi per round."""
    free_check: bool = True
    """Rank out candidates the task's free check rules out (reward 0 by definition), as feasible_only does,
    without changing what is paid for; no effect on a task without the check. On since issue 22: p_phi
    under-weights rare infeasible failures, so the ratio keeps them (algorithm item 12). false: the paper."""
    generator_epochs: Annotated[int, Ge(0)] = 15
    """Epochs of distillation of the filtered posterior into the generator per round."""
    generator_decay: Annotated[float, Gt(0), Le(1)] = 1.0
    """A decaying update schedule (the paper's Section 6 remedy for not knowing when to stop): round i distils
    for max(1, round(generator_epochs * generator_decay**i)) epochs. 1: every round alike (the paper)."""
    reset_generator: bool = True
    """Reset the generator to the base weights before each distillation (Appendix B.2)."""
    distil_samples: Annotated[int, Ge(0)] = 0
    """Free (never evaluated) draws of the filtered proposal added to the distillation set, so the fit
    approximates the filter instead of memorising m samples. 0: the m evaluated samples (the paper, 4.2)."""
    algorithm: Literal[1, 2] = 2
    """1: sequential filtering, keep every negative model, no distillation. 2: filtering with distillation."""
    selection: Literal["top_m", "importance"] = "top_m"
    """Hard top-m cut by ratio (CEM-style), or importance resampling without replacement by ratio (Sec. 4.1)."""
    negative_fit: FitConfig = field(default_factory=FitConfig)
    """Optimiser settings for p_phi."""
    generator_fit: FitConfig = field(default_factory=FitConfig)
    """Optimiser settings for the generator."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"default": {}, "paper": PAPER}
    """Named sets of settings a `banel` table may start from (`"preset": "paper"`, `--set banel.preset=paper`):
    laid under the settings given with them, so an explicit setting always wins (`config.from_dict`)."""

    @classmethod
    def paper(cls, **overrides: Any) -> BanelConfig:
        """The paper's algorithm as written (PAPER), with `overrides` on top: an explicit setting wins."""
        return cls(**{**PAPER, **overrides})

    @model_validator(mode="after")
    def _algorithm_1(self) -> BanelConfig:
        if self.algorithm == 1:
            why = "with algorithm=1"
            check(self.selection == "top_m", "selection", f"must be 'top_m' {why} (it filters by a hard tau)")
            check(not self.distil_samples, "distil_samples", f"must be 0 {why} (it does not distil)")
            check(self.numerator == "base", "numerator", f"must be 'base' {why} (it has no generator)")
        return self


def select(scores: torch.Tensor, m: int, how: str = "top_m", seed: int = 0) -> tuple[torch.Tensor, float]:
    """Indices of the m kept candidates and the threshold tau (the lowest kept score).

    top_m: the m highest scores (ties broken by position, so the cut is deterministic).
    importance: m draws without replacement with probability proportional to exp(score), i.e. the
    likelihood ratio, by the Gumbel-top-k trick (the soft alternative of Section 4.1).
    """
    if m > len(scores):
        raise ValueError(f"cannot keep m={m} of {len(scores)} candidates")
    if how == "top_m":
        keys = scores
    elif how == "importance":
        gen = torch.Generator().manual_seed(seed)
        u = torch.rand(len(scores), generator=gen, dtype=torch.float64).clamp(1e-300, 1.0)
        keys = scores - torch.log(-torch.log(u))
    else:
        raise ValueError(f"selection must be 'top_m' or 'importance', got {how!r}")
    order = torch.sort(keys, descending=True, stable=True).indices[:m]
    return order, float(scores[order].min())


Distiller = Callable[[GenerativeModel, Sequences, Filter, int], list[float]]
"""distil(generator, kept_samples, filter, seed) -> training losses: fold one filter into the generator."""


def mle_distiller(epochs: int, config: FitConfig) -> Distiller:
    """Distillation by maximum likelihood on the kept samples (the paper's implementation, Section 4.2)."""

    def distil(generator: GenerativeModel, kept: Sequences, _filter: Filter, seed: int) -> list[float]:
        return generator.fit(kept, epochs, seed, config)

    return distil


def decayed_epochs(epochs: int, decay: float, i: int) -> int:
    """Round i's distillation epochs under `generator_decay`: max(1, round(epochs * decay**i))."""
    return max(1, round(epochs * decay**i))


def quantiles(x: torch.Tensor) -> list[float]:
    """Min, 10%, 50%, 90% and max of a score vector (empty list if empty)."""
    x = x[torch.isfinite(x)]
    if not len(x):
        return []
    return [float(v) for v in torch.quantile(x.double(), torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64))]


class Banel:
    """Bayesian Negative Evidence Learning (Algorithms 1 and 2 of the paper): one `round` per round."""

    Options = BanelConfig
    description = "Bayesian Negative Evidence Learning (Algorithms 1 and 2 of the paper)."

    def __init__(
        self,
        prior: GenerativeModel,
        options: BanelConfig | None = None,
        context: Context | None = None,
        distiller: Distiller | None = None,
    ) -> None:
        self.prior, self.config, self.context = prior, options or BanelConfig(), context or Context()
        self.seed, self.feasible = self.context.seed, self.context.feasible
        if self.feasible is None and self.config.free_check:
            self.feasible = self.context.check
        if isinstance(prior, Limits):  # refuse at the start what the model cannot do, not in round 1
            asks = {"banel.algorithm=1": ("rejection_sampling", self.config.algorithm == 1)}
            asks["banel.negative_init=scratch"] = ("reinitialise", self.config.negative_init == "scratch")
            for setting, (what, wanted) in asks.items():
                reason = prior.cannot(what) if wanted else None
                if reason:
                    raise ValueError(f"{setting}: {reason}")
        self.distilled: GenerativeModel = prior.clone()
        """Algorithm 2's generator p_theta_i."""
        self.negative: GenerativeModel | None = None
        self.filters: list[Filter] = []
        self.failures: list[Sequences] = []
        self._custom_distiller = distiller
        self.distil = distiller or mle_distiller(self.config.generator_epochs, self.config.generator_fit)
        self._filtered: FilteredModel | None = None

    @property
    def generator(self) -> GenerativeModel:
        """The current posterior: the distilled generator (Algorithm 2) or the filtered prior (Algorithm 1)."""
        if self.config.algorithm == 2:
            return self.distilled
        if self._filtered is None or self._filtered.filters != self.filters:
            # built once per set of filters: its log Z is an expensive sum or Monte-Carlo estimate
            self._filtered = FilteredModel(
                self.prior, self.filters, self.context.support, seed=derive_seed(self.seed, "z"), feasible=self.feasible
            )
        return self._filtered

    def round(self, oracle: Oracle, i: int) -> Round:
        """Round i: propose, filter, evaluate, fit p_phi, update the posterior (one pass of the loop, line 4)."""
        cfg = self.config
        proposal = self.generator
        if self.negative is None:
            kept, new_filter, stats = self._prior_draw(proposal, i)
        else:
            kept, new_filter, stats = self._filtered_draw(proposal, i)
        rewards = oracle(kept)
        # extension 16: NaN marks a sample the oracle could not evaluate (an error after retries, not charged);
        # `rewards == 0` leaves it out of the failures and `~isnan` out of distillation
        failed = kept[rewards == 0]

        generator_loss = None
        if new_filter is not None and cfg.algorithm == 1:
            self.filters.append(new_filter)  # Alg. 1 line 5: the next proposal is the prior times every filter
        elif new_filter is not None:
            generator_loss = self._distil(proposal, kept, rewards, failed, new_filter, i)  # Alg. 2 line 7

        self.failures.append(failed.to("cpu"))  # on the CPU, as a checkpoint restores them
        stats |= {"negative_loss": self._fit_negative(failed, i), "generator_loss": generator_loss}
        return Round(kept, rewards, stats, {"negative": self.negative} if self.negative is not None else {})

    def _prior_draw(self, proposal: GenerativeModel, i: int) -> tuple[Sequences, None, dict[str, Any]]:
        """Alg. 1/2 line 2: m samples from the prior, unfiltered (no p_phi yet)."""
        candidates = kept = proposal.sample(self.context.m, derive_seed(self.seed, i, "sample"))
        ok = self.feasible(candidates) if self.feasible is not None else None  # extension 12 (free_check)
        if ok is not None and not ok.any() and self.context.feasible is None:
            log.warning("round %d: no candidate passes the free check; keeping them all this round", i)
            ok = None  # free_check only ranks: with nothing feasible, the paper's unfiltered draw
        if ok is not None:
            kept = candidates[ok]
        stats = {"candidates": len(candidates), "kept": len(kept), "tau": None}
        return kept, None, stats | {"log_ratio_kept": [], "log_ratio_rejected": []}

    def _filtered_draw(self, proposal: GenerativeModel, i: int) -> tuple[Sequences, Filter, dict[str, Any]]:
        """Alg. 2 line 5 (Alg. 1 line 5 by rejection): m samples of the proposal that clear tau, the filter."""
        cfg, m, check = self.config, self.context.m, self.feasible
        # extension 2: tau is set so that exactly m of m*f candidates clear it (Section 4.1)
        candidates = proposal.sample(m * cfg.filter_factor, derive_seed(self.seed, i, "sample"))
        numerator = self.prior if cfg.numerator == "base" else self.distilled  # extension 4 (numerator)
        scores = ratio_scores(candidates, numerator, self.negative, cfg.kappa, cfg.length_normalise)
        ok = check(candidates) if check is not None else None  # extension 12 (free_check, feasible_only)
        if ok is not None and not ok.any() and self.context.feasible is None:
            log.warning("round %d: no candidate passes the free check; ranking without it this round", i)
            check, ok = None, None
        if ok is not None:
            scores = scores.masked_fill(~ok, -math.inf)  # a known failure is in every rejection region
        idx, tau = select(scores, m, cfg.selection, derive_seed(self.seed, i, "select"))  # extension 9 (selection)
        if check is not None:
            idx = idx[torch.isfinite(scores[idx])]  # fewer than m feasible candidates: evaluate fewer
            if len(idx) < m:
                log.warning("round %d: only %d of %d candidates are feasible", i, len(idx), len(candidates))
            if not len(idx):
                raise RuntimeError(f"round {i}: no feasible candidate among {len(candidates)}")
            tau = float(scores[idx].min())
        rejected = torch.ones(len(candidates), dtype=torch.bool)
        rejected[idx] = False
        stats = {"candidates": len(candidates), "kept": len(idx), "tau": tau}
        stats |= {"log_ratio_kept": quantiles(scores[idx]), "log_ratio_rejected": quantiles(scores[rejected])}
        return candidates[idx], Filter(numerator, self.negative, cfg.kappa, tau, cfg.length_normalise, check), stats

    def _distil(
        self, proposal: GenerativeModel, kept: Sequences, rewards: torch.Tensor, failed: Sequences, f: Filter, i: int
    ) -> float | None:
        """Alg. 2 line 7: fold the filter into the generator by maximum likelihood on the kept samples (4.2)."""
        cfg = self.config
        if cfg.numerator == "generator":
            f.numerator = self.distilled.clone()  # the filter must not change as the generator trains
        # extension 8 (train_on_successes): the paper trains on failures only
        distil_on = kept[~rewards.isnan()] if self.context.train_on_successes else failed
        if cfg.distil_samples:  # extension 15 (distil_samples): free draws of the filtered proposal
            extra = rejection_sample(
                proposal,
                f.accepts,
                cfg.distil_samples,
                derive_seed(self.seed, i, "extra"),
                remedy="lower banel.distil_samples or banel.filter_factor",
            )
            distil_on = Sequences.cat([distil_on, extra])
        if cfg.reset_generator:  # extension 7 (reset_generator, Appendix B.2): the fit still targets the filter
            self.distilled = self.prior.clone()
        distil = self.distil
        if cfg.generator_decay < 1 and self._custom_distiller is None:  # extension 14 (generator_decay)
            distil = mle_distiller(decayed_epochs(cfg.generator_epochs, cfg.generator_decay, i), cfg.generator_fit)
        losses = distil(self.distilled, distil_on, f, derive_seed(self.seed, i, "distil"))
        return losses[-1] if losses else None

    def _fit_negative(self, failed: Sequences, i: int) -> float | None:
        """Alg. 1/2 lines 3 and 6: fit p_phi by maximum likelihood on the failures; its last training loss."""
        cfg = self.config
        # extension 5 (negative_data="all"): every failure so far; the paper: this round's
        data = failed if cfg.negative_data == "round" else Sequences.cat(self.failures)
        if cfg.negative_init == "continue" and self.negative is not None:  # extension 5 (negative_init)
            # Algorithm 1 keeps the old model inside its filter: train a copy
            negative = self.negative.clone() if cfg.algorithm == 1 else self.negative
        else:
            negative = self.prior.clone()
            if cfg.negative_init == "scratch":  # extension 5 (negative_init)
                negative.reinitialise(derive_seed(self.seed, i, "negative_init"))
        losses = negative.fit(data, cfg.negative_epochs, derive_seed(self.seed, i, "negative"), cfg.negative_fit)
        self.negative = negative
        return losses[-1] if losses else None

    def state_dict(self) -> dict[str, Any]:
        """Everything `round` depends on (tensors and plain values: loadable with weights_only=True)."""
        return {
            "generator": self.distilled.state_dict(),
            "negative": self.negative.state_dict() if self.negative is not None else None,
            # Algorithm 1's filters all have the prior as numerator (enforced by BanelConfig)
            "filters": FilteredModel(self.prior, self.filters).state_dict()["filters"],
            "failures": [{"tokens": f.tokens.cpu(), "lengths": f.lengths.cpu()} for f in self.failures],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state saved by `state_dict` (models are rebuilt as clones of the prior)."""
        self.distilled = self.prior.clone()
        self.distilled.load_state_dict(state["generator"])
        self.negative = None
        if state["negative"] is not None:
            self.negative = self.prior.clone()
            self.negative.load_state_dict(state["negative"])
        filtered = FilteredModel(self.prior, [], feasible=self.feasible)
        filtered.load_state_dict({"filters": state["filters"]})
        self.filters = filtered.filters
        self.failures = [Sequences(f["tokens"], f["lengths"]) for f in state["failures"]]
