"""BaNEL: Bayesian Negative Evidence Learning (arXiv 2510.09596), Algorithms 1 and 2.

Each round: draw m*f candidates from the proposal, score them by the length-normalised likelihood ratio
log p_theta(x)/l - kappa * log p_phi(x)/l (Eq. 5, Appendix B.2), keep the top m (the adaptive threshold
tau), spend m reward evaluations on them, fit the negative model p_phi on the failures by maximum
likelihood, and either keep the filter (Algorithm 1) or distil the filtered proposal into the generator
(Algorithm 2). Samples with reward 1 are recorded but, by default, never trained on. With the run's
`feasible_only`, candidates that the task's free check rules out (reward 0 by definition) are dropped before
the cut. The run calls `Banel.round` once per round; everything else here is the paper's algorithm.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from banel.config import Annotated, Ge, Gt, Le, Lt, check, model_validator, settings_dataclass
from banel.methods.protocol import Context, Oracle, Round
from banel.models.protocol import FitConfig, GenerativeModel, Limits
from banel.sequences import Sequences, derive_seed
from banel.tasks.protocol import Feasible

log = logging.getLogger(__name__)

REJECTION_CHUNK = 4096  # candidates drawn at a time by rejection sampling from Algorithm 1's posterior
REJECTION_MAX_DRAWS = 2_000_000  # give up (with a clear error) rather than loop forever on a tiny acceptance


PAPER: dict[str, Any] = {"negative_holdout": 0.0, "free_check": False}
"""The `paper` preset: Algorithms 1-2 as written and as banel ran them before issue 22 (every setting the
robust defaults change, at its old value). docs/algorithms/banel.md says why each default moved."""


@settings_dataclass
class BanelConfig:
    """Every knob of BaNEL (paper Sections 4.1-4.2, Algorithms 1-2, Appendix B.2-B.3): the `banel` table."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"default": {}, "paper": PAPER}
    """Named sets of settings a `banel` table may start from (`"preset": "paper"`, `--set banel.preset=paper`):
    laid under the settings given with them, so an explicit setting always wins (`config.from_dict`)."""

    @classmethod
    def paper(cls, **overrides: Any) -> BanelConfig:
        """The paper's algorithm as written (PAPER), with `overrides` on top: an explicit setting wins."""
        return cls(**{**PAPER, **overrides})

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
    """Epochs of maximum-likelihood training of p_phi per round (at most, with negative_holdout)."""
    negative_holdout: Annotated[float, Ge(0), Lt(1)] = 0.0
    """Share of the round's failures held out to early-stop p_phi: it trains on the rest in blocks of
    negative_check_every epochs and keeps the weights with the lowest held-out NLL, its starting weights
    included. When those win (the failures say nothing the base does not), p_phi is dropped and the next
    round draws from the generator unfiltered: no evidence, no update. 0: every epoch on every failure."""
    negative_check_every: Annotated[int, Ge(1)] = 5
    """Epochs between held-out checks of p_phi (negative_holdout > 0)."""
    negative_patience: Annotated[int, Ge(0)] = 0
    """Held-out checks in a row without a lower NLL after which p_phi's training stops early (negative_holdout
    > 0): saves the rest of its epochs. 0: train every epoch and keep the best check."""
    negative_evidence: Annotated[float, Ge(0)] = 2.0
    """Standard errors by which p_phi must beat its starting weights on the held-out failures to be kept: the
    mean per-sequence drop in NLL over the standard error of those drops (a paired test; a few dozen held-out
    sequences give differences of 0.01 nats/token by chance alone). 0: any drop counts."""
    free_check: bool = True
    """Rank out candidates the task's free check rules out (reward 0 by definition) whenever the task has one,
    as the run's feasible_only does for BaNEL; the run's accounting is unchanged (what BaNEL keeps is paid
    for). No effect on a task without the check. On by default since issue 22: an infeasible string is rare
    among failures, so p_phi under-weights it and the ratio keeps it (benchmarks/zoo/README.md); false: the
    paper's algorithm, which sees the check only under feasible_only."""
    generator_epochs: Annotated[int, Ge(0)] = 15
    """Epochs of distillation of the filtered posterior into the generator per round."""
    generator_decay: Annotated[float, Gt(0), Le(1)] = 1.0
    """A decaying update schedule (the paper's Section 6 remedy for not knowing when to stop): round i
    distils for max(1, round(generator_epochs * generator_decay**i)) epochs, so later rounds, fitted on ever
    fewer fresh failures' worth of evidence, move the generator less. 1: every round alike (the paper)."""
    reset_generator: bool = True
    """Reset the generator to the base weights before each distillation (Appendix B.2)."""
    distil_samples: Annotated[int, Ge(0)] = 0
    """Extra draws from the filtered proposal added to the distillation set: free (never evaluated), they
    make the fit approximate the filtered distribution instead of memorising m samples. 0: the m evaluated
    samples only, as in the paper (Section 4.2)."""
    algorithm: Literal[1, 2] = 2
    """1: sequential filtering, keep every negative model, no distillation. 2: filtering with distillation."""
    selection: Literal["top_m", "importance"] = "top_m"
    """Hard top-m cut by ratio (CEM-style), or importance resampling without replacement by ratio (Sec. 4.1)."""
    negative_fit: FitConfig = field(default_factory=FitConfig)
    """Optimiser settings for p_phi."""
    generator_fit: FitConfig = field(default_factory=FitConfig)
    """Optimiser settings for the generator."""

    @model_validator(mode="after")
    def _algorithm_1(self) -> BanelConfig:
        if self.algorithm == 1:
            why = "with algorithm=1"
            check(self.selection == "top_m", "selection", f"must be 'top_m' {why} (it filters by a hard tau)")
            check(not self.distil_samples, "distil_samples", f"must be 0 {why} (it does not distil)")
            check(self.numerator == "base", "numerator", f"must be 'base' {why} (it has no generator)")
        return self


