import pytest
import torch

from _tiny import TinyTask, support
from banel.baselines.common import adam, optimiser_step, reinforce_loss
from banel.baselines.reinforce import ReinforceConfig, advantages
from banel.methods import resolve_method
from banel.models.categorical import CategoricalModel
from banel.sequences import Sequences


def test_reinforce_update_is_exactly_zero_on_an_all_failure_batch():
    policy = TinyTask("transformer").prior().clone()
    before = [p.detach().clone() for p in policy.parameters()]
    x = policy.sample(32, seed=1)
    rewards = torch.zeros(32, dtype=torch.float64)
    assert torch.equal(advantages(rewards), torch.zeros(32, dtype=torch.float64))
    optimiser = adam(policy, lr=1e-2)
    loss = reinforce_loss(policy.log_prob_grad(x), advantages(rewards))
    norm = optimiser_step(policy, optimiser, loss, grad_clip=1.0)
    assert norm == 0.0
    for p, q in zip(policy.parameters(), before, strict=True):
        assert torch.equal(p.grad, torch.zeros_like(p))
        assert torch.equal(p.detach(), q)  # bit for bit


def test_reinforce_gradient_on_a_hand_computed_batch():
    # Uniform over 3 items; batch [item0 (r=1), item1 (r=0)]: A = [0.5, -0.5], and
    # d/dlogits of -(1/2) sum_i A_i log softmax(logits)[x_i]
    #   = -(1/2)(0.5 (e0 - p) - 0.5 (e1 - p)) = [-1/4, 1/4, 0].
    s = Sequences.from_lists([[0], [1], [2]])
    policy = CategoricalModel(s)
    log_p = policy.log_prob_grad(s[[0, 1]])
    loss = reinforce_loss(log_p, advantages(torch.tensor([1.0, 0.0])))
    loss.backward()
    assert torch.allclose(policy.parameters()[0].grad, torch.tensor([-0.25, 0.25, 0.0], dtype=torch.float64))


def test_categorical_log_prob_grad_matches_log_prob():
    s = support()
    model = CategoricalModel(s, torch.linspace(-1, 1, len(s)))
    assert torch.allclose(model.log_prob_grad(s).detach(), model.log_prob(s))
    assert not model.log_prob(s).requires_grad


def test_transformer_log_prob_grad_matches_log_prob():
    model = TinyTask("transformer").prior()
    s = support()
    assert torch.allclose(model.log_prob_grad(s).detach().double(), model.log_prob(s), atol=1e-5)


def test_unknown_method_option_names_the_allowed_ones():
    spec = resolve_method("reinforce")
    assert spec.options is ReinforceConfig
    with pytest.raises(
        ValueError, match=r"unknown setting\(s\) reinforce.learning_rate; allowed in reinforce: grad_clip, lr"
    ):
        spec.parse_options({"learning_rate": 1.0})
    with pytest.raises(ValueError, match="^reinforce.lr must be > 0"):
        spec.parse_options({"lr": 0})
