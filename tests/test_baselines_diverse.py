import math
from dataclasses import fields

import pytest
import torch

from _tiny import TinyTask
from banel.algorithm import Banel, BanelConfig, select
from banel.baselines.diverse import Diverse, DiverseConfig, elliptical_bonus, greedy_elliptical
from banel.filters import ratio_scores
from banel.methods import Context
from banel.sequences import Sequences, derive_seed


def test_elliptical_bonus_by_hand():
    # A = [[2, 1], [1, 2]], A^-1 = (1/3) [[2, -1], [-1, 2]]: h^T A^-1 h = 2/3, 2/3 and 2
    gram = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    h = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    want = torch.tensor([math.sqrt(2 / 3), math.sqrt(2 / 3), math.sqrt(2)], dtype=torch.float64)
    torch.testing.assert_close(elliptical_bonus(h, gram), want, rtol=0, atol=1e-12)


def test_greedy_selection_folds_each_pick_into_the_covariance_before_the_next():
    # lambda = 1, nothing paid: the bonuses start at |h| = 2, 1.9, 1.5. A batch top-2 would keep rows 0 and 1,
    # one direction twice. Greedy: row 0 (bonus 2); then A = diag(1 + 4, 1), so row 1's bonus is
    # sqrt(1.9^2 / 5) = 0.8497 and row 2's stays 1.5: row 2 comes second.
    h = torch.tensor([[2.0, 0.0], [1.9, 0.0], [0.0, 1.5]], dtype=torch.float64)
    idx, at_pick, after = greedy_elliptical(h, torch.eye(2, dtype=torch.float64), 2)
    assert idx.tolist() == [0, 2]
    torch.testing.assert_close(at_pick, torch.tensor([2.0, 1.5], dtype=torch.float64), rtol=0, atol=1e-12)
    # after both picks A = diag(5, 1 + 2.25): row 1 is orthogonal to row 2, so its bonus is still sqrt(3.61 / 5)
    torch.testing.assert_close(after, torch.tensor([0.0, math.sqrt(3.61 / 5), 0.0], dtype=torch.float64))
    # the Sherman-Morrison updates agree with a fresh inverse of the final A
    final = torch.eye(2, dtype=torch.float64) + h[idx].T @ h[idx]
    assert float(elliptical_bonus(h[1:2], final)[0]) == pytest.approx(math.sqrt(3.61 / 5), abs=1e-12)
    # a third pick takes the last row; what `allowed` rules out is never picked, and fewer than m is fine
    assert greedy_elliptical(h, torch.eye(2, dtype=torch.float64), 3)[0].tolist() == [0, 2, 1]
    allowed = torch.tensor([False, True, True])
    assert greedy_elliptical(h, torch.eye(2, dtype=torch.float64), 3, allowed)[0].tolist() == [1, 2]
    # what was paid before counts: with row 0's direction paid for, the second direction comes first
    paid = torch.eye(2, dtype=torch.float64) + torch.outer(h[0], h[0])
    assert greedy_elliptical(h, paid, 1)[0].tolist() == [2]


def test_a_round_pays_for_the_greedy_picks_and_adds_them_to_the_covariance():
    prior = TinyTask().prior()
    method = Diverse(prior, DiverseConfig(distil=False, lam=0.5, filter_factor=3), Context(m=4, seed=2))
    asked = []

    def oracle(x):
        asked.append(x)
        return torch.zeros(len(x), dtype=torch.float64)

    rnd = method.round(oracle, 0)
    candidates = prior.sample(12, derive_seed(2, 0, "sample"))
    h = prior.represent(candidates)
    idx = greedy_elliptical(h, 0.5 * torch.eye(h.shape[1], dtype=torch.float64), 4)[0]
    assert rnd.samples.to_lists() == candidates[idx].to_lists() == asked[0].to_lists()
    torch.testing.assert_close(method.gram, 0.5 * torch.eye(h.shape[1], dtype=torch.float64) + h[idx].T @ h[idx])
    assert method.generator is prior and rnd.stats["kept"] == 4 and rnd.stats["candidates"] == 12
    # a failed evaluation (NaN) was not paid for: it does not count as explored
    before = method.gram.clone()
    rnd = method.round(lambda x: torch.full((len(x),), math.nan, dtype=torch.float64), 1)
    assert torch.equal(method.gram, before)


def test_with_banels_ranking_diverse_is_banel():
    # Same prior, seeds, m, f and distillation: forced to rank as BaNEL's ratio does, diverse pays for the same
    # samples and distils the same generator, bit for bit. The ranking is the only difference.
    task, context = TinyTask(), Context(m=6, seed=4)
    prior = task.prior()
    banel = Banel(prior, BanelConfig(negative_epochs=3, generator_epochs=2), context)
    banel.round(task.reward, 0)  # fits p_phi; BaNEL's generator is still the prior
    negative = banel.negative

    class RankedLikeBanel(Diverse):
        def rank(self, candidates: Sequences, h: torch.Tensor, ok):
            scores = ratio_scores(candidates, prior, negative, 1.0, True)
            return select(scores, self.context.m)[0], {}

    diverse = RankedLikeBanel(prior, DiverseConfig(generator_epochs=2), context)
    ours = diverse.round(task.reward, 1)
    theirs = banel.round(task.reward, 1)
    assert ours.samples.to_lists() == theirs.samples.to_lists()
    assert torch.equal(ours.rewards, theirs.rewards)
    a, b = diverse.generator.state_dict()["weights"], banel.generator.state_dict()["weights"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], prior.state_dict()["weights"][k]) for k in a)  # it did distil


def test_distillation_settings_default_to_banels():
    banel = BanelConfig()
    for f in fields(DiverseConfig):
        if hasattr(banel, f.name):
            assert getattr(DiverseConfig(), f.name) == getattr(banel, f.name), f.name


def test_a_model_without_hidden_states_is_refused_by_name():
    with pytest.raises(ValueError, match="method 'diverse' needs a model with represent"):
        Diverse(TinyTask("categorical").prior())