def ratio_scores(
    x: Sequences, numerator: GenerativeModel, negative: GenerativeModel, kappa: float, normalise: bool
) -> torch.Tensor:
    """score(x) = (log p_num(x) - kappa * log p_phi(x)) / l(x) (Eq. 5; l(x) = 1 without normalisation): (n,) float64."""
    score = numerator.log_prob(x) - kappa * negative.log_prob(x) if kappa else numerator.log_prob(x)
    if normalise:
        score = score / numerator.token_counts(x).double().clamp(min=1)
    return score


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


Distiller = Callable[[GenerativeModel, Sequences, Filter, int], list[float]]
"""distil(generator, kept_samples, filter, seed) -> training losses: fold one filter into the generator."""


def mle_distiller(epochs: int, config: FitConfig) -> Distiller:
    """Distillation by maximum likelihood on the kept samples (the paper's implementation, Section 4.2)."""

    def distil(generator: GenerativeModel, kept: Sequences, _filter: Filter, seed: int) -> list[float]:
        return generator.fit(kept, epochs, seed, config)

    return distil


def _quantiles(x: torch.Tensor) -> list[float]:
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
        """Round i: propose, filter, evaluate, fit p_phi, update the posterior."""
        cfg, m = self.config, self.context.m
        proposal = self.generator
        new_filter, tau = None, None
        ratio_kept: list[float] = []
        ratio_rejected: list[float] = []
        check = self.feasible  # the free check this round (feasible_only's, or the task's under free_check)
        if self.negative is None:
            candidates = kept = proposal.sample(m, derive_seed(self.seed, i, "sample"))
            ok = check(candidates) if check is not None else None
            if ok is not None and not ok.any() and self.context.feasible is None:
                log.warning("round %d: no candidate passes the free check; keeping them all this round", i)
                ok = None  # free_check only ranks: with nothing feasible, the paper's unfiltered draw
            if ok is not None:
                kept = candidates[ok]
        else:
            candidates = proposal.sample(m * cfg.filter_factor, derive_seed(self.seed, i, "sample"))
            numerator = self.prior if cfg.numerator == "base" else self.distilled
            scores = ratio_scores(candidates, numerator, self.negative, cfg.kappa, cfg.length_normalise)
            ok = check(candidates) if check is not None else None
            if ok is not None and not ok.any() and self.context.feasible is None:
                log.warning("round %d: no candidate passes the free check; ranking without it this round", i)
                check, ok = None, None
            if ok is not None:
                scores = scores.masked_fill(~ok, -math.inf)
            idx, tau = select(scores, m, cfg.selection, derive_seed(self.seed, i, "select"))
            if check is not None:
                idx = idx[torch.isfinite(scores[idx])]  # fewer than m feasible candidates: evaluate fewer
                if len(idx) < m:
                    log.warning("round %d: only %d of %d candidates are feasible", i, len(idx), len(candidates))
                if not len(idx):
                    raise RuntimeError(f"round {i}: no feasible candidate among {len(candidates)}")
                tau = float(scores[idx].min())
            kept = candidates[idx]
            rejected = torch.ones(len(candidates), dtype=torch.bool)
            rejected[idx] = False
            ratio_kept, ratio_rejected = _quantiles(scores[idx]), _quantiles(scores[rejected])
            new_filter = Filter(numerator, self.negative, cfg.kappa, tau, cfg.length_normalise, check)

        # NaN marks a sample the oracle could not evaluate (error after retries, not charged): it is
        # neither a failure nor a success, so it is dropped from p_phi's data and from distillation
        rewards = oracle(kept)
        failed = kept[rewards == 0]

        generator_loss = None
        if new_filter is not None:
            if cfg.algorithm == 1:
                self.filters.append(new_filter)
            else:
                if cfg.numerator == "generator":
                    new_filter.numerator = self.distilled.clone()  # the filter must not change as we train
                distil_on = kept[~rewards.isnan()] if self.context.train_on_successes else failed
                if cfg.distil_samples:
                    extra = rejection_sample(
                        proposal,
                        new_filter.accepts,
                        cfg.distil_samples,
                        derive_seed(self.seed, i, "extra"),
                        remedy="lower banel.distil_samples or banel.filter_factor",
                    )
                    distil_on = Sequences.cat([distil_on, extra])
                if cfg.reset_generator:
                    self.distilled = self.prior.clone()
                distil = self.distil
                if cfg.generator_decay < 1 and self._custom_distiller is None:  # item 14 of docs/algorithms/banel.md
                    epochs = max(1, round(cfg.generator_epochs * cfg.generator_decay**i))
                    distil = mle_distiller(epochs, cfg.generator_fit)
                losses = distil(self.distilled, distil_on, new_filter, derive_seed(self.seed, i, "distil"))
                generator_loss = losses[-1] if losses else None

        self.failures.append(failed.to("cpu"))  # on the CPU, as a checkpoint restores them
        negative_stats = self._fit_negative(failed, i)
        stats = {
            "candidates": len(candidates),
            "kept": len(kept),
            "tau": tau,
            "log_ratio_kept": ratio_kept,
            "log_ratio_rejected": ratio_rejected,
            **negative_stats,
            "generator_loss": generator_loss,
        }
        return Round(kept, rewards, stats, {"negative": self.negative} if self.negative is not None else {})

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

    def _fit_negative(self, failed: Sequences, i: int) -> dict[str, Any]:
        """Fit p_phi by maximum likelihood on the failures (this round's or all so far); its diagnostics."""
        cfg = self.config
        data = failed if cfg.negative_data == "round" else Sequences.cat(self.failures)
        if cfg.negative_init == "continue" and self.negative is not None:
            # Algorithm 1 keeps the old model inside its filter: train a copy.
            negative = self.negative.clone() if cfg.algorithm == 1 else self.negative
        else:
            negative = self.prior.clone()
            if cfg.negative_init == "scratch":
                negative.reinitialise(derive_seed(self.seed, i, "negative_init"))
        seed = derive_seed(self.seed, i, "negative")
        held = max(1, round(cfg.negative_holdout * len(data))) if cfg.negative_holdout and len(data) > 1 else 0
        if not held:
            losses = negative.fit(data, cfg.negative_epochs, seed, cfg.negative_fit)
            self.negative = negative
            return {"negative_loss": losses[-1] if losses else None}
        # Early stopping on held-out failures: p_phi moves from its start only as far as unseen failures
        # confirm. Overfitted, it gives every region absent from the m failures a large ratio (Issue 22).
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(derive_seed(seed, "holdout")))
        train, heldout = data[order[held:]], data[order[:held]]

        tokens = negative.token_counts(heldout).double().clamp(min=1)
        start_lp = negative.log_prob(heldout)
        start_nll = best_nll = float(-start_lp.sum() / tokens.sum())
        best_state, best_epochs, epochs, losses, waited, lowest = None, 0, 0, [], 0, start_nll
        while epochs < cfg.negative_epochs and not (cfg.negative_patience and waited >= cfg.negative_patience):
            block = min(cfg.negative_check_every, cfg.negative_epochs - epochs)
            losses = negative.fit(train, block, derive_seed(seed, epochs), cfg.negative_fit)
            epochs += block
            lp = negative.log_prob(heldout)
            nll = float(-lp.sum() / tokens.sum())
            gain = (lp - start_lp) / tokens  # per held-out sequence, nats/token: > 0 where p_phi explains it better
            se = float(gain.std() / math.sqrt(len(gain))) if len(gain) > 1 else math.inf
            waited, lowest = (0, nll) if nll < lowest else (waited + 1, lowest)
            if nll < best_nll and float(gain.mean()) > cfg.negative_evidence * se:
                best_nll, best_epochs, best_state = nll, epochs, copy.deepcopy(negative.state_dict())
        if best_state is not None:
            negative.load_state_dict(best_state)
        # no epoch beat the starting weights: from the base, that is the prior itself, and a filter by
        # p_theta / p_theta^kappa carries no evidence, so the next round draws from the generator unfiltered
        self.negative = negative if best_state is not None or cfg.negative_init == "continue" else None
        return {
            "negative_loss": losses[-1] if losses else None,
            "negative_heldout_nll": [start_nll, best_nll],
            "negative_epochs_kept": best_epochs,
            "negative_epochs_run": epochs,
        }
