"""Success-rate estimates: disjoint random streams, the selection-free best, the shared prior estimate."""

import pytest

from _tiny import run_tiny
from banel.config import EvalConfig
from banel.eval.success import (
    STREAM_EVAL,
    STREAM_PRIOR,
    STREAM_REESTIMATE,
    evaluation_seed,
    monte_carlo,
    prior_estimate,
)
from banel.sequences import derive_seed
from banel.testing import TinyOptions, TinyTask


def test_the_three_estimates_draw_from_disjoint_seed_streams():
    assert len({STREAM_EVAL, STREAM_REESTIMATE, STREAM_PRIOR}) == 3
    for seed in range(5):
        selection = {evaluation_seed(seed, i) for i in ["base", *range(100)]}
        assert derive_seed(seed, STREAM_REESTIMATE) not in selection
        assert not {derive_seed(0, STREAM_PRIOR, c) for c in range(50)} & selection


def test_a_monte_carlo_run_reports_its_best_round_re_estimated_on_fresh_samples(tmp_path):
    task = TinyTask(TinyOptions(exact=False))  # the transformer prior: rate ~1.5e-2, estimates are not 0
    settings = {"m": 10, "nre_budget": 60, "eval": {"samples": 2000, "reestimate_samples": 3000, "drift_samples": 0}}
    run, summary, history = run_tiny(tmp_path / "base", "base", task, **settings)
    rates = {r["round"]: r["success_rate"] for r in history if r["round"] >= 1}
    best = max(rates, key=lambda i: (rates[i]["rate"], -i))
    assert summary["best_round"] == best and summary["selected_best_rate"] == rates[best]["rate"]
    # the reported best is the saved generator (here the prior) on 3,000 samples of the re-estimation stream
    again = monte_carlo(task, task.prior(), 3000, derive_seed(0, STREAM_REESTIMATE), 0.95)
    assert summary["best_success_rate"] == again.rate and summary["best_success_samples"] == 3000
    assert summary["best_success_successes"] == again.successes
    assert summary["best_success_interval"] == [again.low, again.high] and not summary["success_rate_exact"]
    assert 0 < again.rate and again.successes != round(summary["selected_best_rate"] * 2000)


def test_the_prior_estimate_draws_until_its_successes_or_its_cap():
    task = TinyTask(TinyOptions(kind="categorical", exact=False))
    prior = task.prior()
    est = prior_estimate(task, prior, successes=5, max_samples=1_000_000)
    p = TinyTask(TinyOptions(kind="categorical")).exact_success_rate(prior)  # 3.36e-5
    assert est.successes >= 5 and est.n % 20_000 == 0 and est.low < p < est.high and not est.exact
    capped = prior_estimate(task, prior, successes=10_000, max_samples=30_000)
    assert capped.n == 30_000 and capped.successes < 10_000
    exact = prior_estimate(TinyTask(TinyOptions(kind="categorical")), prior)
    assert exact.exact and exact.rate == pytest.approx(p) and exact.low == exact.high == exact.rate
    with pytest.raises(ValueError, match="successes >= 1"):
        prior_estimate(task, prior, successes=0)
    assert EvalConfig().reestimate_samples == 0  # 0: as many as eval.samples


def test_a_target_subset_is_the_scaled_sum_over_its_rows_and_only_cheapens_curve_points(cache) -> None:
    import math

    import numpy as np

    from banel.config import EvalConfig
    from banel.eval.success import success_rate
    from banel.tasks import make_task
    from banel.tasks.mnist import log_success_rate

    task = make_task("digits", {"targets": 300}, cache)
    prior = task.prior("cpu")
    full = task.exact_success_rate(prior)
    assert task.subset_success_rate(prior, 300, seed=1) == full  # the whole set: the exact rate
    rows = np.sort(np.random.default_rng(7).choice(300, 50, replace=False))
    by_hand = math.exp(log_success_rate(prior, task.targets[rows])) * 300 / 50
    assert task.subset_success_rate(prior, 50, seed=7) == pytest.approx(by_hand, rel=1e-12)
    config = EvalConfig(exact_subset=50)
    point = success_rate(task, prior, config, seed=0, curve_seed=7)
    assert not point.exact and point.approximation == "targets 50" and point.rate == pytest.approx(by_hand)
    reported = success_rate(task, prior, config, seed=0)  # no curve_seed: a reported rate, always in full
    assert reported.exact and reported.rate == full and reported.approximation == ""
