import math

import torch

from banel.baselines.gfn import log_z, vargrad_loss


def test_vargrad_loss_is_the_variance_of_log_p_on_hand_computed_numbers():
    # log p = -ln2, -2 ln2, -2 ln2: variance = ln2^2 * var{1, 2, 2} = ln2^2 * 2/9 = 0.106767...
    log_p = torch.tensor([math.log(0.5), math.log(0.25), math.log(0.25)], dtype=torch.float64)
    zeros = torch.zeros(3, dtype=torch.float64)
    expected = math.log(2) ** 2 * 2 / 9
    assert abs(expected - 0.1067674) < 1e-6
    for eps in (1e-6, 1e-2, 0.5):
        assert math.isclose(float(vargrad_loss(log_p, zeros, eps)), expected, rel_tol=1e-12)
    assert math.isclose(float(log_p.var(unbiased=False)), expected, rel_tol=1e-12)


def test_vargrad_equals_trajectory_balance_at_the_batch_optimal_log_z():
    log_p = torch.tensor([-1.0, -2.5, -0.3, -4.0], dtype=torch.float64)
    r = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    eps = 1e-3
    lz = log_z(log_p, r, eps)
    tb = float(((log_p - torch.log(r + eps) + lz) ** 2).mean())  # Eq. (2) with log Z = lz
    assert math.isclose(float(vargrad_loss(log_p, r, eps)), tb, rel_tol=1e-12)
    # Any other log Z gives a larger TB loss.
    assert float(((log_p - torch.log(r + eps) + lz + 0.1) ** 2).mean()) > tb


def test_vargrad_gradient_pulls_log_p_to_the_batch_mean():
    log_p = torch.tensor([-1.0, -3.0], dtype=torch.float64, requires_grad=True)
    vargrad_loss(log_p, torch.zeros(2, dtype=torch.float64), 1e-6).backward()
    # d/dlp_i of (1/2) sum (lp_i - mean)^2 = lp_i - mean = [1, -1]
    assert torch.allclose(log_p.grad, torch.tensor([1.0, -1.0], dtype=torch.float64))
