import math

import torch

from banel.eval.drift import drift, heldout_nll, sample_kl
from banel.models.categorical import CategoricalModel
from banel.sequences import Sequences


def test_drift_of_the_prior_is_its_entropy_rate_and_zero_kl():
    s = Sequences.from_lists([[0, 0], [0, 1]])
    prior = CategoricalModel(s, torch.tensor([0.0, math.log(3.0)]))  # p = 1/4, 3/4
    held = Sequences.from_lists([[0, 0], [0, 1], [0, 1], [0, 1]])
    # NLL per token: -(ln 1/4 + 3 ln 3/4) / 8 tokens
    expected = -(math.log(0.25) + 3 * math.log(0.75)) / 8
    d = drift(prior, prior, held, 100, seed=0)
    assert math.isclose(d.drift_nll, expected, rel_tol=1e-12) and d.kl_to_prior == 0.0


def test_sample_kl_converges_to_the_exact_kl():
    s = Sequences.from_lists([[0], [1]])
    prior = CategoricalModel(s, torch.tensor([0.0, 0.0]))
    model = CategoricalModel(s, torch.tensor([0.0, math.log(3.0)]))
    exact = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # 0.1308
    assert abs(sample_kl(model, prior, 200_000, seed=1) - exact) < 0.005
    held = prior.sample(1000, 2)
    assert heldout_nll(model, held) > heldout_nll(prior, held)
