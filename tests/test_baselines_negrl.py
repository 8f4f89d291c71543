import math

import torch

from _tiny import TinyTask, run_tiny
from banel.baselines.negrl import negative_rl_loss


def _run(tmp_path, method, kind="categorical", budget=200, m=20, options=None):
    settings = {"seed": 0, "nre_budget": budget, "m": m, "banel": {"negative_epochs": 5, "generator_epochs": 3}}
    _, summary, history = run_tiny(tmp_path / method, method, TinyTask(kind), **settings, **{method: options or {}})
    return summary, history


def test_negative_rl_loss_is_the_mean_log_likelihood_of_failures():
    log_p = torch.tensor([-1.0, -2.0, -4.0], dtype=torch.float64)
    r = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    # -(1/3) sum (r - 1) log p = (1/3)(-1 - 4) = -5/3: successes carry weight 0.
    assert math.isclose(float(negative_rl_loss(log_p, r)), -5 / 3, rel_tol=1e-12)


def test_negative_rl_detaches_from_the_prior_over_rounds(tmp_path):
    summary, history = _run(tmp_path, "negrl", options={"lr": 0.2, "steps": 2})
    nll = [row["drift_nll"] for row in history]
    kl = [row["kl_to_prior"] for row in history]
    assert len(nll) == 11  # the prior and 10 rounds
    # Held-out prior NLL rises round after round (pushing down the prior's most likely samples).
    assert all(b > a for a, b in zip(nll, nll[1:], strict=False))
    assert nll[-1] > nll[0] + 0.3
    assert kl[0] == 0.0 and kl[-1] > 0.3
    assert summary["drift_nll"] == nll[-1] and summary["prior_nll"] == nll[0]
