import math

import pytest
import torch

from banel.algorithm import Banel, BanelConfig, select
from banel.config import from_dict
from banel.filters import FilteredModel, ratio_scores
from banel.methods import Context
from banel.models.categorical import CategoricalModel
from banel.models.protocol import FitConfig
from banel.oracle import BudgetedOracle
from banel.sequences import Sequences
from banel.testing import ScriptedOracle, enumerate_sequences, exact_distiller


class FixedScores:
    """A stand-in model whose log-likelihoods are given by hand, with an end token scored."""

    def __init__(self, log_probs):
        self.lp = torch.tensor(log_probs, dtype=torch.float64)

    def log_prob(self, x):
        return self.lp[: len(x)]

    def token_counts(self, x):
        return x.lengths + 1


def test_top_m_with_length_normalisation_on_hand_computed_numbers():
    # Lengths 0, 2, 1 -> l(x) = 1, 3, 2 scored tokens (end token included).
    x = Sequences.from_lists([[], [1, 1], [2]])
    theta = FixedScores([-2.0, -6.0, -3.0])
    phi = FixedScores([-1.0, -4.0, -4.0])
    # raw log ratio (kappa = 1): -1, -2, +1; normalised: -1/1, -2/3, +1/2.
    raw = ratio_scores(x, theta, phi, kappa=1.0, normalise=False)
    norm = ratio_scores(x, theta, phi, kappa=1.0, normalise=True)
    torch.testing.assert_close(raw, torch.tensor([-1.0, -2.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(norm, torch.tensor([-1.0, -2 / 3, 0.5], dtype=torch.float64))
    idx, tau = select(norm, 2)
    assert idx.tolist() == [2, 1] and tau == pytest.approx(-2 / 3)
    idx, tau = select(raw, 2)  # without normalisation the long sequence loses its place
    assert idx.tolist() == [2, 0] and tau == pytest.approx(-1.0)
    # kappa = 2: (log p_theta - 2 log p_phi) / l = 0/1, 2/3, 5/2
    k2 = ratio_scores(x, theta, phi, kappa=2.0, normalise=True)
    torch.testing.assert_close(k2, torch.tensor([0.0, 2 / 3, 2.5], dtype=torch.float64))


def test_select_breaks_ties_by_position_and_importance_is_reproducible():
    scores = torch.tensor([1.0, 3.0, 3.0, 0.0], dtype=torch.float64)
    assert select(scores, 2)[0].tolist() == [1, 2]
    a, _ = select(scores, 2, "importance", seed=4)
    b, _ = select(scores, 2, "importance", seed=4)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 2
    # Importance resampling follows the ratio: the first pick is index 1 or 2 with prob e^3/(2e^3+e+1).
    firsts = [select(scores, 1, "importance", seed=s)[0].item() for s in range(3000)]
    p12 = 2 * math.e**3 / (2 * math.e**3 + math.e + 1)
    assert abs(sum(f in (1, 2) for f in firsts) / 3000 - p12) < 0.03
    with pytest.raises(ValueError):
        select(scores, 5)


def _space(seed=0):
    support = enumerate_sequences(4, 2, end_token=False)  # 16 sequences
    gen = torch.Generator().manual_seed(seed)
    prior = CategoricalModel(support, torch.randn(16, generator=gen, dtype=torch.float64) * 1.5)
    oracle = ScriptedOracle([[3, 3], [0, 3]])
    return support, prior, oracle


def _formula(prior, filters, support, kappa):
    """p_theta(x) * prod_k 1[p_theta(x)/p_phi_k(x)^kappa >= tau_k] / Z, computed from the tables (fixed length 2)."""
    lp = prior.log_prob(support)
    ok = torch.ones(len(support), dtype=torch.bool)
    for f in filters:
        score = (lp - kappa * f.negative.log_prob(support)) / 2.0  # l(x) = 2 for every sequence here
        ok &= score >= f.tau
    post = torch.where(ok, lp.exp(), torch.zeros_like(lp))
    return post / post.sum()


CFG = dict(filter_factor=3, kappa=1.0, negative_epochs=25, negative_fit=FitConfig(lr=0.2))
M = 6


def test_algorithm1_posterior_equals_the_exact_filter_formula():
    support, prior, oracle = _space()
    banel = Banel(prior, BanelConfig(algorithm=1, **CFG), Context(m=M, support=support))
    budget = BudgetedOracle(oracle, 6 * 5)
    for i in range(5):
        banel.round(budget, i)
    assert len(banel.filters) == 4  # round 0 has no filter yet
    posterior = banel.generator
    expected = _formula(prior, banel.filters, support, kappa=1.0)
    got = posterior.log_prob(support).exp()
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    assert 0 < int((expected > 0).sum()) < 16  # the filters did remove something, not everything
    # Rejection sampling from Algorithm 1's posterior follows the same distribution.
    draws = posterior.sample(20_000, seed=1)
    freq = torch.bincount(prior.indices(draws), minlength=16).double() / 20_000
    assert float(0.5 * (freq - expected).abs().sum()) < 0.02
    assert budget.used == 30 and sum(oracle.calls) == 30


def test_algorithm2_with_exact_distillation_gives_the_same_distribution():
    support, prior, oracle = _space()
    cfg = BanelConfig(algorithm=2, reset_generator=False, **CFG)
    banel = Banel(prior, cfg, Context(m=M, support=support), distiller=exact_distiller(support))
    filters = []
    original = Banel.round

    def round_and_record(self, o, i):
        negative_before = self.negative
        result = original(self, o, i)
        if negative_before is not None:
            filters.append(type("F", (), {"negative": negative_before, "tau": result.stats["tau"]})())
        return result

    budget = BudgetedOracle(oracle, 6 * 5)
    for i in range(5):
        round_and_record(banel, budget, i)
    assert len(filters) == 4
    expected = _formula(prior, filters, support, kappa=1.0)
    torch.testing.assert_close(banel.generator.probs(), expected, rtol=1e-9, atol=1e-12)
    # ...and Algorithm 1 with the same filters has exactly this posterior.
    same = FilteredModel(prior, [_as_filter(prior, f) for f in filters], support)
    torch.testing.assert_close(same.log_prob(support).exp(), expected, rtol=1e-9, atol=1e-12)


def _as_filter(prior, f):
    from banel.filters import Filter

    return Filter(prior, f.negative, 1.0, f.tau, True)


def test_successes_are_recorded_but_not_trained_on():
    support, prior, _ = _space()
    everything_wins = ScriptedOracle(support.to_lists())
    banel = Banel(prior, BanelConfig(filter_factor=2, negative_epochs=5), Context(m=4))
    before = prior.log_prob(support)
    for i in range(3):
        record = banel.round(BudgetedOracle(everything_wins, 4), i)
        assert len(record.samples) == 4 and bool((record.rewards == 1).all())
    # No failure was ever seen, so neither model moved from the prior.
    torch.testing.assert_close(banel.generator.log_prob(support), before)
    torch.testing.assert_close(banel.negative.log_prob(support), before)


def test_round_spends_exactly_m_and_respects_the_budget():
    support, prior, oracle = _space()
    banel = Banel(prior, BanelConfig(filter_factor=4, negative_epochs=3, generator_epochs=3), Context(m=5, seed=1))
    budget = BudgetedOracle(oracle, 12)
    banel.round(budget, 0)
    banel.round(budget, 1)
    assert budget.used == 10
    from banel.oracle import BudgetExceeded

    with pytest.raises(BudgetExceeded):
        banel.round(budget, 2)
    assert budget.used == 10


def test_config_validation_names_fields_and_values():
    with pytest.raises(ValueError, match=r"^filter_factor must be >= 1, got 0$"):
        BanelConfig(filter_factor=0)
    with pytest.raises(ValueError, match=r"^kappa must be >= 0"):
        BanelConfig(kappa=-1)
    with pytest.raises(ValueError, match=r"^negative_init must be one of 'base', 'scratch', 'continue'"):
        BanelConfig(negative_init="warm")
    with pytest.raises(ValueError, match=r"^selection must be 'top_m' with algorithm=1"):
        BanelConfig(algorithm=1, selection="importance")
    # read from settings, the error names the setting as the user wrote it
    with pytest.raises(ValueError, match=r"^banel.negative_fit.lr must be > 0, got -1$"):
        from_dict(BanelConfig, {"negative_fit": {"lr": -1}}, "banel.")
    with pytest.raises(ValueError, match=r"^banel.kappa must be >= 0"):
        from_dict(BanelConfig, {"kappa": -2}, "banel.")


def test_distil_samples_adds_free_draws_of_the_filtered_proposal_to_the_distillation_set():
    support, prior, oracle = _space()
    seen = []

    def recording(generator, data, keep, seed):
        seen.append((data, keep))
        return []

    cfg = BanelConfig(reset_generator=False, distil_samples=40, **CFG)
    banel = Banel(prior, cfg, Context(m=M), distiller=recording)
    budget = BudgetedOracle(oracle, 3 * M)
    for i in range(3):
        banel.round(budget, i)
    assert budget.used == 3 * M  # the extra draws are never evaluated
    assert len(seen) == 2  # round 0 has no negative model, hence no filter
    for data, keep in seen:
        failures = len(data) - 40
        assert 0 < failures <= M
        extra = data[torch.arange(failures, len(data))]
        assert bool(keep.accepts(extra).all())  # every extra draw lies inside the filter
    # The filter's region has more than one point, so the draws follow the proposal, not a single sample.
    assert len(set(map(tuple, seen[0][0].to_lists()[-40:]))) > 1
    again = []
    banel = Banel(prior, cfg, Context(m=M), distiller=lambda g, d, k, s: again.append(d) or [])
    for i in range(3):
        banel.round(BudgetedOracle(oracle, 3 * M), i)
    assert [d.to_lists() for d in again] == [d.to_lists() for d, _ in seen]
    with pytest.raises(ValueError, match="distil_samples must be >= 0"):
        BanelConfig(distil_samples=-1)
    with pytest.raises(ValueError, match="distil_samples must be 0 with algorithm=1"):
        BanelConfig(algorithm=1, distil_samples=10)


class Recording:
    """Wraps an oracle and keeps every batch it was asked to evaluate."""

    def __init__(self, oracle):
        self.oracle, self.batches = oracle, []

    def __call__(self, x):
        self.batches.append(x.to_lists())
        return self.oracle(x)


def _not_starting_with_1(x):
    """A feasibility check for the 16-sequence space: sequences starting with token 1 cannot win."""
    return x.tokens[:, 0] != 1


def test_feasible_only_never_keeps_evaluates_or_distils_a_ruled_out_candidate():
    support, prior, oracle = _space()
    seen = []
    cfg = BanelConfig(reset_generator=False, distil_samples=40, **CFG)
    banel = Banel(
        prior,
        cfg,
        Context(m=M, feasible=_not_starting_with_1),
        distiller=lambda g, d, k, s: seen.append(d.to_lists()) or [],
    )
    recording = Recording(oracle)
    budget = BudgetedOracle(recording, 4 * M)
    for i in range(4):
        record = banel.round(budget, i)
        assert record.stats["kept"] == len(record.samples) <= M
    evaluated = [s for batch in recording.batches for s in batch]
    assert evaluated and all(s[0] != 1 for s in evaluated)
    assert len(seen) == 3 and all(s[0] != 1 for d in seen for s in d)
    # the prior does draw sequences starting with 1, so the check had something to remove
    assert bool((prior.sample(200, 0).tokens[:, 0] == 1).any())
    assert budget.used == len(evaluated) <= 4 * M


def test_feasible_only_posterior_is_the_filter_formula_restricted_to_feasible_sequences():
    support, prior, oracle = _space()

    def make():
        return Banel(
            prior, BanelConfig(algorithm=1, **CFG), Context(m=M, support=support, feasible=_not_starting_with_1)
        )

    banel = make()
    budget = BudgetedOracle(oracle, 6 * 4)
    for i in range(4):
        banel.round(budget, i)
    expected = _formula(prior, banel.filters, support, kappa=1.0) * _not_starting_with_1(support)
    expected = expected / expected.sum()
    got = banel.generator.log_prob(support).exp()
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    assert float(got[~_not_starting_with_1(support)].sum()) == 0.0
    # the saved state restores the same posterior (the check is re-attached on load)
    again = make()
    again.load_state_dict(banel.state_dict())
    torch.testing.assert_close(again.generator.log_prob(support).exp(), got)
    # so does Algorithm 1's posterior saved as a generator (generator-best.pt holds its state_dict)
    saved = FilteredModel(prior, [], feasible=_not_starting_with_1)
    saved.load_state_dict(banel.generator.state_dict())
    torch.testing.assert_close(FilteredModel(prior, saved.filters, support).log_prob(support).exp(), got)


def test_filter_factor_draws_m_times_f_and_keeps_the_m_best_ratios_tau_their_least():
    # Alg. 2 line 5 with the adaptive tau of Section 4.1, recomputed from the exact tables of the tiny space
    support, prior, oracle = _space()
    cfg = BanelConfig(**CFG)
    banel = Banel(prior, cfg, Context(m=M, support=support))
    budget = BudgetedOracle(oracle, M * 2)
    banel.round(budget, 0)
    negative = banel.negative
    r = banel.round(budget, 1)
    assert r.stats["candidates"] == M * cfg.filter_factor and len(r.samples) == M
    scores = (prior.log_prob(r.samples) - cfg.kappa * negative.log_prob(r.samples)) / 2.0  # l(x) = 2 here
    assert r.stats["tau"] == pytest.approx(float(scores.min()))
    # every kept candidate clears tau, and tau is the m-th highest score among all m*f candidates
    assert bool((scores >= r.stats["tau"] - 1e-12).all())


def test_the_paper_configuration_keeps_an_explicit_setting():
    assert BanelConfig.paper().free_check is False and BanelConfig().free_check is True
    assert BanelConfig.paper(free_check=True).free_check is True
    assert from_dict(BanelConfig, {"preset": "paper", "free_check": True}, "banel.").free_check is True


def test_deleted_early_stopping_settings_read_from_old_files_only_at_their_inert_values():
    old = {"negative_holdout": 0.0, "negative_check_every": 5, "negative_patience": 0, "negative_evidence": 2.0}
    assert from_dict(BanelConfig, old, "banel.") == BanelConfig()
    with pytest.raises(ValueError, match=r"^banel.negative_holdout was deleted \(2026-12-07"):
        from_dict(BanelConfig, {"negative_holdout": 0.2}, "banel.")
