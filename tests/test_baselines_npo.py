import math

import pytest
import torch

from _tiny import TinyTask, run_tiny
from banel.baselines.common import trainable_copy
from banel.baselines.negrl import negative_rl_loss
from banel.baselines.npo import NPO, NPOConfig, npo_loss
from banel.methods import Context
from banel.models.categorical import CategoricalModel
from banel.sequences import Sequences


def test_npo_loss_is_its_formula_on_an_enumerable_model():
    # Three outcomes; the prior (1/2, 1/4, 1/4), the policy (1/4, 1/2, 1/4); a batch of two failures and a success.
    support = Sequences.from_lists([[0], [1], [2]])
    prior = CategoricalModel(support, torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64).log())
    policy = CategoricalModel(support, torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64).log())
    batch, r, beta = support, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), 0.5
    log_ratio = policy.log_prob(batch) - prior.log_prob(batch)
    # (2 / beta) (1/3) [log(1 + (1/2)^beta) + log(1 + 2^beta) + 0 (the success weighs 0)]
    want = (2 / beta) / 3 * (math.log(1 + 0.5**beta) + math.log(1 + 2**beta))
    assert float(npo_loss(log_ratio, r, beta)) == pytest.approx(want, rel=1e-12)


def test_npo_is_bounded_its_gradient_vanishes_as_the_failure_vanishes():
    beta, r = 0.5, torch.zeros(1, dtype=torch.float64)
    grads, losses = [], []
    for log_ratio in (0.0, -5.0, -20.0, -80.0, -1e4):
        z = torch.tensor([log_ratio], dtype=torch.float64, requires_grad=True)
        loss = npo_loss(z, r, beta)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(float(z.grad[0]))
        # dL/dlog p_theta = 2 sigmoid(beta * log ratio) / m: negrl's unit weight times NPO's
        assert grads[-1] == pytest.approx(2 * float(torch.sigmoid(torch.tensor(beta * log_ratio))), rel=1e-6)
    assert grads[0] == 1.0 and grads[-1] == 0.0 and all(a > b for a, b in zip(grads, grads[1:-1], strict=False))
    assert losses[-1] == 0.0 and all(v >= 0 for v in losses)  # bounded below by 0 as p_theta -> 0
    # negrl's loss, log p_theta, has gradient 1 however far the failure has already been pushed down
    z = torch.tensor([-1e4], dtype=torch.float64, requires_grad=True)
    negative_rl_loss(z, r).backward()
    assert float(z.grad[0]) == 1.0


def test_npo_first_step_is_negrls_at_the_prior():
    # At theta = prior every ratio is 1 and NPO's weight 2 sigmoid(0) = 1: the same gradient as negrl
    prior = TinyTask().prior()
    x = prior.sample(20, 0)
    r = torch.zeros(20, dtype=torch.float64)
    grads = []
    for loss_of in (lambda lp: npo_loss(lp.double() - prior.log_prob(x), r, 0.3), lambda lp: negative_rl_loss(lp, r)):
        policy = trainable_copy(prior, "test")
        loss_of(policy.log_prob_grad(x)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in policy.parameters()]))
    torch.testing.assert_close(grads[0].float(), grads[1].float(), rtol=1e-5, atol=1e-7)


def test_npo_length_normalised_divides_the_log_ratio_by_the_token_count():
    prior = TinyTask().prior()
    calls = []

    def oracle(x):
        calls.append(len(x))
        return torch.zeros(len(x), dtype=torch.float64)

    method = NPO(prior, NPOConfig(length_normalise=True, beta=2.0), Context(m=8, seed=1))
    out = method.round(oracle, 0)
    # policy = prior: every ratio is 1 (up to the policy's float32 log-likelihood), each failure weighs 1
    assert calls == [8] and out.stats["trained_on"] == 8 and out.stats["weight_mean"] == pytest.approx(1.0)
    assert out.stats["loss"] == pytest.approx(2 / 2.0 * math.log(2), rel=1e-6)  # softplus(0) = log 2 per failure


def _kl(tmp_path, method, options):
    settings = {"seed": 0, "nre_budget": 400, "m": 20, method: options}
    _, _, history = run_tiny(tmp_path / method, method, TinyTask(), **settings)
    return [row["kl_to_prior"] for row in history]


def test_npo_detaches_from_the_prior_less_than_negrl(tmp_path):
    # 20 rounds on the tiny transformer at lr 1e-2: negrl's KL to the prior peaked at 0.63 (measured), NPO's at 0.10
    negrl = _kl(tmp_path, "negrl", {"lr": 1e-2})
    npo = _kl(tmp_path, "npo", {"lr": 1e-2, "beta": 1.0})
    assert max(negrl) > 0.3 and max(npo) < max(negrl) / 3
